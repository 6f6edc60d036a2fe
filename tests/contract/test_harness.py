"""The contract catches broken guides: its checks, run on toy guides that
break one promise each, fail with a message naming what broke; and importing
guide_core does not import the contract (nor pytest)."""

from __future__ import annotations

import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch

from guide_core import AutoGuide, Capabilities, GuideSpec, hookimpl, registry
from guide_core.testing import CASES, GuideContract, Subject


class AutoPointToy(AutoGuide):
    """A point mass at each site's initial value; ``broken`` picks the flaw
    of its median."""

    def __init__(self, model, *, broken=""):
        super().__init__(model)
        self.broken = broken

    def forward(self, *args, **kwargs):
        self._ensure_setup(*args, **kwargs)
        out = {}
        for name, site in self._sites().items():
            value = site.value
            # the whole value as one event: no plates needed
            out[name] = pyro.sample(name, dist.Delta(value, event_dim=value.dim()))
        return out

    def _median(self, *args, **kwargs):
        sites = self._sites()
        if self.broken == "drops_a_site":
            return {n: s.value for n, s in list(sites.items())[1:]}
        if self.broken == "wrong_shape":
            return {n: s.value.unsqueeze(0) for n, s in sites.items()}
        return {n: s.value for n, s in sites.items()}


class AutoSilentToy:
    """A parameter-free guide that puts every row's ``z`` at 0 (and ``loc``
    at 0 where the model has one), whatever the model: it neither fits nor
    refuses a discrete site."""

    def __init__(self, model):
        self.model = model

    def _draw(self, y):
        out = {}
        if self.model.__name__ in ("constrained", "discrete"):
            out["loc"] = pyro.sample("loc", dist.Delta(torch.tensor(0.0)))
        with pyro.plate("data", len(y)):
            out["z"] = pyro.sample("z", dist.Delta(torch.zeros_like(y)))
        return out

    __call__ = _draw

    def median(self, y):
        return {"z": torch.zeros_like(y)}


def _kwargs(broken):
    return lambda name, case: {"broken": broken}


@pytest.fixture(scope="module")
def toy():
    class Plugin:
        @hookimpl
        def register_guides(self, register):
            register(
                GuideSpec(
                    name="auto_point_toy",
                    factory=AutoPointToy,
                    family="toy",
                    summary="A point mass, with one flaw.",
                    capabilities=Capabilities(quantiles=False),
                )
            )

            register(
                GuideSpec(
                    name="auto_silent_toy",
                    factory=AutoSilentToy,
                    family="toy",
                    summary="Zero everywhere, refusing nothing.",
                )
            )

    name = registry.register(Plugin(), name="contract_toy")
    yield registry.info("auto_point_toy")
    registry.unregister(name)


@pytest.mark.parametrize(
    ("broken", "message"),
    [("drops_a_site", r"no value for \['loc'\]"), ("wrong_shape", r"loc: \(1, 2\)")],
)
def test_a_median_that_breaks_its_promise_fails(toy, broken, message):
    subject = Subject("auto_point_toy", None, toy, _kwargs(broken))
    with pytest.raises(AssertionError, match=message):
        GuideContract().test_median_has_every_site_inside_its_support(
            subject, CASES["constrained"]
        )


def _silent(toy):
    return Subject("auto_silent_toy", None, registry.info("auto_silent_toy"))


def test_a_discrete_site_taken_silently_without_the_claim_fails(toy):
    """The toy does not claim discrete, yet takes a Bernoulli site: the check
    wants a refusal naming the site."""
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        GuideContract().test_discrete_trains_under_trace_enum(_silent(toy))


def test_a_guide_that_does_not_fit_fails_the_posterior_check(toy):
    subject = _silent(toy)
    with pytest.raises(AssertionError, match="vs posterior mean"):
        GuideContract().test_continuous_fit_reaches_the_conjugate_posterior(subject)


def test_an_unclaimed_capability_skips_naming_the_guide(toy):
    subject = Subject("auto_point_toy", None, toy, _kwargs(""))
    with pytest.raises(pytest.skip.Exception, match="auto_point_toy does not claim"):
        GuideContract().test_jit_trace_elbo_gives_the_trace_elbo_loss(
            subject, CASES["constrained"]
        )


def test_import_guide_core_imports_neither_the_contract_nor_pytest():
    code = (
        "import sys, guide_core; guide_core.registry.names(); "
        "print(sorted(m for m in sys.modules "
        "if m == 'pytest' or m.startswith('guide_core.testing')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_capability_is_checked_by_the_contract():
    """Each field of ``Capabilities`` is read by at least one contract check
    (``subject.claims(...)`` or ``subject.require(...)``), so a guide cannot
    claim a capability that nothing checks."""
    import re
    from pathlib import Path

    import attrs

    import guide_core.testing as testing

    source = "".join(
        path.read_text() for path in Path(testing.__file__).parent.glob("*.py")
    )
    checked = set(re.findall(r"\.(?:claims|require)\(\"([a-z_]+)\"\)", source))
    fields = {f.name for f in attrs.fields(Capabilities)}
    assert fields <= checked, f"unchecked capabilities: {sorted(fields - checked)}"
