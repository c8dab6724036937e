"""Tests for srcgrad.distributed: data-parallel training over MPI.

The pieces that need no MPI (sharding, fused buffers, trees) are tested in this process; the rest
runs on 2 real ranks started with the ``mpiexec`` of the ``[distributed]`` extra's MPICH wheel
(tests/mpi_worker.py), and is compared with one process. Without the extra these tests are skipped,
except under ``CI=true``: scripts/test.sh installs the extra, so a missing or broken MPI fails."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srcgrad import distributed as dist

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "mpi_worker.py"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _mpiexec():
    """The mpiexec installed beside this Python (by the mpich wheel), else one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


@pytest.fixture(scope="module")
def mpiexec():
    missing = [m for m in ("mpi4py",) if importlib.util.find_spec(m) is None]
    exe = _mpiexec()
    if missing or exe is None:
        why = (f"the [distributed] extra is not installed (missing: "
               f"{', '.join(missing) or 'mpiexec'}); pip install -e '.[distributed]'")
        if IN_CI:
            pytest.fail(f"CI installs the [distributed] extra (scripts/test.sh), but {why}")
        pytest.skip(why)
    return exe


def run_ranks(mpiexec, n, args, timeout=240):
    """Run ``python ARGS`` on ``n`` ranks; fail the test with the ranks' output if it fails. The
    ranks share this session's SRCGRAD_CACHE_DIR (warmed by the caller) and use one BLAS
    thread each."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    cmd = [mpiexec, "-n", str(n), sys.executable, *map(str, args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s (a rank waiting forever?)"
                    f"\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}\n--- stdout\n{proc.stdout}"
                    f"\n--- stderr\n{proc.stderr}")
    return proc


# ------------------------------------------------------------------------------------------------
# without MPI
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5, 15, 16, 64])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shard_bounds_partition_each_batch(count, size):
    parts = [dist.shard_bounds(count, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == count
    for (lo, hi), (lo2, _) in zip(parts, parts[1:]):
        assert hi == lo2                       # contiguous, disjoint, in rank order
    lengths = [hi - lo for lo, hi in parts]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 0


@pytest.mark.parametrize("size", [1, 2, 3])
def test_sampler_keeps_the_global_order_of_one_process(size):
    order = np.random.default_rng(0).permutation(23)
    batch_size = 5
    per_rank = [list(dist.ShardSampler(batch_size, r, size).batches(order)) for r in range(size)]
    assert all(len(b) == 5 for b in per_rank)          # ceil(23 / 5) global batches
    for b in range(5):
        joined = np.concatenate([per_rank[r][b] for r in range(size)])
        np.testing.assert_array_equal(joined, order[b * batch_size:(b + 1) * batch_size])
    sampler = dist.ShardSampler(batch_size, size - 1, size)
    assert [len(x) for x in sampler.batches(order, first=3)] == [len(per_rank[-1][3]),
                                                                 len(per_rank[-1][4])]
    with pytest.raises(ValueError):
        dist.ShardSampler(4, 2, 2)


def test_fused_buffer_views_share_one_array():
    arrays = (np.ones((3, 2), np.float32), np.full(4, 2.0, np.float32))
    buf = dist.FusedBuffer.like(arrays, extra=1)
    assert buf.flat.shape == (11,) and buf.tail.shape == (1,) and buf.nbytes == 44
    buf.pack(arrays)
    np.testing.assert_array_equal(buf.flat[:10], [1] * 6 + [2] * 4)
    buf.flat[:10] *= 3
    out = tuple(np.empty_like(a) for a in arrays)
    buf.unpack(out)
    assert np.all(out[0] == 3) and np.all(out[1] == 6)
    assert all(v.base is buf.flat or v.base is buf.flat.base for v in buf.views)
    with pytest.raises(TypeError, match="one dtype"):
        dist.FusedBuffer.like((np.ones(2, np.float32), np.ones(2)))


def test_tree_flatten_and_rebuild():
    tree = {"b": (np.zeros(1), [1.0, np.ones(2)]), "a": np.zeros(3)}
    leaves = dist._flatten(tree)
    assert [p for p, _ in leaves] == ["params['a']", "params['b'][0]", "params['b'][1][0]",
                                      "params['b'][1][1]"]
    rebuilt = dist._rebuild(tree, iter(range(4)))
    assert rebuilt == {"b": (1, [2, 3]), "a": 0} and list(rebuilt) == ["b", "a"]


def test_dataparallel_loop_rejects_bad_arguments():
    from srcgrad.optim import SGD

    with pytest.raises(TypeError, match="value_and_grad"):
        dist.DataParallelLoop(lambda x: x, SGD(lr=0.1), comm=object())
    with pytest.raises(TypeError, match="optimizer"):
        from srcgrad import value_and_grad

        dist.DataParallelLoop(value_and_grad(lambda x: x, wrt=0), "sgd", comm=object())


# ------------------------------------------------------------------------------------------------
# 2 ranks
# ------------------------------------------------------------------------------------------------


def _python_loop_reference(worker, optimizer, batch_size):
    """One process, batch after batch: loss and gradients from srcgrad, the optimizer's step."""
    from srcgrad import value_and_grad
    from srcgrad.optim import make_optimizer

    X, y, params = worker.problem()
    vg = value_and_grad(worker.softmax_loss, wrt=(0, 1))
    opt = make_optimizer(optimizer, params, lr=worker.lr_of(optimizer))
    totals = []
    for order in worker.orders(X.shape[0]):
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss, grads = vg(*params, X[idx], y[idx])
            opt.step(params, grads)
            total += float(loss) * len(idx)
        totals.append(total)
    return params, totals


def test_two_ranks_match_one_process(mpiexec, tmp_path):
    spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    # references first: this compiles the gradient into the session's cache, which the ranks load
    refs = {f"{o}_{b}": _python_loop_reference(worker, o, b) for o, b in worker.CONFIGS}
    out = tmp_path / "ranks.npz"
    run_ranks(mpiexec, 2, [WORKER, out])
    with np.load(out) as z:
        assert int(z["size"]) == 2
        for key, (params, totals) in refs.items():
            assert bool(z[f"{key}.same"]), f"{key}: the ranks' parameters differ"
            # the same numbers up to the order of float summation (shard sums, then allreduce)
            np.testing.assert_allclose(z[f"{key}.W"], params[0], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(z[f"{key}.b"], params[1], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(z[f"{key}.totals"], totals, rtol=1e-12)
            # W (6x3) and b (3) gradients plus the loss, float64: one message of 22 * 8 bytes
            assert int(z[f"{key}.bytes"]) == 22 * 8


# ------------------------------------------------------------------------------------------------
# examples/train_mnist.py --distributed
# ------------------------------------------------------------------------------------------------

SCRIPT = ROOT / "examples" / "train_mnist.py"
MNIST = Path(os.environ.get("SRCGRAD_DATA") or ROOT.parent / "shared" / "data" / "mnist")
HAVE_MNIST = (MNIST / "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(not HAVE_MNIST, reason=f"real MNIST not found in {MNIST} (set SRCGRAD_DATA)")
def test_train_mnist_distributed_resumes_and_matches_one_process(mpiexec, tmp_path):
    spec = importlib.util.spec_from_file_location("train_mnist_for_distributed", SCRIPT)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    from srcgrad.datasets import load_mnist

    kw = dict(limit_train=640, batch_size=64, hidden=16, lr=0.05, seed=3)
    # one process, 2 epochs (this also compiles the gradient into the cache the ranks load)
    one = tm.train(arrays=load_mnist(MNIST, download=False), epochs=2, quiet=True, **kw)
    common = ["--distributed", "--data", MNIST, "--no-download", "--limit-train", "640",
              "--batch-size", "64", "--hidden", "16", "--lr", "0.05", "--seed", "3"]
    ck1, ck2 = tmp_path / "ck1.npz", tmp_path / "ck2.npz"
    first = run_ranks(mpiexec, 2, [SCRIPT, *common, "--epochs", "1", "--save", ck1])
    # only rank 0 prints (the progress bar goes to stderr)
    assert first.stdout.count("epoch   1/1") == 1, first.stdout
    assert first.stdout.count("compiled in") == 1, first.stdout
    second = run_ranks(mpiexec, 2, [SCRIPT, *common, "--epochs", "2", "--resume", ck1,
                                    "--save", ck2])
    assert second.stdout.count("epoch   2/2") == 1 and "epoch   1/" not in second.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck1.npz", "ck2.npz"]
    with np.load(ck2) as z:
        assert int(z["epoch"]) == 2
        for name, p in zip(tm.PARAM_NAMES, one["params"]):
            # float32: the same numbers up to the order of the sums (two half-batch gradients)
            np.testing.assert_allclose(z[f"param.{name}"], p, rtol=1e-4, atol=2e-6)
        np.testing.assert_allclose(z["history.train_loss"], one["history"]["train_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(z["history.test_acc"], one["history"]["test_acc"], atol=2e-4)


def test_train_mnist_distributed_errors_stop_every_rank(mpiexec, tmp_path):
    """A checkpoint that cannot be read (read by rank 0 only) stops both ranks with exit code 2
    and one message, instead of leaving rank 1 waiting."""
    proc = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, str(SCRIPT), "--distributed", "--resume",
         str(tmp_path / "nope.npz"), "--data", str(tmp_path), "--no-download"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    # rank 0's message; rank 1's too unless rank 0's abort ended it first
    assert 1 <= proc.stderr.count("nope.npz does not exist") <= 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_benchmark_report_computes_speedup_and_efficiency():
    """benchmarks/distributed_bench.py's table: speed-up = single / N-rank epoch time, efficiency =
    speed-up / N, and the profile's 'other' = epoch time minus the timed parts."""
    spec = importlib.util.spec_from_file_location("distributed_bench",
                                                  ROOT / "benchmarks" / "distributed_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def run(seconds, size, parts=None):
        return {"epochs": [{"seconds": s} for s in seconds], "size": size,
                "parts_s": parts, "bytes_per_step": 407084, "allreduce_us": 250.0}

    parts = {"gradient": 0.5, "allreduce": 0.1, "update": 0.05}
    results = {"ranks": 2, "epochs": 3, "cpus": 2, "platform": "p", "python": "3", "mpi": "MPICH",
               "load_before": (1.0, 1.0, 1.0), "load_after": (1.0, 1.0, 1.0),
               "allreduce_algorithms_us": {"auto": 250.0, "ring": 300.0},
               "runs": [{"batch_size": 64, "single": run([1.0, 1.2, 1.1], 1),
                         "dp1": run([1.2, 1.2, 1.2], 1, parts),
                         "dp2": run([0.7, 0.8, 0.75], 2, parts)}]}
    text = bench.report(results)
    assert "| 64 | 1.100 | 1.200 | 0.750 | 1.47× | 73% | 407,084 | 250 |" in text, text
    assert "| 64 | 2 | 0.500 | 0.100 | 0.050 | 0.100 |" in text, text
    assert "| 250 | 300 |" in text


def test_distributed_without_mpi4py_is_a_usage_error(monkeypatch, tmp_path, capsys):
    """No MPI installed: --distributed exits with code 2 and says which extra to install."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py fails
    spec = importlib.util.spec_from_file_location("train_mnist_no_mpi", SCRIPT)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    rc = tm.main(["--distributed", "--data", str(tmp_path), "--no-download", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "srcgrad[distributed]" in err and "mpi4py" in err, err
    with pytest.raises(dist.DistributedError, match="srcgrad\\[distributed\\]"):
        dist.rank()
