"""AutoDiscreteParallel: differential tests against Pyro, mixtures, families, errors."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.autoguide as oracle
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO

import guide_core
from guide_core import AutoGuideList, init_to_value, registry

AutoDiscreteParallel = guide_core.AutoDiscreteParallel

DATA = torch.tensor([-2.1, -1.9, 2.2, 1.8, 0.1])


def discrete_model(data):
    locs = torch.tensor([-2.0, 0.0, 2.0])
    coin = pyro.sample("coin", dist.Bernoulli(0.3))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("obs", dist.Normal(locs[z] + coin, 1.0), obs=data)


def onehot_model(data):
    locs = torch.tensor([-2.0, 0.0, 2.0])
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.OneHotCategorical(torch.tensor([0.2, 0.3, 0.5])))
        pyro.sample("obs", dist.Normal((z * locs).sum(-1), 1.0), obs=data)


def mixture_model(data):
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("assignment", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


def train(guide, model, data, steps=20, lr=0.05, seed=0):
    """Train ``guide`` from a fixed seed; return its losses and parameters."""
    pyro.set_rng_seed(seed)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    losses = [svi.step(data) for _ in range(steps)]
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return losses, params


def assert_same(ours, theirs):
    assert sorted(ours[1]) == sorted(theirs[1])
    torch.testing.assert_close(torch.tensor(ours[0]), torch.tensor(theirs[0]))
    for name, value in theirs[1].items():
        torch.testing.assert_close(ours[1][name], value)


@pytest.mark.parametrize("model", [discrete_model, onehot_model])
def test_matches_pyro_parameters_and_losses(model):
    pyro.clear_param_store()
    ours = train(AutoDiscreteParallel(model), model, DATA)
    pyro.clear_param_store()
    theirs = train(oracle.AutoDiscreteParallel(model), model, DATA)
    assert_same(ours, theirs)


def test_sites_and_param_names_are_pyros():
    ours = poutine.trace(AutoDiscreteParallel(discrete_model)).get_trace(DATA)
    theirs = poutine.trace(oracle.AutoDiscreteParallel(discrete_model)).get_trace(DATA)
    assert list(ours.stochastic_nodes) == list(theirs.stochastic_nodes)
    for name in theirs.stochastic_nodes:
        ours_site, their_site = ours.nodes[name], theirs.nodes[name]
        assert type(ours_site["fn"]) is type(their_site["fn"])
        assert ours_site["infer"] == their_site["infer"]
    for name in ("coin", "z"):
        assert ours.nodes[name]["infer"] == {"enumerate": "parallel"}
    ours_params = {n for n, s in ours.nodes.items() if s["type"] == "param"}
    their_params = {n for n, s in theirs.nodes.items() if s["type"] == "param"}
    assert ours_params == their_params


def test_matches_pyro_beside_a_continuous_guide_in_a_guide_list():
    def build(normal, discrete, guide_list):
        guide = guide_list(mixture_model)
        guide.append(normal(poutine.block(mixture_model, hide=["assignment"])))
        guide.append(discrete(poutine.block(mixture_model, expose=["assignment"])))
        return guide

    pyro.clear_param_store()
    guide = build(guide_core.AutoNormal, AutoDiscreteParallel, AutoGuideList)
    ours = train(guide, mixture_model, DATA)
    pyro.clear_param_store()
    pyros = build(oracle.AutoNormal, oracle.AutoDiscreteParallel, oracle.AutoGuideList)
    theirs = train(pyros, mixture_model, DATA)
    assert_same(ours, theirs)
    assert set(guide.median(DATA)) == {"locs", "assignment"}


@pytest.mark.parametrize("continuous", ["AutoDelta", "AutoNormal"])
def test_gaussian_mixture_recovers_the_true_assignments(continuous):
    true = torch.tensor([0, 1] * 10)
    data = torch.tensor([-3.0, 3.0])[true] + 0.5 * torch.randn(20)
    init = init_to_value(values={"locs": torch.tensor([-1.0, 1.0])})
    guide = AutoGuideList(mixture_model)
    blocked = poutine.block(mixture_model, hide=["assignment"])
    guide.append(getattr(guide_core, continuous)(blocked, init_loc_fn=init))
    guide.append(
        AutoDiscreteParallel(poutine.block(mixture_model, expose=["assignment"]))
    )
    train(guide, mixture_model, data, steps=150, lr=0.1)
    median = guide.median(data)
    assert torch.equal(median["assignment"], true)
    torch.testing.assert_close(
        median["locs"], torch.tensor([-3.0, 3.0]), atol=0.5, rtol=0
    )
    probs = guide[1].assignment_probs.detach()
    assert (probs.max(-1).values > 0.9).all()


def test_parameters_cover_the_full_subsampled_plate():
    def model(data):
        with pyro.plate("data", 5, subsample_size=2) as idx:
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("obs", dist.Normal(4.0 * z - 2.0, 1.0), obs=data[idx])

    guide = AutoDiscreteParallel(model)
    train(guide, model, DATA, steps=100, lr=0.1)
    assert guide.z_probs.shape == (5,)  # Pyro's has the subsample size, 2
    torch.testing.assert_close(
        guide.median(DATA)["z"], (DATA > 0).to(torch.get_default_dtype())
    )

    pyro.clear_param_store()
    theirs = oracle.AutoDiscreteParallel(model)
    theirs(DATA)
    assert theirs.z_probs.shape == (2,)  # pyro-ppl/pyro#3286


def test_create_plates_subsampling():
    def model(data):
        with pyro.plate("data", 5, subsample_size=2) as idx:
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("obs", dist.Normal(4.0 * z - 2.0, 1.0), obs=data[idx])

    guide = AutoDiscreteParallel(
        model, create_plates=lambda data: pyro.plate("data", 5, subsample_size=2)
    )
    train(guide, model, DATA, steps=100, lr=0.1)
    torch.testing.assert_close(
        guide.median(DATA)["z"], (DATA > 0).to(torch.get_default_dtype())
    )


def test_median_is_the_mode_and_quantiles_follow_the_cdf():
    def model():
        pyro.sample("b", dist.Bernoulli(torch.tensor([0.2, 0.7])))
        pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.1, 0.6])))
        pyro.sample("h", dist.OneHotCategorical(torch.tensor([0.3, 0.1, 0.6])))

    guide = AutoDiscreteParallel(model)
    median = guide.median()
    torch.testing.assert_close(median["b"], torch.tensor([0.0, 1.0]))
    assert median["c"].item() == 2
    torch.testing.assert_close(median["h"], torch.tensor([0.0, 0.0, 1.0]))
    quantiles = guide.quantiles([0.25, 0.35, 0.5, 0.95])
    torch.testing.assert_close(
        quantiles["b"], torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    )
    assert quantiles["c"].tolist() == [0, 1, 2, 2]  # cdf 0.3, 0.4, 1.0
    assert quantiles["h"].argmax(-1).tolist() == [0, 1, 2, 2]


FAMILIES = {
    "binomial": (lambda: dist.Binomial(4, torch.tensor(0.3)), ["probs"], [0, 2, 4]),
    "extended_binomial": (
        lambda: dist.ExtendedBinomial(torch.tensor(4.0), torch.tensor(0.3)),
        ["probs"],
        [0, 2, 4],
    ),
    "beta_binomial": (
        lambda: dist.BetaBinomial(2.0, 3.0, 4),
        ["concentration1", "concentration0"],
        [0, 2, 4],
    ),
    "ordered_logistic": (
        lambda: dist.OrderedLogistic(torch.tensor(0.0), torch.tensor([-1.0, 0, 1])),
        ["probs"],
        [0, 1, 3],
    ),
    "mask": (
        lambda: dist.Bernoulli(0.4).mask(torch.tensor(True)),
        ["probs"],
        [0, 1, 1],
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_enumerable_family_trains_under_trace_enum(family):
    make_prior, params, data = FAMILIES[family]
    prior = make_prior()

    def model(data):
        with pyro.plate("data", len(data)):
            k = pyro.sample("k", prior)
            pyro.sample("obs", dist.Normal(k.to(data.dtype), 0.5), obs=data)

    data = torch.tensor(data, dtype=torch.get_default_dtype())
    guide = AutoDiscreteParallel(model)
    losses, store = train(guide, model, data, steps=100, lr=0.1)
    assert sorted(store) == sorted(f"AutoDiscreteParallel.k_{p}" for p in params)
    assert losses[-1] < losses[0]
    assert guide.median(data)["k"].tolist() == data.tolist()
    quantiles = guide.quantiles([0.0, 1.0], data)["k"]
    assert quantiles.shape == (2, 3) and (quantiles[0] <= quantiles[1]).all()


def test_combinatorial_families_enumerate_and_give_a_valid_mode():
    def model():
        pyro.sample("perm", dist.OneOneMatching(torch.tensor([[2.0, 0.0], [0.0, 2.0]])))

    guide = AutoDiscreteParallel(model)
    loss = TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide)
    assert torch.isfinite(torch.tensor(loss))
    assert guide.median()["perm"].tolist() == [0, 1]
    assert "AutoDiscreteParallel.perm_logits" in pyro.get_param_store()


def test_state_dict_loads_before_the_first_call():
    trained = AutoDiscreteParallel(discrete_model)
    train(trained, discrete_model, DATA)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    pyro.clear_param_store()
    fresh = AutoDiscreteParallel(discrete_model)
    fresh.load_state_dict(state)
    for name, value in trained.median(DATA).items():
        torch.testing.assert_close(fresh.median(DATA)[name], value)


def test_registered_with_honest_capabilities():
    info = registry.info("auto_discrete_parallel")
    assert info.capabilities.discrete and not info.capabilities.continuous
    assert info.capabilities.subsample
    guide = registry.make("auto_discrete_parallel", discrete_model)
    assert isinstance(guide, AutoDiscreteParallel)


# -- bad input -----------------------------------------------------------------


def test_continuous_site_is_an_error_naming_the_site_and_the_fix():
    with pytest.raises(NotImplementedError, match="site 'locs'.*continuous") as err:
        AutoDiscreteParallel(mixture_model)(DATA)
    assert "poutine.block(model, hide=['locs'])" in str(err.value)


def test_site_without_enumerable_support_is_an_error_naming_the_site():
    def model():
        pyro.sample("n", dist.Poisson(3.0))

    with pytest.raises(NotImplementedError, match="site 'n'.*Poisson.*no finite"):
        AutoDiscreteParallel(model)()


def test_sequential_enumeration_is_an_error_naming_the_site():
    def model():
        pyro.sample("b", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})

    with pytest.raises(NotImplementedError, match="site 'b'.*'sequential'"):
        AutoDiscreteParallel(model)()


def test_inhomogeneous_total_count_is_an_error_naming_the_site():
    def model():
        pyro.sample("k", dist.Binomial(torch.tensor([2.0, 3.0]), 0.5))

    with pytest.raises(NotImplementedError, match="site 'k'.*total_count differs"):
        AutoDiscreteParallel(model)()
