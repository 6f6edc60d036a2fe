"""The contract's checks of how a guide runs: the ELBOs its capabilities
name, subsampling, persistence, dtypes, devices and the recorded engine.

:class:`RuntimeContract` is a base of :class:`~guide_core.testing.GuideContract`
and uses its fixtures (``subject``, ``case``); it is not collected alone.
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import pytest
import torch
from pyro.infer import JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO

import guide_core

from .harness import assert_clear_error, finite, latent_sites, params_of
from .models import CASES

__all__ = ["RuntimeContract"]


def _zero_grads(guide) -> None:
    for p in [*guide.parameters(), *pyro.get_param_store().values()]:
        p.grad = None


def _losses(loss, n: int = 10) -> torch.Tensor:
    pyro.set_rng_seed(5)
    return torch.tensor([float(loss()) for _ in range(n)])


def _assert_same_mean(a: torch.Tensor, b: torch.Tensor, who: str) -> None:
    """The means of two samples of losses agree within 4 standard errors."""
    assert torch.isfinite(a).all(), f"{who}: {a}"
    se = ((a.var() + b.var()) / len(a)).sqrt().item()
    gap = (a.mean() - b.mean()).abs().item()
    assert gap <= 4 * se + 1e-3, (
        f"{who}: mean loss {a.mean():.4f} vs Trace_ELBO's {b.mean():.4f} "
        f"(gap {gap:.4f} > 4 se = {4 * se:.4f})"
    )


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Torch's default dtype set to ``dtype`` for the block, then restored."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _seeded(fn, *args, seed: int = 3):
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return fn(*args)


class RuntimeContract:
    """Checks of the ELBOs, plates, files, dtypes, devices and engines."""

    # -- capabilities that name an ELBO or a plate --------------------------------

    def test_discrete_trains_under_trace_enum(self, subject):
        """Claims ``discrete``: 5 steps of ``TraceEnum_ELBO`` on a model with a
        Bernoulli site ``z`` per row (and a continuous ``loc`` if the guide
        claims continuous sites) give finite losses, and the median of ``z``
        is 0 or 1. Not claimed: the guide refuses the model (under
        ``Trace_ELBO``) with a clear error naming ``z``, never a NaN loss."""
        case = subject.case_for_continuous(CASES["discrete"], CASES["discrete_only"])
        args = case.args()
        if not subject.claims("discrete"):
            with pytest.raises(Exception) as excinfo:
                guide = subject.make(case)
                Trace_ELBO().loss(case.model, guide, *args)
            assert_clear_error(excinfo, "z", who=subject.label)
            return
        guide = subject.make(case)
        losses = subject.fit(guide, case, args, 5)
        assert finite(losses), f"{subject.label}: losses {losses}"
        if subject.claims("median"):
            with torch.no_grad():
                z = guide.median(*args)["z"]
            assert z.shape == (6,) and ((z == 0) | (z == 1)).all(), z

    def test_subsample_trains_on_a_subsampled_plate(self, subject):
        """Claims ``subsample``: 5 steps on a model whose plate ``data`` is
        subsampled (3 of 6 rows, a local latent ``z`` per row) give finite
        losses and move the parameters. Not claimed: the guide either
        refuses with a clear error naming ``z`` or the guide, or trains with
        finite losses; it never crashes inside torch."""
        case = subject.case_for_continuous(
            CASES["subsampled"], CASES["discrete_subsampled"]
        )
        args = case.args()
        if not subject.claims("subsample"):
            try:
                guide = subject.make(case)
                losses = subject.fit(guide, case, args, 2)
            except Exception as exc:  # noqa: BLE001 - judged below
                excinfo = pytest.ExceptionInfo.from_exc_info(
                    (type(exc), exc, exc.__traceback__)
                )
                assert_clear_error(
                    excinfo, "z", subject.spec.class_name, who=subject.label
                )
                return
            assert finite(losses), f"{subject.label}: losses {losses}"
            return
        guide = subject.make(case)
        guide(*args)
        before = params_of(guide)
        losses = subject.fit(guide, case, args, 5)
        assert finite(losses), f"{subject.label}: losses {losses}"
        after = params_of(guide)
        moved = [n for n in before if not torch.equal(before[n], after.get(n))]
        assert moved or not before, f"{subject.label}: no parameter moved"

    def test_jit_trace_elbo_gives_the_trace_elbo_loss(self, subject, case):
        """Claims ``jit``: once compiled, ``JitTrace_ELBO`` gives the loss of
        ``Trace_ELBO`` in expectation (the means of 10 losses each within 4
        standard errors + 1e-3; equal for a guide without noise, such as a
        point mass; not draw for draw: Pyro's own low-rank guide draws in
        another order when traced), and 3 SVI steps under it give finite
        losses."""
        subject.require("jit")
        args = case.args()
        guide = subject.make(case)
        guide(*args)
        jit = JitTrace_ELBO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings
            jit.loss_and_grads(case.model, guide, *args)  # compiles
            compiled = _losses(lambda: jit.loss_and_grads(case.model, guide, *args))
        _zero_grads(guide)
        eager = _losses(lambda: Trace_ELBO().loss(case.model, guide, *args))
        _assert_same_mean(compiled, eager, f"{subject.label}: JitTrace_ELBO")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            losses = subject.fit(guide, case, args, 3, loss=JitTrace_ELBO())
        assert finite(losses), f"{subject.label}: losses {losses}"

    def test_mean_field_elbo_agrees_with_trace_elbo(self, subject, case):
        """Claims ``mean_field``: the mean of 100 ``TraceMeanField_ELBO``
        losses is within 4 standard errors (+1e-3) of the mean of 100
        ``Trace_ELBO`` losses (exactly equal where no analytic KL applies)."""
        subject.require("mean_field")
        args = case.args()
        guide = subject.make(case)
        guide(*args)
        field = subject.elbo(case, TraceMeanField_ELBO)
        plain = subject.elbo(case)
        _assert_same_mean(
            _losses(lambda: field.loss(case.model, guide, *args), 100),
            _losses(lambda: plain.loss(case.model, guide, *args), 100),
            f"{subject.label}: TraceMeanField_ELBO",
        )

    # -- files, dtypes, devices ----------------------------------------------------

    def test_save_and_load_reproduce_the_guide(self, subject, case, tmp_path):
        """``guide_core.save`` then ``guide_core.load(path, model)`` (with the
        param store cleared in between) give a guide whose median and draws
        equal the saved guide's under the same seed."""
        args = case.args()
        guide = subject.make(case)
        subject.fit(guide, case, args, 3)
        draw = _seeded(guide, *args)
        median = _seeded(guide.median, *args) if subject.claims("median") else None
        path = tmp_path / "guide.pt"
        # callables (a flow's builder, a local model) cannot be stored: they
        # are omitted and passed again, as save's error says to
        given = subject.kwargs(subject.name, case)
        again = {k: v for k, v in given.items() if callable(v)}
        guide_core.save(guide, path, omit=list(again))
        pyro.clear_param_store()
        loaded = guide_core.load(path, case.model, model_args=args, **again)
        again = _seeded(loaded, *args)
        for name in latent_sites(case, args):
            torch.testing.assert_close(again[name], draw[name], msg=name)
        if median is not None:
            reloaded = _seeded(loaded.median, *args)
            for name in latent_sites(case, args):
                torch.testing.assert_close(reloaded[name], median[name], msg=name)

    def test_float64_model_gives_float64_params_and_draws(self, subject, case):
        """A model whose data are float64, with torch's default dtype at
        float32 (as in most programs), gives a guide whose parameters, draws
        and median are float64 after 2 steps."""
        args = case.args(torch.float64)
        with _default_dtype(torch.float32):
            guide = subject.make(case)
            losses = subject.fit(guide, case, args, 2)
            assert finite(losses), f"{subject.label}: losses {losses}"
            self._assert_dtype(subject, guide, case, args, torch.float64)

    def test_to_keeps_the_guide_working(self, subject, case):
        """Built and stepped on float32 data, ``guide.to("cpu")`` leaves a
        working guide, and ``guide.to(torch.float64)`` one whose parameters
        and draws are float64 on float64 data."""
        with _default_dtype(torch.float32):
            args = case.args(torch.float32)
            guide = subject.make(case)
            subject.fit(guide, case, args, 1)
            guide.to("cpu")
            guide(*args)
            guide.to(torch.float64)
            args = case.args(torch.float64)
            self._assert_dtype(subject, guide, case, args, torch.float64)

    @pytest.mark.cuda
    def test_to_cuda(self, subject, case):
        """``guide.to("cuda")`` moves the parameters; draws on CUDA data are on
        CUDA."""
        if not torch.cuda.is_available():
            pytest.skip("CUDA is not available")
        guide = subject.make(case)
        subject.fit(guide, case, case.args(), 1)
        guide.to("cuda")
        args = tuple(a.cuda() for a in case.args())
        draw = guide(*args)
        for name in latent_sites(case, args):
            assert draw[name].is_cuda, name
        for name, p in guide.named_parameters():
            assert p.is_cuda, name

    def _assert_dtype(self, subject, guide, case, args, dtype):
        for name, p in params_of(guide).items():
            if p.is_floating_point():
                assert p.dtype == dtype, f"{subject.label}: {name} is {p.dtype}"
        draw = _seeded(guide, *args)
        values = [draw]
        if subject.claims("median"):
            values.append(_seeded(guide.median, *args))
        for value in values:
            for name in latent_sites(case, args):
                if value[name].is_floating_point():
                    assert value[name].dtype == dtype, f"{name}: {value[name].dtype}"

    # -- the engine -------------------------------------------------------------

    def test_recorded_engine_gives_pyro_losses(self, subject, case):
        """``guide_core.SVI(..., engine="recorded")`` gives, step for step, the
        losses of ``pyro.infer.SVI`` from the same seed (3 steps: Pyro's,
        recorded, replayed); where it
        cannot record the step it runs Pyro's and says why."""
        if subject.spec.procedure is not None:
            pytest.skip(f"{subject.label} is fitted by its own procedure, not SVI")
        args = case.args()

        def run(cls, **kwargs):
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
            guide = subject.make(case)
            optim = pyro.optim.Adam({"lr": 0.01})
            svi = cls(case.model, guide, optim, subject.elbo(case), **kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                losses = [svi.step(*args) for _ in range(3)]
            return losses, svi, caught

        expected, _, _ = run(pyro.infer.SVI)
        got, svi, caught = run(guide_core.SVI, engine="recorded")
        torch.testing.assert_close(
            torch.tensor(got), torch.tensor(expected), rtol=1e-5, atol=1e-5
        )
        if svi.engine == "eager":
            assert svi.reason, f"{subject.label}: fell back to eager with no reason"
            # a guide without parameters has nothing to record: no warning owed
            if params_of(svi.guide) or "no params" not in svi.reason:
                assert any("guide_core.SVI" in str(w.message) for w in caught), (
                    f"{subject.label}: fell back to eager silently ({svi.reason})"
                )
