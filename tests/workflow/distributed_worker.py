"""One rank of the distributed-fit tests: ``python distributed_worker.py CASE OUT``.

Launched by ``test_distributed.py`` once per rank with the ``torchrun``
environment (``RANK``, ``WORLD_SIZE``, ...), or once without it. Writes what
the test checks to ``OUT/rank<R>.pt``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import guide_core
from guide_core.workflow.engines.process_group import DistributedError

RANK = int(os.environ.get("RANK", "0"))
CALLS = [0]


def regression(x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> None:
    """A logistic regression over a subsampled plate."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        pyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])


def trip(stall: bool) -> None:
    """Make rank 1 exit (after 10 s of silence if ``stall``) at its 20th all-reduce."""
    from guide_core.workflow.engines.process_group import ProcessGroup

    average = ProcessGroup.average

    def tripping(self, *args, **kwargs):
        CALLS[0] += 1
        if RANK == 1 and CALLS[0] == 20:
            if stall:
                time.sleep(10)
            os._exit(1)
        return average(self, *args, **kwargs)

    ProcessGroup.average = tripping


def conjugate(x: torch.Tensor) -> None:
    """``mu ~ N(0, 10)``, ``x_i ~ N(mu, 1)``, 100 of 1000 points a step."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", x.shape[0], subsample_size=100) as idx:
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])


def probe(y: torch.Tensor) -> None:
    """A model param per data point: its gradient shows which points a step used."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    w = pyro.param("w", torch.zeros(y.shape[0]))
    with pyro.plate("data", y.shape[0], subsample_size=16) as idx:
        pyro.sample("y", dist.Normal(mu + w[idx], 1.0), obs=y[idx])


def local_grads(name: str) -> list[list[int]]:
    """Record, per all-reduce, where this rank's gradient of ``name`` is nonzero."""
    from guide_core.workflow.engines.process_group import ProcessGroup

    seen: list[list[int]] = []
    average = ProcessGroup.average

    def spy(self, step, loss, params, failed=False):
        store = dict(pyro.get_param_store().named_parameters())
        grad = store[name].grad
        if grad is not None:
            seen.append(torch.nonzero(grad).reshape(-1).tolist())
        return average(self, step, loss, params, failed)

    ProcessGroup.average = spy  # for the rest of this process
    return seen


def regression_data(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Data for :func:`regression`, the same on every rank."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = torch.bernoulli(torch.sigmoid(x @ torch.arange(1.0, 6.0) - 1.0), generator=g)
    return x, y


def params() -> dict[str, torch.Tensor]:
    """Every param in the store (unconstrained), detached."""
    return {n: p.detach().clone() for n, p in pyro.get_param_store().named_parameters()}


def main(case: str, out: Path) -> None:
    """Run ``case``; write the outcome to ``out``."""
    kw = {"tol": None, "khat": False, "progress": False, "seed": 0}
    if case == "same":
        model, args = regression, regression_data()
        outcome = {}
        for engine in ("eager", "recorded"):
            pyro.clear_param_store()
            guide = guide_core.registry.make("auto_normal", model)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = guide_core.fit(
                    model, guide, *args, steps=40, engine=engine, **kw
                )
            outcome[engine] = {
                "params": params(),
                "losses": result.losses,
                "engine": result.engine,
                "reason": result.engine_reason,
                "warnings": [str(w.message) for w in caught],
            }
        pyro.clear_param_store()  # which points does each recorded step use?
        y = torch.ones(64)
        guide = guide_core.registry.make("auto_normal", probe)
        seen = local_grads("w")
        result = guide_core.fit(probe, guide, y, steps=6, engine="recorded", **kw)
        outcome["probe"] = {"used": seen, "engine": result.engine}
    elif case == "posterior":
        if "WORLD_SIZE" in os.environ:  # a group the user made: fit keeps it
            torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=30))
        x = 3.0 + torch.randn(1000, generator=torch.Generator().manual_seed(1))
        guide = guide_core.registry.make("auto_normal", conjugate)
        adam = pyro.optim.Adam
        kw["engine"] = "recorded"
        first = guide_core.fit(
            conjugate, guide, x, steps=600, optim=adam({"lr": 0.05}), **kw
        )
        loc, scale = [], []
        for _ in range(5):  # average the iterates over the last 400 steps
            guide_core.fit(
                conjugate, guide, x, steps=80, optim=adam({"lr": 0.005}), **kw
            )
            loc.append(pyro.param("AutoNormal.locs.mu").item())
            scale.append(pyro.param("AutoNormal.scales.mu").item())
        outcome = {"loc": sum(loc) / len(loc), "scale": sum(scale) / len(scale)}
        outcome["engine"] = first.engine
    elif case == "compiled":
        guide = guide_core.registry.make("auto_normal", regression)
        result = guide_core.fit(
            regression, guide, *regression_data(), steps=30, engine="compiled", **kw
        )
        outcome = {"params": params(), "engine": result.engine}
        outcome["losses"] = result.losses
    elif case in ("dying", "stalling"):
        os.environ["GUIDE_CORE_DIST_TIMEOUT"] = "20" if case == "dying" else "3"
        trip(stall=case == "stalling")  # under the default engine: recorded
        model = regression
        guide = guide_core.registry.make("auto_normal", model)
        start = time.perf_counter()
        try:
            guide_core.fit(model, guide, *regression_data(), steps=200, **kw)
        except DistributedError as exc:
            outcome = {"error": str(exc), "step": exc.step, "params": params()}
            outcome["seconds"] = time.perf_counter() - start
            torch.save(outcome, out / f"rank{RANK}.pt")
            raise
        outcome = {}
    else:
        raise ValueError(case)
    torch.save(outcome, out / f"rank{RANK}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
