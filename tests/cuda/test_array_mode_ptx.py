"""Compile every kernel that CUDA array mode generates for the test programs to PTX for sm_90.

The simulator does not type kernels, so this is where a float64 promotion or a typing error in
generated code would show.  Runs in a child process without the simulator and without a GPU
(``compile_ptx`` needs only NVVM/libdevice); skipped with the reason where those are missing
(a failure under CI=true).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mission import missing  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CC = (9, 0)
SKIP_RC = 3


def _programs():
    spec = importlib.util.spec_from_file_location("array_mode_programs", HERE / "test_array_mode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    out = []
    for dtype in (np.float32, np.float64):
        out.append(("mlp_loss", dtype, mod.mlp_loss, (0, 1, 2, 3), mod._mlp_args(dtype)))
        out.append(("logistic", dtype, mod.logistic, (0, 1),
                    (rng.normal(size=7).astype(dtype), 0.3, rng.normal(size=(9, 7)).astype(dtype),
                     np.sign(rng.normal(size=9)).astype(dtype))))
        out.append(("column_stats", dtype, mod.column_stats, 0, (rng.normal(size=(6, 4)).astype(dtype),)))
        out.append(("finite_difference", dtype, mod.finite_difference, 0, (rng.normal(size=9).astype(dtype),)))
        out.append(("selects", dtype, mod.selects, (0, 1),
                    (rng.normal(size=(3, 5)).astype(dtype), rng.normal(size=(3, 5)).astype(dtype))))
    return out


def _child():
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    try:
        from numba import cuda

        def _probe(a):
            a[0] = 1.0

        cuda.compile_ptx(_probe, "void(float32[:])", cc=CC)
    except Exception as exc:  # NVVM / libdevice / bindings missing
        print(json.dumps({"skip": f"cannot compile PTX here: {type(exc).__name__}: {exc}"}))
        sys.exit(SKIP_RC)
    from srcgrad import codegen
    from srcgrad.cuda_arrays import ArrayGradFunction

    for name, dtype, func, wrt, args in _programs():
        plan = ArrayGradFunction(func, wrt=wrt, mode="value_and_grad").plan_without_device(*args)
        source = plan.module_source()
        path = codegen.module_path(f"{name}_ptx_check", codegen.cache_key("cuda-arrays-ptx", source))
        codegen.write_module(path, source)
        module = codegen.import_module(path)
        for kernel, sig in plan.kernel_signatures():
            rec = {"program": name, "dtype": np.dtype(dtype).name, "kernel": kernel}
            try:
                ptx, _ = cuda.compile_ptx(getattr(module, kernel).py_func, sig, cc=CC)
                rec["ok"] = True
                rec["f64_lines"] = sum(1 for ln in ptx.splitlines() if ".f64" in ln)
            except Exception as exc:
                rec["ok"] = False
                rec["error"] = f"{type(exc).__name__}: {str(exc)[:3000]}"
            print(json.dumps(rec), flush=True)


def test_generated_array_kernels_compile_for_sm90():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--child"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    recs = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == SKIP_RC:
        missing(recs[0]["skip"] if recs else "PTX compilation unavailable")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(recs) > 20
    failed = [r for r in recs if not r["ok"]]
    assert not failed, "\n\n".join(f"{r['program']} {r['dtype']} {r['kernel']}:\n{r['error']}" for r in failed)
    promoted = [(r["program"], r["kernel"]) for r in recs if r["dtype"] == "float32" and r["f64_lines"]]
    assert not promoted, f"float32 kernels using double precision: {promoted}"


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    sys.path.insert(0, str(ROOT))
    _child()
