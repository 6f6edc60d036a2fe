"""Differential tests of guide_core.core.initialization, with Pyro's module as oracle.

Every comparison seeds the RNG identically before running Pyro's strategy and
ours, then requires bit-identical values, the same ``_pyro_custom_init`` marker
and the same next random draw (so both made the same number of draws).
"""

from __future__ import annotations

import functools
import inspect

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import CholeskyTransform
from pyro.infer.autoguide import initialization as oracle
from pyro.infer.reparam import LocScaleReparam
from pyro.poutine.reparam_messenger import _get_init_messengers
from torch.distributions import biject_to

from guide_core.core import initialization as ours

pytestmark = pytest.mark.filterwarnings("ignore:Singular sample detected")

SEED = 20240613


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    pyro.enable_validation(True)
    yield
    pyro.enable_validation(True)
    pyro.clear_param_store()


def _wishart(df=10.0):
    return dist.Wishart(torch.tensor(df), torch.eye(3))


# Prior distributions, built lazily so they use the test's default dtype/device.
SITES = {
    "normal": lambda: dist.Normal(0.0, 1.0),
    "normal_vector_to_event": lambda: dist.Normal(torch.zeros(3), 1.0).to_event(1),
    "lognormal_positive": lambda: dist.LogNormal(0.0, 1.0),
    "gamma_batched": lambda: dist.Gamma(torch.full((2, 3), 2.0), 1.0),
    "beta_interval": lambda: dist.Beta(2.0, 3.0),
    "uniform_interval": lambda: dist.Uniform(-1.0, 2.0),
    "dirichlet_simplex": lambda: dist.Dirichlet(torch.ones(4)),
    "dirichlet_batched_to_event": lambda: dist.Dirichlet(torch.ones(2, 4)).to_event(1),
    "lkj_corr_cholesky": lambda: dist.LKJCholesky(3, 1.0),
    "wishart_positive_definite": _wishart,
    "lower_cholesky": lambda: dist.TransformedDistribution(
        _wishart(), [CholeskyTransform()]
    ),
    "mvn_real_vector": lambda: dist.MultivariateNormal(torch.zeros(2), torch.eye(2)),
    "projected_normal_sphere": lambda: dist.ProjectedNormal(torch.ones(3)),
    "cauchy_mean_undefined": lambda: dist.Cauchy(0.0, 1.0),
    "student_t_df1": lambda: dist.StudentT(1.0, 0.0, 1.0),
    "bernoulli_discrete": lambda: dist.Bernoulli(0.3),
    "categorical_discrete": lambda: dist.Categorical(torch.ones(3) / 3),
    "poisson_discrete": lambda: dist.Poisson(3.5),
    "masked_normal": lambda: dist.Normal(torch.zeros(3), 1.0).mask(
        torch.tensor([True, False, True])
    ),
    "masked_normal_to_event": lambda: (
        dist.Normal(torch.zeros(3), 1.0).to_event(1).mask(False)
    ),
    "masked_dirichlet": lambda: dist.Dirichlet(torch.ones(3)).mask(False),
    "plated_normal": lambda: dist.Normal(0.0, 1.0).expand([4, 2]),
    "plated_lognormal_to_event": lambda: (
        dist.LogNormal(0.0, 1.0).expand([4, 2]).to_event(1)
    ),
    "plated_dirichlet": lambda: dist.Dirichlet(torch.ones(3)).expand([5]),
}

# Strategies by name, built from either module so options match exactly.
STRATEGIES = {
    "feasible": lambda m: m.init_to_feasible,
    "sample": lambda m: m.init_to_sample,
    "median": lambda m: m.init_to_median,
    "median_7_samples": lambda m: m.init_to_median(num_samples=7),
    "median_fallback_uniform": lambda m: m.init_to_median(fallback=m.init_to_uniform),
    "mean": lambda m: m.init_to_mean,
    "mean_fallback_sample": lambda m: m.init_to_mean(fallback=m.init_to_sample),
    "uniform": lambda m: m.init_to_uniform,
    "uniform_radius_half": lambda m: m.init_to_uniform(radius=0.5),
    "value_missing_site": lambda m: m.init_to_value(values={"other": torch.ones(())}),
    "generated_sample": lambda m: m.init_to_generated(
        generate=lambda: m.init_to_sample
    ),
}


def _site(fn, name="x"):
    return {"name": name, "fn": fn, "value": None, "is_observed": False}


def _outcome(strategy, site):
    """Run one strategy from the fixed seed; report value, marker and next draw."""
    pyro.set_rng_seed(SEED)
    try:
        value = strategy(site)
    except Exception as exc:  # the oracle's exception type is what we compare
        return ("raised", type(exc))
    return value, getattr(value, "_pyro_custom_init", None), torch.rand(())


def _assert_same_outcome(expected, actual):
    if expected[0] == "raised" or actual[0] == "raised":
        assert expected == actual
        return
    assert expected[0].dtype == actual[0].dtype
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0, equal_nan=True)
    assert actual[1] == expected[1]
    assert torch.equal(actual[2], expected[2]), "different number of random draws"


@pytest.mark.parametrize("site_name", list(SITES))
@pytest.mark.parametrize("strategy_name", list(STRATEGIES))
def test_strategy_values_and_draws_are_identical_to_pyro(strategy_name, site_name):
    make_fn, make_strategy = SITES[site_name], STRATEGIES[strategy_name]
    expected = _outcome(make_strategy(oracle), _site(make_fn()))
    actual = _outcome(make_strategy(ours), _site(make_fn()))
    _assert_same_outcome(expected, actual)


@pytest.mark.parametrize(
    "site_name",
    [
        "dirichlet_simplex",
        "dirichlet_batched_to_event",
        "masked_dirichlet",
        "plated_dirichlet",
        "lkj_corr_cholesky",
        "mvn_real_vector",
        "lower_cholesky",
    ],
)
def test_init_to_median_falls_back_to_feasible_for_multivariate_sites(site_name):
    site = _site(SITES[site_name]())
    median = _outcome(ours.init_to_median(fallback=None), site)
    feasible = _outcome(ours.init_to_feasible, site)
    _assert_same_outcome(feasible, median)


@pytest.mark.parametrize("masked", [False, True])
def test_init_to_median_treats_to_event_of_scalar_prior_as_univariate(masked):
    site = _site(dist.Normal(torch.full((3,), 5.0), 1.0).to_event(1))
    if masked:
        site["fn"] = site["fn"].mask(torch.tensor(True))
    value = ours.init_to_median(site)
    assert not torch.equal(value, ours.init_to_feasible(site))
    assert (value - 5.0).abs().max() < 2.0


def test_init_to_median_falls_back_when_median_is_nan():
    site = _site(dist.Normal(torch.tensor(float("nan")), 1.0, validate_args=False))
    _assert_same_outcome(
        _outcome(oracle.init_to_median, site), _outcome(ours.init_to_median, site)
    )
    assert torch.equal(ours.init_to_median(site), torch.tensor(0.0))


def test_init_to_median_falls_back_when_sampling_is_not_implemented():
    site = _site(dist.ImproperUniform(constraints.positive, (), ()))
    fallback = {"x": torch.tensor(3.0)}
    value = ours.init_to_median(site, fallback=ours.init_to_value(values=fallback))
    assert value is fallback["x"]


@pytest.mark.parametrize("strategy", ["median", "mean"])
def test_fallback_none_error_names_the_site(strategy):
    site = _site(dist.Normal(torch.tensor(float("nan")), 1.0, validate_args=False))
    site["name"] = "theta"
    with pytest.raises(ValueError):
        getattr(oracle, f"init_to_{strategy}")(site, fallback=None)
    with pytest.raises(ValueError, match=f"init_to_{strategy}: .*site 'theta'") as e:
        getattr(ours, f"init_to_{strategy}")(site, fallback=None)
    assert "fallback=None" in str(e.value)


@pytest.mark.parametrize(
    "site_name",
    [
        "cauchy_mean_undefined",  # NaN mean
        "student_t_df1",  # NaN mean
        "lkj_corr_cholesky",  # .mean raises NotImplementedError
        "bernoulli_discrete",  # mean 0.3 lies outside {0, 1}
        "poisson_discrete",  # mean 3.5 is not an integer
    ],
)
def test_init_to_mean_falls_back_to_median_when_mean_is_unusable(site_name):
    site = _site(SITES[site_name]())
    _assert_same_outcome(
        _outcome(ours.init_to_median, site), _outcome(ours.init_to_mean, site)
    )


@pytest.mark.parametrize(
    "prior, kind",
    [
        (lambda: dist.HalfCauchy(1.0), "infinite"),
        (lambda: dist.Pareto(1.0, 0.5).expand([3]), "infinite"),
        (lambda: dist.Cauchy(0.0, 1.0), "undefined"),
        (lambda: dist.StudentT(0.5, 0.0, 1.0), "undefined"),
    ],
)
def test_init_to_mean_falls_back_to_median_with_a_warning_when_mean_is_not_finite(
    prior, kind
):
    """Pyro starts HalfCauchy at its infinite mean (and trains to NaN); here a
    non-finite mean falls back to the median and a warning names the site."""
    site = _site(prior(), name="tau")
    pyro.set_rng_seed(SEED)
    with pytest.warns(UserWarning, match=f"site 'tau' is {kind}.*init_to_median"):
        value = ours.init_to_mean(site)
    pyro.set_rng_seed(SEED)
    assert torch.isfinite(value).all()
    assert torch.equal(value, ours.init_to_median(site))


def test_init_to_value_uses_given_tensor_unmarked_and_reads_mapping_at_call_time():
    values = {}
    ours_fn = ours.init_to_value(values=values, fallback=None)
    given = torch.tensor(1.5)
    values["x"] = given
    value = ours_fn(_site(dist.Normal(0.0, 1.0)))
    assert value is given
    assert not hasattr(value, "_pyro_custom_init")


def test_init_to_value_falls_back_to_uniform_for_missing_names():
    site = _site(dist.LogNormal(0.0, 1.0))
    _assert_same_outcome(
        _outcome(ours.init_to_uniform, site), _outcome(ours.init_to_value, site)
    )


def test_init_to_value_fallback_none_error_names_site_and_fix():
    with pytest.raises(ValueError):
        oracle.init_to_value(_site(dist.Normal(0.0, 1.0), "z"), fallback=None)
    with pytest.raises(ValueError) as e:
        ours.init_to_value(_site(dist.Normal(0.0, 1.0), "z"), fallback=None)
    assert str(e.value) == (
        "init_to_value: no value for site 'z' and fallback=None; "
        "pass values={'z': ...} or a fallback strategy"
    )


def test_strategy_without_site_returns_strategy_with_pyro_options():
    assert ours.init_to_feasible() is ours.init_to_feasible
    assert ours.init_to_sample() is ours.init_to_sample
    for name in ["median", "mean", "uniform", "value"]:
        ours_partial = getattr(ours, f"init_to_{name}")()
        pyro_partial = getattr(oracle, f"init_to_{name}")()
        assert isinstance(ours_partial, functools.partial)
        assert ours_partial.func is getattr(ours, f"init_to_{name}")

        def plain(keywords):
            return {
                k: getattr(v, "__name__", v) if callable(v) else v
                for k, v in keywords.items()
            }

        assert plain(ours_partial.keywords) == plain(pyro_partial.keywords)
    assert callable(ours.init_to_generated())


def test_init_to_value_default_mapping_is_not_shared_between_calls():
    first, second = ours.init_to_value(), ours.init_to_value()
    first.keywords["values"]["x"] = torch.zeros(())
    assert "x" not in second.keywords["values"]


def _nested_model():
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("corr", dist.LKJCholesky(3, 2.0))
    pyro.sample("heavy", dist.Cauchy(0.0, 1.0))
    with pyro.plate("outer", 4, dim=-2):
        pyro.sample("w", dist.Dirichlet(torch.ones(3)))
        with pyro.plate("inner", 5, dim=-1):
            pyro.sample("z", dist.Normal(0.0, scale))
            pyro.sample("p", dist.Beta(2.0, 2.0))
            pyro.sample("v", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", 10, subsample_size=3):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(x, 1.0), obs=torch.zeros(3))


def _discrete_model():
    pyro.sample("b", dist.Bernoulli(0.3))
    with pyro.plate("items", 3):
        pyro.sample("c", dist.Categorical(torch.ones(4) / 4))


def _trace_values(module, strategy, model, runs=1):
    pyro.set_rng_seed(SEED)
    messenger = module.InitMessenger(strategy)
    out = []
    for _ in range(runs):
        trace = poutine.trace(messenger(model)).get_trace()
        out.append(
            {
                name: site["value"]
                for name, site in trace.nodes.items()
                if site["type"] == "sample"
            }
        )
    out.append(torch.rand(()))
    return out


def _assert_same_traces(expected, actual):
    assert len(expected) == len(actual)
    for want, got in zip(expected[:-1], actual[:-1]):
        assert list(want) == list(got)
        for name in want:
            assert torch.equal(want[name], got[name]), name
    assert torch.equal(expected[-1], actual[-1])


@pytest.mark.parametrize("strategy_name", list(STRATEGIES))
def test_init_messenger_matches_pyro_on_nested_plate_model(strategy_name):
    make_strategy = STRATEGIES[strategy_name]
    expected = _trace_values(oracle, make_strategy(oracle), _nested_model, runs=2)
    actual = _trace_values(ours, make_strategy(ours), _nested_model, runs=2)
    _assert_same_traces(expected, actual)


@pytest.mark.parametrize("strategy_name", ["sample", "median", "mean"])
def test_init_messenger_matches_pyro_on_discrete_sites(strategy_name):
    make_strategy = STRATEGIES[strategy_name]
    expected = _trace_values(oracle, make_strategy(oracle), _discrete_model)
    actual = _trace_values(ours, make_strategy(ours), _discrete_model)
    _assert_same_traces(expected, actual)


def test_init_to_generated_regenerates_once_per_model_execution_like_pyro():
    calls = {"oracle": 0, "ours": 0}

    def generator(module, key):
        def generate():
            calls[key] += 1
            values = {"scale": torch.rand(()) + 0.5, "z": torch.randn(4, 5)}
            return module.init_to_value(values=values)

        return generate

    expected = _trace_values(
        oracle, oracle.init_to_generated(generate=generator(oracle, "oracle")),
        _nested_model, runs=3,
    )  # fmt: skip
    actual = _trace_values(
        ours, ours.init_to_generated(generate=generator(ours, "ours")),
        _nested_model, runs=3,
    )  # fmt: skip
    _assert_same_traces(expected, actual)
    assert calls == {"oracle": 3, "ours": 3}
    assert not torch.equal(actual[0]["z"], actual[1]["z"])


def test_init_messenger_leaves_observed_conditioned_and_subsample_sites_alone():
    conditioned = poutine.condition(_nested_model, {"scale": torch.tensor(7.0)})
    trace = poutine.trace(ours.InitMessenger(ours.init_to_feasible)(conditioned))
    nodes = trace.get_trace().nodes
    assert torch.equal(nodes["scale"]["value"], torch.tensor(7.0))
    assert torch.equal(nodes["obs"]["value"], torch.zeros(3))
    assert nodes["data"]["value"].shape == (3,)  # the plate's subsample indices
    assert torch.equal(nodes["x"]["value"], torch.zeros(3))


def test_init_messenger_is_found_by_reparam_messenger_like_pyro():
    def model():
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(loc, 2.0))

    reparam = poutine.reparam(model, config={"y": LocScaleReparam(0.0)})
    runs = {}
    for module in (oracle, ours):
        init = module.init_to_value(values={"y": torch.tensor(2.0)})
        runs[module] = _trace_values(module, init, reparam)
    _assert_same_traces(runs[oracle], runs[ours])
    assert torch.equal(runs[ours][0]["y"], torch.tensor(2.0))
    messenger = ours.InitMessenger(ours.init_to_sample)
    with messenger:
        assert _get_init_messengers() == [messenger]


def _scalar_grid_model():
    with pyro.plate("rows", 4, dim=-2), pyro.plate("cols", 5, dim=-1):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def test_init_messenger_wrong_shape_error_names_site_strategy_and_shapes():
    init = ours.init_to_value(values={"z": torch.zeros(3)})
    with pytest.raises(ValueError) as e:
        ours.InitMessenger(init)(_scalar_grid_model)()
    message = str(e.value)
    assert "site 'z'" in message and "init_to_value" in message
    assert "expected shape (4, 5)" in message and "actual (3,)" in message


def test_init_messenger_wrong_type_error_names_site():
    init = ours.init_to_value(values={"z": 1.5})
    with pytest.raises(ValueError, match="for site 'z'.*expected Tensor, actual float"):
        ours.InitMessenger(init)(_scalar_grid_model)()


def test_init_messenger_skips_shape_and_type_checks_without_validation():
    pyro.enable_validation(False)
    init = ours.init_to_value(values={"z": torch.zeros(3)})
    trace = poutine.trace(ours.InitMessenger(init)(_scalar_grid_model)).get_trace()
    assert trace.nodes["z"]["value"].shape == (3,)


def test_pyro_oracle_does_not_catch_the_wrong_shape_that_we_reject():
    # Pyro compares against msg["value"], which is always None at that point.
    init = oracle.init_to_value(values={"z": torch.zeros(3)})
    trace = poutine.trace(oracle.InitMessenger(init)(_scalar_grid_model)).get_trace()
    assert trace.nodes["z"]["value"].shape == (3,)


def test_init_messenger_checks_against_value_written_by_the_strategy_like_pyro():
    def writes_message(site):
        site["value"] = torch.zeros(2)
        return torch.zeros(3)

    for module in (oracle, ours):
        name = "site z" if module is oracle else "site 'z'"
        with pytest.raises(ValueError, match=name):
            module.InitMessenger(writes_message)(_scalar_grid_model)()


def test_support_errors_suggests_enumeration_and_block_for_discrete_sites():
    def model():
        pyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError):
        oracle.InitMessenger(oracle.init_to_feasible)(model)()
    with pytest.raises(ValueError, match="discrete sample site 'k'") as e:
        ours.InitMessenger(ours.init_to_feasible)(model)()
    assert "poutine.block(model, hide=['k'])" in str(e.value)
    assert "enumerat" in str(e.value)


def test_support_errors_suggests_projected_normal_reparam_for_spherical_sites():
    site = _site(dist.ProjectedNormal(torch.ones(3)), "dir")
    with pytest.raises(ValueError) as e, ours.support_errors(site):
        biject_to(site["fn"].support)
    assert "spherical sample site 'dir'" in str(e.value)
    assert "poutine.reparam(model, config={'dir': ProjectedNormalReparam()})" in str(
        e.value
    )


class _Odd(constraints.Constraint):
    def check(self, value):
        return torch.ones_like(value, dtype=torch.bool)


class _OddPrior(dist.Normal):
    support = _Odd()


def test_support_errors_names_site_and_support_for_other_unsupported_supports():
    site = _site(_OddPrior(0.0, 1.0), "odd")
    with pytest.raises(NotImplementedError):
        oracle.InitMessenger(oracle.init_to_feasible)(
            lambda: pyro.sample("odd", _OddPrior(0.0, 1.0))
        )()
    with pytest.raises(ValueError, match="site 'odd' has support .*_Odd") as e:
        ours.InitMessenger(ours.init_to_feasible)(
            lambda: pyro.sample("odd", _OddPrior(0.0, 1.0))
        )()
    assert isinstance(e.value.__cause__, NotImplementedError)
    with ours.support_errors(site):  # nothing raised, nothing changed
        pass
    with pytest.raises(RuntimeError), ours.support_errors(site):
        raise RuntimeError("not a support problem")


def test_builtin_strategies_maps_short_names_to_strategies_and_summaries():
    table = ours.builtin_strategies()
    assert list(table) == [
        "feasible", "sample", "median", "mean", "uniform", "value", "generated"
    ]  # fmt: skip
    for name, (strategy, summary) in table.items():
        assert strategy is getattr(ours, f"init_to_{name}")
        assert callable(strategy(None))
        assert summary.strip() and "\n" not in summary


def test_module_exports_public_api_and_never_imports_pyro_autoguide():
    for name in ours.__all__:
        assert hasattr(ours, name)
    assert "pyro.infer.autoguide" not in inspect.getsource(ours)
