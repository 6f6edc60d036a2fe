"""GaussianStart: a Gaussian over unconstrained sites, moved between the
coordinates of two guides whose supports were fixed at different points."""

import torch
from torch.distributions import biject_to, constraints

from guide_core.core.gaussian_start import GaussianStart


def test_in_transforms_maps_through_the_constrained_space():
    # beta's support (0, 1 - alpha) was fixed at alpha = 0.5 in one guide's
    # prototype and at alpha = 0.2 in the other's
    real = biject_to(constraints.real)
    old = {"a": real, "b": biject_to(constraints.interval(0, 0.5))}
    new = {"a": old["a"], "b": biject_to(constraints.interval(0, 0.8))}
    slices = {"a": (0, 1, torch.Size([1])), "b": (1, 2, torch.Size([1]))}
    loc = torch.tensor([1.0, 0.3], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.1], [0.1, 0.04]], dtype=torch.float64)
    start = GaussianStart(slices, loc, cov, old).in_transforms(new)
    value = old["b"](loc[1:])
    assert torch.allclose(new["b"](start.loc[1:]), value)  # same constrained point
    assert start.loc[0] == loc[0]
    jac = torch.autograd.functional.jacobian(
        lambda x: new["b"].inv(old["b"](x)), loc[1:]
    ).reshape(())
    assert torch.allclose(start.covariance[1, 1], cov[1, 1] * jac**2)
    assert torch.allclose(start.covariance[0, 1], cov[0, 1] * jac)
    assert start.covariance[0, 0] == cov[0, 0]
    # the same transforms: nothing moves; no transforms: the guide's own
    same = GaussianStart(slices, loc, cov, old).in_transforms(old)
    assert torch.equal(same.loc, loc) and torch.equal(same.covariance, cov)
    assert GaussianStart(slices, loc, cov).in_transforms(new).loc is loc
