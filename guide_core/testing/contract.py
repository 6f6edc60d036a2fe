"""The contract every registered guide is held to, as pytest test classes.

Subclass :class:`GuideContract` in a test file of your own and name your
guides; pytest then runs every check below on each of them, each one only
where the guide's :class:`~guide_core.Capabilities` claim it (otherwise the
check either holds the guide to a clear refusal, or skips with a reason that
names the guide and the capability it does not claim)::

    from guide_core.testing import GuideContract

    class TestMyFamily(GuideContract):
        guide_names = ["auto_mine"]

Instead of ``guide_names`` a ``guide_name`` fixture of your own (and a
``backend`` fixture, ``None`` by default) may supply the guides.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pytest
import torch
from pyro.infer import Predictive

from guide_core import registry

from .harness import (
    Subject,
    assert_clear_error,
    finite,
    latent_sites,
    observed_sites,
)
from .models import CASES, ModelCase
from .runtime import RuntimeContract

__all__ = ["GuideContract", "targets"]


def targets(names: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(name, backend)`` for each name: one pair per back end of a guide
    that has back ends, ``(name, None)`` otherwise."""
    out: list[tuple[str, str | None]] = []
    for name in names:
        backends = registry.info(name).backends
        out += [(name, b) for b in backends] if backends else [(name, None)]
    return out


def _missing(extras: Sequence[str]) -> list[str]:
    return [e for e in extras if importlib.util.find_spec(e) is None]


class GuideContract(RuntimeContract):
    """The checks every guide runs through; subclass it and name your guides.

    Override :meth:`guide_kwargs` to pass constructor arguments a guide needs
    (an encoder, a flow), :meth:`model_case` to pick the model a guide's
    generic checks run on, and :meth:`steps_for` to change the fit per guide.

    Attributes
    ----------
    guide_names : sequence of str
        Registry names to run the contract on; a guide with back ends runs
        once per back end. Empty: supply a ``guide_name`` fixture instead.
    known_failures : mapping
        Maps ``(check, guide id)`` to a reason; each such test is marked
        ``xfail(strict=True)`` with the reason, so a fix shows as an XPASS.
        The check is the test's name, with or without its ``test_`` prefix;
        the guide id is the registry name, with the back end in brackets for
        a guide with back ends (``auto_gaussian[dense]``).
    fit_steps : int
        SVI steps of the fits that must reach the known posterior.
    """

    guide_names: Sequence[str] = ()
    known_failures: Mapping[tuple[str, str], str] = {}
    fit_steps: int = 100

    # -- hooks a subclass may override ----------------------------------------

    def guide_kwargs(self, guide_name: str, case: ModelCase) -> Mapping[str, Any]:
        """Constructor arguments for ``guide_name`` on ``case`` (default none)."""
        return {}

    def model_case(self, guide_name: str, backend: str | None = None) -> str:
        """The model case the generic checks (median, quantiles, draws,
        save/load, dtypes, engines) run on for ``guide_name`` (with
        ``backend``): ``"constrained"`` (a vector site and a positive site)
        for a continuous guide, ``"discrete_only"`` otherwise."""
        spec = registry.info(guide_name)
        return "constrained" if spec.capabilities.continuous else "discrete_only"

    def steps_for(self, guide_name: str) -> int:
        """SVI steps of the posterior fit for ``guide_name``."""
        return self.fit_steps

    # -- parametrization and fixtures -------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize ``guide_name`` and ``backend`` over :attr:`guide_names`."""
        if self.guide_names and "guide_name" in metafunc.fixturenames:
            check = metafunc.function.__name__
            params = []
            for name, backend in targets(self.guide_names):
                label = name + (f"[{backend}]" if backend else "")
                known = self.known_failures
                reason = known.get((check, label)) or known.get((check[5:], label))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] * bool(reason)
                params.append(pytest.param(name, backend, id=label, marks=marks))
            metafunc.parametrize(("guide_name", "backend"), params)

    @pytest.fixture(autouse=True)
    def _fresh_pyro_state(self):
        """Each check starts from an empty param store and a fixed seed, with
        validation on, and leaves the store empty."""
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        pyro.enable_validation(True)
        yield
        pyro.clear_param_store()

    @pytest.fixture
    def backend(self) -> str | None:
        """The back end under test (``None``: the guide's default)."""
        return None

    @pytest.fixture
    def subject(self, guide_name: str, backend: str | None) -> Subject:
        """The guide under test; skips when its extra packages are missing."""
        spec = registry.info(guide_name)
        extras = list(spec.extras)
        if backend is not None:
            extras += list(registry.backend(backend).extras)
        missing = _missing(extras)
        if missing:
            pytest.skip(f"{guide_name}: extra package(s) {missing} not installed")
        return Subject(guide_name, backend, spec, self.guide_kwargs)

    @pytest.fixture
    def case(self, guide_name: str, backend: str | None) -> ModelCase:
        """The model case of the generic checks (see :meth:`model_case`)."""
        return CASES[self.model_case(guide_name, backend)]

    # -- building and fitting ----------------------------------------------------

    def test_builds_and_draws_every_latent_site(self, subject, case):
        """``registry.make`` builds the guide, and one call of it draws every
        latent site of the model with the site's shape, inside its support."""
        args = case.args()
        sites = latent_sites(case, args)
        guide = subject.make(case)
        draw = guide(*args)
        if draw is not None:  # messengers return their draws too
            missing = set(sites) - set(draw)
            assert not missing, f"{subject.label}: no draw for {sorted(missing)}"
            for name, site in sites.items():
                assert draw[name].shape == site["value"].shape, name
                assert site["fn"].support.check(draw[name]).all(), name

    def test_continuous_fit_reaches_the_conjugate_posterior(self, subject):
        """Claims ``continuous``: fitted to ``z_i ~ N(0, 1), y_i ~ N(z_i, 1)``
        (by SVI, or by its own procedure), its median of ``z`` is within 0.3
        posterior sd of the posterior mean ``y / 2`` (also the mode, so MAP and
        Laplace guides are held to it too; a guide without ``median``: the
        mean of 400 draws) and every loss is finite. Not
        claimed: the guide refuses the model with a clear error naming ``z``."""
        case = CASES["conjugate"]
        args = case.args()
        if not subject.claims("continuous"):
            with pytest.raises(Exception) as excinfo:
                subject.fit(subject.make(case), case, args, 1)
            assert_clear_error(excinfo, "z", who=subject.label)
            return
        guide = subject.make(case)
        losses = subject.fit(guide, case, args, self.steps_for(subject.name))
        assert finite(losses), f"{subject.label}: losses {losses[-5:]}"
        mean, sd = case.posterior(args[0])["z"]
        with torch.no_grad():
            if subject.claims("median"):
                got = guide.median(*args)["z"]
            else:  # the mean of draws: the posterior is normal
                got = torch.stack([guide(*args)["z"] for _ in range(400)]).mean(0)
        err = ((got - mean) / sd).abs().max().item()
        assert err < 0.3, f"{subject.label}: median {got} vs posterior mean {mean}"

    # -- summaries -------------------------------------------------------------

    def test_median_has_every_site_inside_its_support(self, subject, case):
        """Claims ``median``: ``guide.median(*args)`` holds every latent site
        with the site's shape and inside its support (any other key must be
        an observed site: messengers return those too, as Pyro's do). Not
        claimed: ``median`` raises NotImplementedError naming the guide."""
        args = case.args()
        guide = subject.make(case)
        guide(*args)
        if not subject.claims("median"):
            with pytest.raises(Exception) as excinfo:
                guide.median(*args)
            assert_clear_error(excinfo, subject.spec.class_name, who=subject.label)
            return
        with torch.no_grad():
            median = guide.median(*args)
        self._assert_site_values(subject, case, args, median, ())

    def test_quantiles_are_ordered_with_the_site_shapes(self, subject, case):
        """Claims ``quantiles``: ``guide.quantiles([0.1, 0.5, 0.9])`` gives, for
        every latent site, a ``(3, *site shape)`` tensor inside the support
        whose rows do not decrease. Not claimed: it raises NotImplementedError
        naming the guide."""
        args = case.args()
        guide = subject.make(case)
        guide(*args)
        if not subject.claims("quantiles"):
            with pytest.raises(Exception) as excinfo:
                guide.quantiles([0.1, 0.5, 0.9], *args)
            assert_clear_error(excinfo, subject.spec.class_name, who=subject.label)
            return
        with torch.no_grad():
            q = guide.quantiles([0.1, 0.5, 0.9], *args)
        self._assert_site_values(subject, case, args, q, (3,))
        for name in latent_sites(case, args):
            assert (q[name][1:] >= q[name][:-1]).all(), f"{name}: {q[name]}"

    def test_predictive_draws_every_latent_site(self, subject, case):
        """``pyro.infer.Predictive(model, guide=guide, num_samples=7)`` gives
        ``(7, *site shape)`` draws of every latent site, inside its support."""
        args = case.args()
        sites = latent_sites(case, args)
        guide = subject.make(case)
        guide(*args)
        predictive = Predictive(
            case.model, guide=guide, num_samples=7, return_sites=list(sites)
        )
        draws = predictive(*args)
        self._assert_site_values(subject, case, args, draws, (7,), padded=True)

    def _assert_site_values(self, subject, case, args, values, lead, padded=False):
        sites = latent_sites(case, args)
        missing = set(sites) - set(values)
        assert not missing, f"{subject.label}: no value for {sorted(missing)}"
        observed = observed_sites(case, args)
        extra = set(values) - set(sites) - observed
        assert not extra, f"{subject.label}: values for non-sites {sorted(extra)}"
        for name, site in sites.items():
            want = (*lead, *site["value"].shape)
            got = values[name]
            assert _same_shape(got, want, lead, padded), (
                f"{name}: {tuple(got.shape)} != {want}"
            )
            assert site["fn"].support.check(got).all(), f"{name} outside support"
            if got.is_floating_point():
                assert torch.isfinite(got).all(), f"{name}: {got}"


def _strip(shape: tuple[int, ...]) -> tuple[int, ...]:
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _same_shape(got: torch.Tensor, want: tuple[int, ...], lead: tuple, padded: bool):
    """Whether ``got`` has shape ``want``; with ``padded``, also when it has
    extra size-1 dims after the leading ``lead`` (Predictive pads a global
    site's batch shape to the model's plate nesting)."""
    if tuple(got.shape) == want or not padded:
        return tuple(got.shape) == want
    n = len(lead)
    return tuple(got.shape[:n]) == want[:n] and _strip(got.shape[n:]) == _strip(
        want[n:]
    )
