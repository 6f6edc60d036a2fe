"""param_with_leaf: a param's value, and its free tensor only when just made from it."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import SoftplusLowerCholeskyTransform
from pyro.nn.module import PyroModule, PyroParam
from torch.distributions import transform_to

from guide_core.core.param_leaf import param_with_leaf


class Holder(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.inner = PyroModule()
        self.inner.tril = PyroParam(
            torch.eye(3) * 2.0, constraints.softplus_lower_cholesky
        )

    def forward(self):  # a param statement runs only inside the module's call
        return param_with_leaf(self, "inner.tril")


def test_a_fresh_param_gives_its_store_tensor_and_transform():
    pyro.clear_param_store()
    holder = Holder()
    value, leaf, transform = holder()
    assert leaf is pyro.get_param_store()._params["inner.tril"]
    assert transform == SoftplusLowerCholeskyTransform()
    torch.testing.assert_close(value, transform(leaf))


def test_a_substituted_value_is_used_whole():
    pyro.clear_param_store()
    holder = Holder()
    stale = holder()[0]  # carries .unconstrained
    with torch.no_grad():
        pyro.get_param_store()._params["inner.tril"].add_(1.0)
    with poutine.substitute(data={"inner.tril": stale}):
        value, leaf, transform = holder()
    assert value is stale and leaf is None and transform is None


def test_traces_record_the_statement_as_usual():
    pyro.clear_param_store()
    holder = Holder()
    holder()  # registers it in the store
    store = pyro.get_param_store()
    with poutine.trace() as tracer:
        holder()
    site = tracer.trace.nodes["inner.tril"]
    assert site["type"] == "param"
    assert site["fn"] == store.get_param  # not the watching wrapper
    assert site["value"].unconstrained() is store._params["inner.tril"]


def test_the_store_constraint_in_force_is_reported():
    pyro.clear_param_store()
    pyro.param("inner.tril", torch.ones(3, 3), constraint=constraints.positive)
    holder = Holder()
    value, leaf, transform = holder()
    # the store's constraint, not the module's
    assert transform == transform_to(constraints.positive)
    torch.testing.assert_close(value, torch.ones(3, 3))


def test_a_module_local_param_reports_the_modules_constraint():
    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=True):
        holder = Holder()
        value, leaf, transform = holder()
    assert leaf is holder.inner.tril_unconstrained
    assert transform == SoftplusLowerCholeskyTransform()


def test_outside_the_modules_call_there_is_no_statement_and_no_leaf():
    pyro.clear_param_store()
    value, leaf, transform = param_with_leaf(Holder(), "inner.tril")
    assert leaf is None and transform is None
    torch.testing.assert_close(value.diagonal(), torch.full((3,), 2.0))
