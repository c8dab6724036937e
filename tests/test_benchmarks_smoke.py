"""Smoke tests of the benchmark suite (benchmarks/): fast, no peers required.

* the hand-written Numba adjoints (the reference every peer is checked against) match central
  finite differences on small sizes;
* run.py's benchmark + table-writing path works on a tiny config.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))    # the benchmarks package

from benchmarks.lib import adjoints  # noqa: E402
from benchmarks.lib import checks  # noqa: E402
from benchmarks.lib import programs as P  # noqa: E402
from benchmarks.lib import _threads  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    """The benchmarks' main() pins their process to N CPUs and sets the thread variables
    (benchmarks/lib/_threads.py); in-process here, so the suite's later tests get both back
    (test_compile_ahead reads the CPUs this process may use)."""
    for name in _threads.THREAD_VARS + ("XLA_FLAGS",):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    yield
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("name", sorted(P.ALL_PROGRAMS))
def test_hand_adjoint_matches_finite_differences(name):
    prog = P.ALL_PROGRAMS[name]
    args = P.make_args(prog, prog.tiny, seed=3)
    val, grads = adjoints.hand_value_and_grad(name, args)
    assert np.isclose(val, prog.fn(*args), rtol=1e-10, atol=1e-12)
    for seed in (1, 2):
        ok, err, fd, ad = checks.fd_check(prog.fn, args, prog.wrt, grads, seed=seed)
        assert ok, f"{name}: FD {fd} vs adjoint {ad} (rel err {err:.2e})"


def test_compare_grads_flags_wrong():
    ref = (np.ones(3), np.arange(2.0))
    assert checks.compare_grads(ref, ref, 1e-12)[0]
    assert not checks.compare_grads((np.ones(3), np.arange(2.0) + 1e-3), ref, 1e-8)[0]
    assert not checks.compare_grads((np.ones(3),), ref, 1e-8)[0]


def test_interleaved_timing_takes_turns_and_keeps_failures_as_rows():
    from benchmarks.lib import harness
    order = []

    def tool(name, fail_at=None):
        def run():
            order.append(name)
            if fail_at is not None and order.count(name) == fail_at:
                raise RuntimeError("boom")
            return name
        return run

    timing = harness.InterleavedTiming(min_time=1e6, rounds=4, min_reps=8, max_reps=8)
    fast, other, broken = ({"tool": "fast"}, {"tool": "other"}, {"tool": "broken"})
    timing.add(fast, tool("fast"), lambda o: o, warmup=0)
    timing.add(other, tool("other"), lambda o: o, warmup=1)
    timing.add(broken, tool("broken", fail_at=3), lambda o: o, warmup=0)
    for r in (fast, other, broken):
        r["status"] = "queued"
    timing.run()
    assert fast["status"] == "ok" and fast["reps"] == 8 and fast["min"] <= fast["median"]
    assert other["status"] == "ok" and other["reps"] == 8       # the warm-up call is not timed
    assert broken["status"].startswith("failed while timing: RuntimeError")
    # 8 calls in rounds of 2: the tools take turns instead of running one after another
    timed = [n for n in order if n != "other"][:6]
    assert timed == ["fast", "fast", "broken", "broken", "fast", "fast"]


def test_run_writes_tables_on_tiny_config(tmp_path):
    from benchmarks import run
    run.main(["--tiny", "--only", "rosenbrock,heat", "--tools", "primal,hand-numba",
              "--outdir", str(tmp_path), "--out", "tiny"])
    md = (tmp_path / "tiny.md").read_text()
    assert "## rosenbrock" in md and "## heat" in md
    assert "| hand-numba |" in md and "| primal |" in md
    data = json.loads((tmp_path / "tiny.json").read_text())
    tools = {(r["program"], r["tool"]): r for r in data["programs"]}
    assert tools[("rosenbrock", "hand-numba")]["status"] == "ok"
    assert tools[("heat", "primal")]["median"] > 0
    assert data["meta"]["threads"] == 1


def test_vectorized_gmm_bench_on_tiny_config(tmp_path):
    """array_bench.py (the vectorized GMM, issue #3) on the tiny size: srcgrad's python target
    (no Numba compile), the hand NumPy gradient and the references; run.py --only wiring."""
    from benchmarks import array_bench
    from benchmarks import run
    args, vargs = array_bench.gmm_args({"d": 3, "K": 4, "n": 7})
    assert np.isclose(P.gmm_vectorized(*vargs), P.gmm_objective(*args), rtol=1e-12)
    array_bench.main(["--tiny", "--srcgrad-target", "python", "--tools",
                      "primal,srcgrad,numpy-hand,hand-numba", "--outdir", str(tmp_path), "--out", "vec"])
    data = json.loads((tmp_path / "vec.json").read_text())
    status = {r["tool"]: r["status"] for r in data["programs"]}
    assert status == {"primal": "ok", "srcgrad": "ok", "numpy-hand": "ok", "hand-numba": "ok"}, status
    assert "| srcgrad | srcgrad.grad of the vectorized" in (tmp_path / "vec.md").read_text()
    run.main(["--tiny", "--only", "gmm_vectorized", "--tools", "primal,numpy-hand",
              "--outdir", str(tmp_path), "--out", "vec2"])
    assert "| numpy-hand |" in (tmp_path / "vec2.md").read_text()


def test_blas_bench_on_tiny_config(tmp_path):
    """blas_bench.py checks each tool's product before timing it and writes its table."""
    from benchmarks import blas_bench
    blas_bench.main(["--tiny", "--outdir", str(tmp_path), "--out", "blas"])
    rows = json.loads((tmp_path / "blas.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 5          # dtypes x batch sizes x products
    assert all(r["srcgrad matmul us"] > 0 and r["numba np.dot / numpy"] > 0 for r in rows)
    assert "| float32 | 256 | `X.T @ dh` |" in (tmp_path / "blas.md").read_text()


# ------------------------------------------------------------------------------------------------
# MNIST epoch benchmark (benchmarks/mnist_bench.py): in-process, tiny, random data
# ------------------------------------------------------------------------------------------------

def _mnist_bench_args(tools, *extra):
    from benchmarks import mnist_bench
    return mnist_bench._parse(["--quick", "--quick-steps", "4", "--rounds", "3", "--random-data",
                               "--samples", "1024", "--tools", ",".join(tools), *extra])


def test_mnist_bench_checks_times_and_reports(tmp_path, monkeypatch):
    from benchmarks import mnist_bench
    from benchmarks.lib import mnist_trainers as M

    class Broken(M.NumpyTrainer):          # a trainer that forgets the bias updates
        def epoch(self, order):
            b1, b2 = self.p[1].copy(), self.p[3].copy()
            super().epoch(order)
            self.p[1][:], self.p[3][:] = b1, b2

    monkeypatch.setitem(M.TRAINERS, "torch", Broken)     # stands in for a peer
    args = _mnist_bench_args(["numpy", "numba", "blas-floor", "torch"])
    cfg = mnist_bench.run_config(args, 1, log=lambda s: None)
    rec = cfg["batches"]["64"]
    for tool in ("numpy", "numba"):
        assert rec[tool]["status"] == "ok", rec[tool]
        assert rec[tool]["check_rel_err"] < 1e-5
    assert rec["blas-floor"]["status"] == "ok"
    assert rec["torch"]["status"].startswith("WRONG") and rec["torch"]["times"] == []
    for tool in ("numpy", "numba", "blas-floor"):       # interleaved: one epoch each per round
        assert len(rec[tool]["times"]) == 3 and all(t > 0 for t in rec[tool]["times"])
        assert all(f is None or f >= 0 for f in rec[tool]["foreign"])
    cfg["srcgrad_cache"] = "cold"
    md = mnist_bench.write_report(args, {"every tool on 1 CPU": cfg}, tmp_path / "m.md",
                                  tmp_path / "m.json", "python benchmarks/mnist_bench.py --quick")
    assert "| hand NumPy (out=, in place) |" in md and "WRONG" in md
    assert json.loads((tmp_path / "m.json").read_text())["configs"]
    assert cfg["blas"], "threadpoolctl's BLAS description is recorded"


def test_mnist_bench_ratios_use_clean_rounds_only():
    from benchmarks import mnist_bench
    rec = {"srcgrad": {"status": "ok", "times": [1.0, 1.0, 9.0, 1.0], "foreign": [0, 0, 0.9, 0]},
           "numpy": {"status": "ok", "times": [2.0, 2.0, 2.0, 3.0], "foreign": [0, 0, 0, 0.5]}}
    rows = mnist_bench.summarize(rec, 0.1)
    assert rows["srcgrad"]["s_per_epoch"] == 1.0 and rows["srcgrad"]["rounds_clean"] == 3
    assert rows["numpy"]["x_srcgrad"] == 2.0 and not rows["numpy"]["ratio_disturbed"]
    dirty = {k: dict(v, foreign=[1.0] * 4) for k, v in rec.items()}
    rows = mnist_bench.summarize(dirty, 0.1)
    assert rows["numpy"]["disturbed"] and rows["numpy"]["ratio_disturbed"]


@pytest.mark.slow
def test_mnist_bench_srcgrad_trainer_matches_reference():
    from benchmarks import mnist_bench
    args = _mnist_bench_args(["srcgrad", "numpy"])
    rec = mnist_bench.run_config(args, 1, log=lambda s: None)["batches"]["64"]
    assert rec["srcgrad"]["status"] == "ok" and rec["srcgrad"]["check_rel_err"] < 1e-5
    assert len(rec["srcgrad"]["times"]) == 3


@pytest.mark.parametrize("tool", ["numpy-hand", "jax", "torch", "autograd"])
def test_vectorized_gmm_peers_run_the_identical_program(tool):
    """Each peer's transliteration of programs.gmm_vectorized (lib/gmm_identical.py) gives the
    reference gradient (the hand Numba adjoint of the loop form) on a small random problem."""
    from benchmarks import array_bench
    from benchmarks.lib import gmm_identical
    if tool != "numpy-hand":
        pytest.importorskip(tool)
    args, vargs = array_bench.gmm_args({"d": 4, "K": 3, "n": 9}, seed=5)
    _, ref = adjoints.hand_value_and_grad("gmm", args)
    b = gmm_identical.build(tool, vargs)
    ok, err, msg = checks.compare_grads(b["to_numpy"](b["block"](b["run"]())), ref, 1e-8)
    assert ok, msg


def test_mnist_bench_budget_stops_rounds():
    from benchmarks import mnist_bench
    args = _mnist_bench_args(["numpy"], "--rounds", "6", "--budget", "1e-9")
    cfg = mnist_bench.run_config(args, 1, log=lambda s: None)
    # one round alone took more than twice the (tiny) share: stopped after it
    assert len(cfg["batches"]["64"]["numpy"]["times"]) == 1
    assert cfg["stopped_by_budget"] and "1 of 6 rounds" in cfg["stopped_by_budget"][0]


def test_blas_peak_writes_its_report(tmp_path):
    from benchmarks import blas_peak
    out = tmp_path / "peak"
    allowed = os.sched_getaffinity(0)
    blas_peak.main(["--out", str(out), "--repeats", "1", "--square", "128"])
    report = json.loads((tmp_path / "peak.json").read_text())
    assert report["square_128"]["gflops_best"] > 0
    for batch in ("64", "256"):
        row = report["mnist_products"][batch]
        assert row["steps"] == 60_000 // int(batch) and row["gflop"] > 24
        assert 0 < row["epoch_at_peak_s"] and row["of_peak"] > 0
    assert "| 64 | 937 |" in (tmp_path / "peak.md").read_text()
    assert os.sched_getaffinity(0) == allowed          # the process is not left pinned
