"""The ``"auto"`` guide: a guide per site without ``poutine.block``.

:class:`ComposedGuide` is an :class:`~guide_core.AutoGuideList` that, at its
first call (when the model's arguments are known), traces the model and gives
each latent site a guide -- discrete sites to the ``discrete`` guide, the others
to the ``default`` one, either overridden per site by ``assignments`` -- then
builds one part per guide on the model blocked to that guide's sites::

    guide = guide_core.compose(model, {"assignment": "auto_discrete_parallel"},
                               default="auto_normal")
    # the same as: registry.make("auto", model, assignments={...})

This module is a plugin like every family: its ``register_guides`` hook
registers ``auto`` through its own entry point, and it uses only the plugin
API (:mod:`guide_core.plugin`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from guide_core.plugin import (
    AutoGuideList,
    Capabilities,
    GuideSpec,
    SiteFacts,
    UnexpectedKeywordError,
    UnknownGuideError,
    accepts,
    current_registry,
    hookimpl,
    trained_values,
    warm_init,
)

if TYPE_CHECKING:
    from guide_core.registry import Registry

__all__ = ["ComposedGuide", "CompositionError", "register_guides"]


class CompositionError(ValueError):
    """A site cannot go to the guide it was assigned (or does not exist)."""


# -- the plan: which guide gets which site --------------------------------------


def _guides_that(registry: Registry, capability: str) -> str:
    names = [
        s.name
        for s in registry
        if getattr(s.capabilities, capability) and s.factory is not ComposedGuide
    ]
    return ", ".join(names) or "(none installed)"


def plan_parts(
    sites: Mapping[str, SiteFacts],
    assignments: Mapping[str, str | None],
    default: str | None,
    discrete: str | None,
    registry: Registry,
) -> dict[str, list[str]]:
    """Return ``{guide name: [site names]}``, the parts in order of first site.

    Raises
    ------
    CompositionError
        An assignment names a site the model does not sample, or a site goes to
        a guide that cannot handle it (discrete vs continuous).
    """
    unknown = [name for name in assignments if name not in sites]
    if unknown:
        raise CompositionError(
            f"compose: the assignments name {', '.join(map(repr, unknown))}, which "
            "the model does not sample as a latent site; its latent sites are: "
            f"{', '.join(sites) or '(none)'}"
        )
    groups: dict[str, list[str]] = {}
    for name, site in sites.items():
        if name in assignments:
            guide, why = assignments[name], f"assignments[{name!r}]"
        elif site.is_discrete:
            guide, why = discrete, "discrete="
        else:
            guide, why = default, "default="
        if guide is None:
            continue  # left to the model (e.g. enumerated out by TraceEnum_ELBO)
        try:
            spec = registry.info(guide)
        except UnknownGuideError as exc:
            raise UnknownGuideError(
                f"site {name!r} goes to {guide!r} (from {why}): {exc}"
            ) from None
        caps = spec.capabilities
        if site.is_discrete and not caps.discrete:
            raise CompositionError(
                f"site {name!r} is discrete (support {site.support}), but {guide!r} "
                f"(from {why}) guides only continuous sites; give it a discrete "
                f"guide ({_guides_that(registry, 'discrete')}) or None to leave it "
                "to the model's enumeration"
            )
        if not site.is_discrete and not caps.continuous:
            raise CompositionError(
                f"site {name!r} is continuous (support {site.support}), but "
                f"{guide!r} (from {why}) guides only discrete sites; give it a "
                f"continuous guide ({_guides_that(registry, 'continuous')})"
            )
        groups.setdefault(guide, []).append(name)
    return groups


class ComposedGuide(AutoGuideList):
    """An :class:`~guide_core.AutoGuideList` that picks a guide for every site.

    At the first call it traces the model and appends one part per chosen
    guide, built with ``registry.make(name, poutine.block(model, expose=sites))``.
    Build it with :func:`guide_core.compose` or ``registry.make("auto", model)``.

    Parameters
    ----------
    model : callable
        A Pyro model.
    assignments : dict of str to str or None, optional
        ``{site name: guide name}`` overriding the choice for those sites;
        ``None`` leaves a site unguided (e.g. enumerated in the model).
    default : str or None
        The guide of the continuous sites.
    discrete : str or None
        The guide of the discrete sites.
    init_from : guide or dict, optional
        A trained guide (or ``{site: value}``) to start from (a warm start):
        parts that take ``init_loc_fn`` start at its median, falling back to
        their given or default strategy for the sites it lacks.
    init_values : dict of str to Tensor, optional
        The same as a ``{site: value}`` ``init_from``; what a saved guide keeps.
    create_plates : callable, optional
        As for :class:`~guide_core.AutoGuideList`; shared by all parts.
    **kwargs :
        Constructor arguments of the parts; each part gets those it takes.
    """

    _guide_core_name = "auto"

    def __init__(
        self,
        model: Callable,
        assignments: Mapping[str, str | None] | None = None,
        *,
        default: str | None = "auto_normal",
        discrete: str | None = "auto_discrete_parallel",
        init_from: Any = None,
        init_values: Mapping[str, torch.Tensor] | None = None,
        create_plates: Callable | None = None,
        **kwargs: Any,
    ):
        super().__init__(model, create_plates=create_plates)
        if assignments is not None and not isinstance(assignments, Mapping):
            raise TypeError(
                "'assignments' must be a dict {site name: guide name}, e.g. "
                f"{{'assignment': 'auto_discrete_parallel'}}: {assignments!r}"
            )
        self.assignments = dict(assignments or {})
        self.default, self.discrete = default, discrete
        if init_from is not None:
            init_values = trained_values(init_from)
            self._keep_values_not_guide(init_values)
        self.init_values = None if init_values is None else dict(init_values)
        self.part_kwargs = dict(kwargs)
        self._registry: Registry = current_registry()  # where the parts come from
        self._deferred_state: tuple[dict, bool] | None = None
        self.validate()

    def _keep_values_not_guide(self, values: dict[str, torch.Tensor]) -> None:
        """Record ``init_values=values`` instead of the trained guide given as
        ``init_from``, so that ``save`` stores the values (see ``AutoGuide``)."""
        call = self.__dict__.get("_init_call")
        if call is not None and "init_from" in call[1]:
            named = {k: v for k, v in call[1].items() if k != "init_from"}
            self.__dict__["_init_call"] = (call[0], {**named, "init_values": values})

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_registry"] = None  # the current registry after unpickling
        return state

    def validate(self) -> None:
        """Check the guide names and keywords now, before the first call.

        Raises
        ------
        UnknownGuideError
            ``default`` or an assigned guide is not installed.
        UnexpectedKeywordError
            A keyword that none of the guides takes.
        """
        registry = self._registry or current_registry()
        names = [self.default, *self.assignments.values()]
        specs = [registry.info(n) for n in names if n is not None]
        if self.discrete is not None and self.discrete in registry:
            specs.append(registry.info(self.discrete))
        for key in self.part_kwargs:
            if not any(accepts(spec, key) for spec in specs):
                taken = ", ".join(s.name for s in specs)
                raise UnexpectedKeywordError(
                    f"compose: no guide of this composition ({taken}) takes keyword "
                    f"{key!r}"
                )

    def _make_part(self, name: str, sites: list[str]) -> Any:
        registry = self._registry or current_registry()
        spec = registry.info(name)
        kwargs = {k: v for k, v in self.part_kwargs.items() if accepts(spec, k)}
        if self.init_values is not None and accepts(spec, "init_loc_fn"):
            kwargs["init_loc_fn"] = warm_init(
                registry, spec, self.init_values, kwargs.get("init_loc_fn")
            )
        # The part sees its sites and the plates' subsample draws, as a guide of
        # the whole model does (it follows the same subsample).
        shown = set(sites)
        blocked = poutine.block(
            self.model,
            expose_fn=lambda msg: msg["name"] in shown or site_is_subsample(msg),
        )
        return registry.make(name, blocked, **kwargs)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        if len(self) == 0:  # a loaded guide has its parts already
            registry = self._registry or current_registry()
            plan = plan_parts(
                self._prototype.sites,
                self.assignments,
                self.default,
                self.discrete,
                registry,
            )
            for name, sites in plan.items():
                self.append(self._make_part(name, sites))
        if self._deferred_state is not None:
            state, strict = self._deferred_state
            self._deferred_state = None
            AutoGuideList.load_state_dict(self, state, strict=strict)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load the parts' state; before the parts exist it waits for them."""
        if len(self) == 0 and len(state_dict) > 0:
            self._deferred_state = (dict(state_dict), strict)
            return torch.nn.modules.module._IncompatibleKeys([], [])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return the parts' state, or the state waiting for the parts."""
        if len(self) == 0 and self._deferred_state is not None and not (args or kwargs):
            return dict(self._deferred_state[0])
        return super().state_dict(*args, **kwargs)


@hookimpl
def register_guides(register: Callable[[GuideSpec], None]) -> None:
    """Register ``auto``: a :class:`ComposedGuide`."""
    register(
        GuideSpec(
            name="auto",
            factory=ComposedGuide,
            family="compose",
            summary=(
                "A guide per site: discrete sites to auto_discrete_parallel, the "
                "others to auto_normal, either overridden per site."
            ),
            capabilities=Capabilities(discrete=True, subsample=True),
        )
    )
