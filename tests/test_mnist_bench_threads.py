"""benchmarks/mnist_bench.py records the BLAS thread counts srcgrad's MinibatchLoop ran each timed
epoch on and its choice (blas_threads="auto"), and lists them under the table (no training here:
the report from a recorded configuration)."""
import json

import pytest


def test_report_lists_the_blas_threads_of_each_timed_round(tmp_path):
    from benchmarks import mnist_bench
    args = mnist_bench._parse(["--quick", "--tools", "srcgrad,blas-floor"])
    rec = {"srcgrad": {"label": "srcgrad (MinibatchLoop)", "status": "ok", "times": [0.3, 0.2],
                       "foreign": [0.0, 0.0], "compile_s": 5.0, "check_rel_err": 1e-7,
                       "blas_threads_used": [{"1": 40, "2": 20}, {"2": 60}],
                       "blas_threads_note": "2 threads (median per-batch time ...)"},
           "blas-floor": {"label": "GEMM floor", "status": "ok", "times": [0.2, 0.2],
                          "foreign": [0.0, 0.0]}}
    cfg = {"cpus": [0, 1], "batches": {"64": rec}, "srcgrad_cache": "cold", "blas": []}
    md = mnist_bench.write_report(args, {"every tool on 2 CPUs": cfg}, tmp_path / "m.md",
                                  tmp_path / "m.json", "python benchmarks/mnist_bench.py --quick")
    assert ("* srcgrad (MinibatchLoop) BLAS threads: batches per thread count in each timed "
            "round: 1: 40, 2: 20; 2: 60. Choice: 2 threads (median per-batch time ...)") in md
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["configs"]["every tool on 2 CPUs"]["batches"]["64"]["srcgrad"][
        "blas_threads_used"] == [{"1": 40, "2": 20}, {"2": 60}]


def test_srcgrad_trainer_describes_its_threads():
    import numpy as np
    from benchmarks.lib import mnist_trainers as M

    class Loop:                       # what the trainer reads from MinibatchLoop
        blas_threads_used = {None: 7}
        blas_threads_chosen = {}

    t = M.SrcgradTrainer(np.zeros((4, 784), np.float32), np.zeros(4, np.int64), 2)
    t.loop = Loop()
    assert t.threads_used() == {"BLAS default": 7}
    assert t.threads_note().startswith("none made (the BLAS has ")
    assert M.NumpyTrainer(None, None, 2).threads_used() is None


@pytest.mark.slow
def test_parts_bench_reports_every_variant_on_each_thread_count(tmp_path):
    from benchmarks import mnist_parts_bench
    out = tmp_path / "parts.md"
    assert mnist_parts_bench.main(["--random-data", "--samples", "512", "--rounds", "1",
                                   "--batches", "64", "--out", str(out)]) == 0
    text = out.read_text()
    for name in list(mnist_parts_bench.VARIANTS) + ["srcgrad"]:
        assert f"| {name} | " in text
