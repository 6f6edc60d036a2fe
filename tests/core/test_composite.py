"""Composition: AutoGuideList and AutoCallable."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from toys import AutoPoint

from guide_core import AutoCallable, AutoGuideList


def model():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    with pyro.plate("p", 3):
        b = pyro.sample("b", dist.LogNormal(a, 1.0))
    pyro.sample("obs", dist.Normal(b.sum(), 1.0), obs=torch.tensor(1.0))


def b_guide():
    loc = pyro.param("b_loc", torch.zeros(3))
    with pyro.plate("p", 3):
        return {"b": pyro.sample("b", dist.LogNormal(loc, 1.0))}


def make_list(second=None):
    guide = AutoGuideList(model)
    guide.append(AutoPoint(poutine.block(model, expose=["a"])))
    guide.append(second or AutoPoint(poutine.block(model, hide=["a"])))
    return guide


def test_list_runs_every_part_under_svi():
    guide = make_list()
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO()
    )
    assert torch.isfinite(torch.tensor(svi.step()))
    assert set(guide()) == {"a", "b"}
    assert len(guide) == 2 and guide[0].master() is guide


def test_plain_callable_is_wrapped_in_auto_callable():
    guide = make_list(second=b_guide)
    assert isinstance(guide[1], AutoCallable)
    assert set(guide()) == {"a", "b"}


def test_add_is_a_deprecated_alias_of_append():
    guide = AutoGuideList(model)
    with pytest.warns(DeprecationWarning, match="use append"):
        guide.add(b_guide)
    assert len(guide) == 1


def test_a_part_cannot_join_two_lists():
    part = AutoPoint(poutine.block(model, expose=["a"]))
    first = AutoGuideList(model)
    first.append(part)
    with pytest.raises(ValueError, match="already a part of a guide list"):
        AutoGuideList(model).append(part)


def test_median_and_quantiles_combine_parts():
    guide = make_list()
    median = guide.median()
    assert set(median) == {"a", "b"}
    q = guide.quantiles([0.25, 0.75])
    assert q["a"].shape == (2,) and q["b"].shape == (2, 3)


def test_part_without_median_is_skipped_with_a_note_not_an_attribute_error():
    guide = make_list(second=b_guide)
    with pytest.warns(UserWarning, match=r"part 1 \(AutoCallable\) has no median"):
        median = guide.median()
    assert set(median) == {"a"}
    with pytest.warns(UserWarning, match="part 1 .* skipped"):
        q = guide.quantiles([0.5])
    assert set(q) == {"a"}


def test_auto_callable_median_stands_in_for_its_quantiles():
    median = AutoCallable(model, b_guide, median=lambda: {"b": torch.ones(3)})
    guide = make_list(second=median)
    assert torch.equal(guide.median()["b"], torch.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = guide.quantiles([0.1, 0.9])
    assert torch.equal(q["b"], torch.ones(2, 3))


def test_part_with_only_a_median_contributes_it_to_quantiles_with_a_note():
    class MedianOnly(AutoPoint):
        def _quantiles(self, q, *args, **kwargs):
            raise NotImplementedError("no quantiles here")

    guide = make_list(second=MedianOnly(poutine.block(model, hide=["a"])))
    with pytest.warns(UserWarning, match="its median stands in at every level"):
        q = guide.quantiles([0.1, 0.9])
    assert q["b"].shape == (2, 3)
    assert torch.equal(q["b"][0], q["b"][1])


def test_parts_on_different_devices_are_an_error_naming_the_parts():
    guide = make_list()
    guide()
    guide[1].to("meta")
    with pytest.raises(
        RuntimeError, match=r"part 0 \(AutoPoint\) on cpu.*part 1 \(AutoPoint\) on meta"
    ):
        guide()


def test_part_built_on_another_model_is_an_error_naming_the_site():
    def other():
        pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    guide = AutoGuideList(model)
    guide.append(AutoPoint(other))
    with pytest.raises(ValueError, match="site 'a' has event_shape"):
        guide()


def test_create_plates_belongs_to_the_list_not_its_parts():
    guide = AutoGuideList(model)
    guide.append(AutoPoint(model, create_plates=lambda: pyro.plate("p", 3)))
    with pytest.raises(ValueError, match="pass it to the AutoGuideList instead"):
        guide()


def test_list_state_loads_into_fresh_parts_before_any_call():
    trained = make_list()
    svi = pyro.infer.SVI(
        model, trained, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
    )
    for _ in range(3):
        svi.step()
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    expected = trained.median()
    pyro.clear_param_store()
    fresh = make_list()
    fresh.load_state_dict(state)
    got = fresh.median()
    assert all(torch.allclose(got[k], expected[k]) for k in expected)
