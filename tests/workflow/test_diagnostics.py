"""The PSIS k-hat (Yao et al. 2018) and the non-finite-site search."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.importance import psis_diagnostic

from guide_core import (
    AutoDelta,
    AutoGuideList,
    AutoNormal,
    AutoNormalMessenger,
    KHat,
    psis_khat,
)
from guide_core.workflow.draws.diagnostics import find_nonfinite, pareto_khat

D = 8


def _data() -> torch.Tensor:
    return torch.randn(5, D, generator=torch.Generator().manual_seed(1)) + 1.0


def conjugate(y):
    """Eight independent means, each with five unit-variance observations."""
    with pyro.plate("d", D):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", 5, dim=-2):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def exact_guide(y, factor=1.0):
    """The exact posterior of ``conjugate``, its scale multiplied by ``factor``."""
    loc, scale = y.sum(0) / 6.0, (1.0 / 6.0) ** 0.5
    with pyro.plate("d", D):
        pyro.sample("mu", dist.Normal(loc, scale * factor))


def test_khat_record_verdicts_and_text():
    assert KHat(0.42, 500).verdict == "good"
    assert KHat(0.5, 500).verdict == "ok"
    assert KHat(0.7, 500).verdict == "ok"
    assert KHat(0.71, 500).verdict == "bad"
    assert KHat(math.inf, 500).verdict == "bad"
    assert KHat(math.nan, 500).verdict == "bad"
    assert str(KHat(0.4213, 500)) == "k-hat 0.42 (good)"
    assert str(KHat(math.inf, 50, "why")) == "k-hat inf (bad: why)"
    with pytest.raises(AttributeError):
        KHat(0.1, 10).value = 2.0  # frozen


def test_exact_posterior_is_good():
    y = _data()
    k = psis_khat(conjugate, exact_guide, y, num_samples=500)
    assert k.value < 0.5 and k.verdict == "good", k
    assert k.num_samples == 500 and k.note == ""


def test_too_narrow_guide_is_bad():
    y = _data()
    k = psis_khat(conjugate, lambda y: exact_guide(y, 0.3), y, num_samples=500)
    assert k.value > 0.7 and k.verdict == "bad", k


def test_trained_guides_of_every_kind_are_good_on_a_conjugate_model():
    y = _data()
    for make in (AutoNormal, AutoNormalMessenger):
        pyro.clear_param_store()
        guide = make(conjugate)
        svi = pyro.infer.SVI(
            conjugate, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
        )
        for _ in range(120):
            svi.step(y)
        k = psis_khat(None, guide, y, num_samples=300)  # model=None: guide.model
        assert k.value < 0.7, (make.__name__, k)


def test_point_mass_guide_has_no_khat():
    y = _data()
    k = psis_khat(conjugate, AutoDelta(conjugate), y, num_samples=100)
    assert k.value == math.inf and k.verdict == "bad"
    assert "point mass at site 'mu'" in k.note and "AutoDelta" in k.note
    assert "point mass" in str(k)


def model_two(y):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.LogNormal(0.0, 1.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(a, b), obs=y)


def test_guide_list_with_a_point_mass_part_is_reported():
    y = torch.tensor([0.5, 1.0, 1.5])
    guide = AutoGuideList(model_two)
    guide.append(AutoNormal(poutine.block(model_two, expose=["a"])))
    guide.append(AutoDelta(poutine.block(model_two, expose=["b"])))
    k = psis_khat(None, guide, y, num_samples=100)
    assert "point mass at site 'b'" in k.note


def test_guide_list_of_densities_gives_an_estimate():
    y = torch.tensor([0.5, 1.0, 1.5])
    guide = AutoGuideList(model_two)
    guide.append(AutoNormal(poutine.block(model_two, expose=["a"])))
    guide.append(AutoNormal(poutine.block(model_two, expose=["b"])))
    k = psis_khat(None, guide, y, num_samples=100)
    assert math.isfinite(k.value) and k.note == ""


def unvectorizable(y):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    if a > 0:  # Python control flow on a latent: draws must be taken one by one
        pyro.sample("y", dist.Normal(a, 1.0), obs=y)
    else:
        pyro.sample("y", dist.Normal(-a, 1.0), obs=y)


def test_models_that_do_not_vectorize_are_drawn_one_by_one():
    y = torch.tensor(0.7)

    def guide(y):
        pyro.sample("a", dist.Normal(0.0, 1.0))  # the prior: weights = likelihood

    k = psis_khat(unvectorizable, guide, y, num_samples=60)
    assert math.isfinite(k.value) and k.value < 0.7, k


def test_pareto_khat_recovers_the_shape_of_pareto_weights():
    torch.manual_seed(0)
    for shape in (0.3, 0.8):
        u = torch.rand(4000, dtype=torch.float64)
        weights = (u.pow(-shape) - 1.0) / shape  # generalized Pareto draws
        k, note = pareto_khat(weights.log())
        assert abs(k - shape) < 0.15 and note == "", (shape, k)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pareto_khat_edge_cases():
    k, note = pareto_khat(torch.zeros(100))
    assert k == -math.inf and "equal" in note
    # an exact guide's weights are equal up to rounding: still no tail to fit
    noise = 1e-15 * torch.randn(100, dtype=torch.float64, generator=_gen(0))
    k, note = pareto_khat(noise)
    assert k == -math.inf and "equal" in note
    lw = torch.full((100,), -math.inf)
    lw[:3] = torch.tensor([0.0, -1.0, -2.0])
    k, note = pareto_khat(lw)
    assert k == math.inf and "3 of 100 draws have a non-zero weight" in note


def test_num_samples_is_checked():
    y = _data()
    with pytest.raises(ValueError, match=r"'num_samples' must be >= 50.*: 10"):
        psis_khat(conjugate, exact_guide, y, num_samples=10)
    with pytest.raises(TypeError, match="'num_samples' must be an int"):
        psis_khat(conjugate, exact_guide, y, num_samples=100.0)


def test_a_plain_guide_needs_the_model():
    with pytest.raises(TypeError, match="pass the model explicitly: model=my_model"):
        psis_khat(None, exact_guide, _data(), num_samples=100)


def nan_model(y):
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    scale = torch.tensor(float("nan"))
    pyro.sample("y", dist.Normal(a, scale, validate_args=False), obs=y)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_weights_name_the_site():
    def guide(y):
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"nan for 100 of 100 draws; site 'y' in the"):
        psis_khat(nan_model, guide, torch.tensor(1.0), num_samples=100)


def test_find_nonfinite_describes_the_first_bad_site():
    def guide(y):
        pyro.sample("a", dist.Normal(0.0, 1.0))

    found = find_nonfinite(nan_model, guide, (torch.tensor(1.0),), {})
    assert found is not None and "site 'y' in the model has a nan log_prob" in found
    assert find_nonfinite(conjugate, exact_guide, (_data(),), {}) is None

    def bad_guide(y):
        pyro.sample("a", dist.Delta(torch.tensor(float("inf"))))

    found = find_nonfinite(conjugate, bad_guide, (_data(),), {})
    assert "site 'a' in the guide has a non-finite value" in found


@pytest.mark.slow
def test_agrees_with_pyros_psis_diagnostic_on_average():
    y = _data()

    def narrow(y):
        exact_guide(y, 0.6)

    ours, pyros = [], []
    for seed in range(30):
        pyro.set_rng_seed(seed)
        ours.append(psis_khat(conjugate, narrow, y, num_samples=2000).value)
        pyro.set_rng_seed(seed)
        pyros.append(
            psis_diagnostic(
                conjugate, narrow, y, num_particles=2000, max_plate_nesting=2
            )
        )
    mean_ours, mean_pyro = sum(ours) / len(ours), sum(pyros) / len(pyros)
    assert abs(mean_ours - mean_pyro) < 0.05, (mean_ours, mean_pyro)
