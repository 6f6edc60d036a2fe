"""``fit(distributed=...)`` over 2 processes on localhost (gloo).

Each rank is a subprocess given the environment ``torchrun`` sets; the worker
is ``distributed_worker.py``. Every launch has a timeout, and so has the
process group, so a lost rank is an error, never a hang.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from guide_core.workflow.engines.process_group import join, launched_by_torchrun
from guide_core.workflow.engines.ranks import local_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "distributed_worker.py"
LIMIT = 90  # seconds any launch may take


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN}
    paths = [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(
    case: str,
    out: Path,
    world_size: int = 2,
    cmd: list[str] | None = None,
    limit: float = LIMIT,
) -> list[subprocess.CompletedProcess]:
    """Run the worker (or ``cmd``) on ``world_size`` ranks (one plain process for 1)."""
    cmd = cmd or [sys.executable, str(WORKER), case, str(out)]
    if world_size == 1:
        run = subprocess.run(
            cmd, env=_env(), capture_output=True, text=True, timeout=limit
        )
        return [run]
    port = str(_free_port())
    procs = []
    for rank in range(world_size):
        env = _env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world_size),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                cwd=out,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    done = []
    deadline = time.monotonic() + limit
    try:
        for proc in procs:
            left = max(1.0, deadline - time.monotonic())
            stdout, stderr = proc.communicate(timeout=left)
            done.append(
                subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return done


def _ok(runs: list[subprocess.CompletedProcess]) -> None:
    for rank, run in enumerate(runs):
        assert run.returncode == 0, f"rank {rank} failed:\n{run.stderr[-3000:]}"


@pytest.fixture(scope="module")
def same(tmp_path_factory) -> list[dict]:
    """One launch of the "same" case (eager, recorded, the probe), both ranks."""
    out = tmp_path_factory.mktemp("same")
    _ok(_launch("same", out))
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


def test_parameters_are_bitwise_equal_on_both_ranks(same):
    first, second = same
    for engine in ("eager", "recorded"):
        one, two = first[engine], second[engine]
        assert one["engine"] == engine, one["reason"]
        assert one["reason"].startswith("distributed over 2 processes (gloo); ")
        assert not one["warnings"], one["warnings"]
        assert one["params"].keys() == two["params"].keys() and one["params"]
        for name, value in one["params"].items():
            assert torch.equal(value, two["params"][name]), (engine, name)
        assert one["losses"] == two["losses"]  # the all-reduced mean on both
        assert len(one["losses"]) == 40


def test_each_recorded_step_takes_fresh_disjoint_shares_of_one_subsample(same):
    used = [outcome["probe"] for outcome in same]
    assert used[0]["engine"] == "recorded"
    # one all-reduce per step; step 1 runs eager, steps 2-6 the recorded program
    steps = list(zip(used[0]["used"], used[1]["used"]))
    assert len(steps) == 6
    for mine, theirs in steps:
        assert len(mine) == len(theirs) == 8  # subsample_size 16 over 2 ranks
        assert not set(mine) & set(theirs)  # disjoint: one subsample of 16
    unions = [frozenset(a) | frozenset(b) for a, b in steps]
    assert len(set(unions)) == 6  # a fresh subsample every step, recorded too


@pytest.mark.slow
def test_the_compiled_engine_keeps_the_ranks_bitwise_equal(tmp_path):
    _ok(_launch("compiled", tmp_path, limit=300))  # inductor on each rank
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert first["engine"] == second["engine"] == "compiled"
    for name, value in first["params"].items():
        assert torch.equal(value, second["params"][name]), name
    assert first["losses"] == second["losses"]


def test_two_processes_reach_the_posterior_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _ok(_launch("posterior", one, world_size=1))
    _ok(_launch("posterior", two))
    x = 3.0 + torch.randn(1000, generator=torch.Generator().manual_seed(1))
    precision = 1000 + 1 / 100
    exact_loc, exact_scale = float(x.sum()) / precision, precision**-0.5
    single = torch.load(one / "rank0.pt")
    ranks = [torch.load(two / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0] == ranks[1]
    for got in (single, ranks[0]):
        assert got["engine"] == "recorded"
        assert abs(got["loc"] - exact_loc) < 3 * exact_scale, got
        assert 0.5 * exact_scale < got["scale"] < 2.0 * exact_scale, got
    assert abs(single["loc"] - ranks[0]["loc"]) < 3 * exact_scale


def test_a_rank_that_dies_stops_the_other_with_a_clear_error(tmp_path):
    start = time.monotonic()
    runs = _launch("dying", tmp_path)
    assert time.monotonic() - start < LIMIT
    assert runs[1].returncode == 1
    assert runs[0].returncode != 0
    assert "DistributedError" in runs[0].stderr
    kept = torch.load(tmp_path / "rank0.pt")
    assert kept["error"].startswith("rank 0 of 2:") and "peer was lost" in kept["error"]
    assert kept["seconds"] < 30  # well within the 20 s timeout plus the steps
    assert kept["step"] == 20  # rank 1 died before its 20th all-reduce
    assert all(v.isfinite().all() for v in kept["params"].values())


def test_a_rank_that_stops_answering_is_an_error_within_the_timeout(tmp_path):
    runs = _launch("stalling", tmp_path)  # rank 1 sleeps 10 s; the timeout is 3 s
    assert runs[0].returncode != 0
    kept = torch.load(tmp_path / "rank0.pt")
    assert kept["error"].startswith("rank 0 of 2:")
    assert "did not answer within 3 s" in kept["error"]
    assert kept["seconds"] < 10  # the timeout, not the peer's sleep


def _model_file(tmp_path: Path, die_at: int = 0) -> tuple[str, str]:
    """A model file (rank 1 exits on call ``die_at`` if set) and its data."""
    import numpy as np

    (tmp_path / "my_model.py").write_text(
        "import os, pyro, pyro.distributions as dist\n"
        "CALLS = [0]\n"
        "def model(x):\n"
        "    CALLS[0] += 1\n"
        f"    if os.environ.get('RANK') == '1' and CALLS[0] == {die_at}:\n"
        "        os._exit(1)\n"
        "    mu = pyro.sample('mu', dist.Normal(0.0, 10.0))\n"
        "    with pyro.plate('data', x.shape[0], subsample_size=50) as idx:\n"
        "        pyro.sample('obs', dist.Normal(mu, 1.0), obs=x[idx])\n"
    )
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).normal(2.0, 1.0, 400))
    return f"{tmp_path / 'my_model.py'}:model", str(tmp_path / "data.npz")


def _cli(spec: str, data: str, save: Path, steps: int, *more: str) -> list[str]:
    return [
        *("-m", "guide_core", "fit", spec, "--data", data, "--steps", str(steps)),
        *("--no-khat", "--num-samples", "50", "--quiet", "--save", str(save), *more),
    ]


def test_the_cli_under_torchrun_talks_and_saves_on_rank_0_only(tmp_path):
    spec, data = _model_file(tmp_path)
    port = str(_free_port())
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-addr", "127.0.0.1", "--master-port", port),
        *_cli(spec, data, tmp_path / "fit.pt", steps=100),
    ]
    run = subprocess.run(
        cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LIMIT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("fitting auto_normal to") == 1
    assert run.stdout.count("saved to") == 1
    assert "distributed over 2 processes (gloo)" in run.stdout
    assert (tmp_path / "fit.pt").is_file()


def test_the_cli_keeps_what_rank_0_learned_when_a_peer_dies(tmp_path):
    spec, data = _model_file(tmp_path, die_at=30)
    # eager: the model runs every step, so rank 1 dies on its 30th call
    cmd = [
        sys.executable,
        *_cli(spec, data, tmp_path / "fit.pt", 300, "--engine", "eager"),
    ]
    first, second = _launch("", tmp_path, cmd=cmd)
    assert second.returncode == 1 and second.stdout == ""
    assert first.returncode == 1
    error = first.stderr.strip().splitlines()[-1]
    assert error.startswith("guide-core: error: rank 0 of 2:"), first.stderr[-2000:]
    assert "a peer was lost" in error
    assert "saved what was learned up to step" in first.stdout
    assert (tmp_path / "fit.pt").is_file()


def test_compare_fits_each_guide_on_every_rank_and_talks_on_rank_0(tmp_path):
    """Rank 1's model raises in the set-up of the first guide and in the 25th
    eager step of the second: each is one failed row, and the third guide is
    fitted on both ranks (they stayed in step); only rank 0 prints and reports."""
    import numpy as np

    (tmp_path / "tripping.py").write_text(
        "import os, pyro, pyro.distributions as dist\n"
        "CALLS = [0]\n"
        "def model(x):\n"
        "    CALLS[0] += 1\n"
        "    if os.environ.get('RANK') == '1' and CALLS[0] in (2, 30):\n"
        "        raise RuntimeError(f'rank 1 trips on call {CALLS[0]}')\n"
        "    mu = pyro.sample('mu', dist.Normal(0.0, 10.0))\n"
        "    with pyro.plate('data', x.shape[0], subsample_size=50) as idx:\n"
        "        pyro.sample('obs', dist.Normal(mu, 1.0), obs=x[idx])\n"
    )
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).normal(2.0, 1.0, 400))
    cmd = [
        *(sys.executable, "-m", "guide_core", "compare"),
        *(str(tmp_path / "tripping.py") + ":model", "--data", "data.npz"),
        *("--guides", "auto_normal,auto_delta,auto_normal", "--steps", "40"),
        *("--engine", "eager", "--no-khat", "--report", "report"),
    ]
    first, second = _launch("", tmp_path, cmd=cmd)
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout == ""
    out = first.stdout
    assert out.count("comparing 3 guides") == 1 and out.count("final ELBO") == 1
    assert out.count("report written to") == 1
    assert (tmp_path / "report" / "index.html").is_file()
    rows = [line for line in out.splitlines() if line.startswith("auto_")]
    assert len(rows) == 3, out
    failed = [r for r in rows if "error: PeerFailed: rank 0 of 2: rank 1 raised" in r]
    assert [r.split()[0] for r in failed] == ["auto_normal", "auto_delta"], out
    assert "raised at step 0 " in failed[0]  # in the set-up
    assert int(failed[1].split("raised at step ")[1].split()[0]) > 1  # mid-fit
    fitted = [r for r in rows if r not in failed]
    assert fitted and fitted[0].split()[0] == "auto_normal" and "eager" in fitted[0]


def test_off_without_torchrun_and_the_share_must_divide(monkeypatch):
    for name in _TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun()
    assert join(None) is None and join(False) is None
    with pytest.raises(RuntimeError, match="needs torchrun"):
        join(True)
    with pytest.raises(TypeError):
        join("yes")
    assert local_size("data", 1000, 100, 2) == 50
    with pytest.raises(ValueError, match="plate 'data': subsample_size=101"):
        local_size("data", 1000, 101, 2)


def test_the_ranks_shares_are_disjoint_and_make_one_global_subsample():
    import pyro
    from pyro import poutine

    from guide_core.workflow.engines.ranks import (
        ShareSubsamples,
        split_subsamples,
    )

    def model():
        with pyro.plate("data", 1000, subsample_size=100) as idx:
            pass
        with pyro.plate("groups", 3):  # not subsampled: whole on every rank
            pass
        return idx

    shares = []
    for rank in range(2):
        generator = torch.Generator().manual_seed(7)
        with split_subsamples(2), ShareSubsamples(rank, 2, generator):
            trace = poutine.trace(model).get_trace()
        shares.append(trace.nodes["_RETURN"]["value"])
        assert trace.nodes["groups"]["value"].tolist() == [0, 1, 2]
    assert [len(s) for s in shares] == [50, 50]
    assert len(set(torch.cat(shares).tolist())) == 100


def test_the_global_subsample_is_uniform_without_a_full_permutation():
    from guide_core.workflow.engines.ranks import random_subset

    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(50)
    firsts = torch.zeros(50)
    for _ in range(4000):
        chosen = random_subset(50, 5, generator)  # 4 * 5 < 50: the sparse draw
        assert len(set(chosen.tolist())) == 5
        counts[chosen] += 1
        firsts[chosen[0]] += 1  # the order is random too (it splits the ranks)
    # each index is chosen with probability 5/50: 400 of 4000, sd about 19
    assert (counts - 400).abs().max() < 5 * 19, counts
    assert (firsts - 80).abs().max() < 5 * 9, firsts
    dense = random_subset(10, 4, generator)  # 4 * 4 >= 10: a permutation
    assert len(set(dense.tolist())) == 4 and dense.max() < 10


def test_the_local_plate_size_holds_only_in_its_own_context():
    import threading

    import pyro

    from guide_core.workflow.engines.ranks import split_subsamples

    def size() -> int:
        with pyro.plate("data", 1000, subsample_size=100) as idx:
            return len(idx)

    inside, done, seen = threading.Event(), threading.Event(), []

    def other_thread() -> None:
        inside.wait(10)
        seen.append(size())
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with split_subsamples(2):
        assert size() == 50  # this rank's share of the subsample
        inside.set()
        assert done.wait(10)
    thread.join(10)
    assert seen == [100]  # another thread, at the same time: Pyro's own size
    assert size() == 100


def test_a_param_no_rank_gave_a_gradient_is_skipped_by_the_update(monkeypatch):
    from guide_core.workflow.engines import process_group as gdist

    group = object.__new__(gdist.ProcessGroup)
    group.rank, group.world_size, group.reduce_seconds = 0, 2, 0.0
    monkeypatch.setattr(group, "_device", lambda: torch.device("cpu"))
    # the other rank's share: the same gradients, and no gradient for "b" either
    monkeypatch.setattr(gdist.dist, "all_reduce", lambda flat: flat.mul_(2))
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    a.grad = torch.full((3,), 0.5)
    assert group.average(1, 4.0, [a, b]) == 4.0
    assert torch.equal(a.grad, torch.full((3,), 0.5)) and b.grad is None
