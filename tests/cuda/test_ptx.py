"""Compile every CUDA kernel for the real target (PTX for sm_90) -- the simulator does not type
kernels, so typing errors only show up here.

Runs in child processes without the simulator (``NUMBA_ENABLE_CUDASIM`` removed from their
environment), so it works from the simulator session (``NUMBA_ENABLE_CUDASIM=1 python -m pytest
tests/cuda``) and needs no GPU, only NVVM/libdevice (``pip install "numba-cuda[cu12]"``).  It is
skipped with the reason where those are missing (a failure under CI=true).  Stand-alone:
``python tests/cuda/test_ptx.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mission import missing  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CC = (9, 0)
SKIP_RC = 3


def _child(dtype_name):
    """Compile every kernel of one dtype; print one JSON line per kernel signature."""
    import numpy as np

    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    try:
        from numba import cuda

        def _probe(a):
            a[0] = 1.0

        cuda.compile_ptx(_probe, "void(float32[:])", cc=CC)
    except Exception as exc:  # NVVM / libdevice / bindings missing
        print(json.dumps({"skip": f"cannot compile PTX here: {type(exc).__name__}: {exc}"}))
        sys.exit(SKIP_RC)
    from srcgrad.backends import cuda_kernels as ck
    from srcgrad.cuda.device import device_cc

    assert not ck.SIMULATOR
    for name, fn, sigs in ck.kernel_signatures():
        if not name.endswith(dtype_name):
            continue
        for sig in sigs:
            rec = {"kernel": name, "sig": str(sig)}
            try:
                with device_cc(CC):     # the GEMMs call device functions: name the target
                    ptx, _ = cuda.compile_ptx(fn, sig, cc=CC)
                rec["ok"] = True
                rec["target"] = f"sm_{CC[0]}{CC[1]}" in ptx
                if dtype_name == "float32":  # no silent promotion to double in float32 kernels
                    rec["f64_lines"] = sum(1 for ln in ptx.splitlines() if ".f64" in ln)
            except Exception as exc:
                rec["ok"] = False
                rec["error"] = f"{type(exc).__name__}: {str(exc)[:3000]}"
            print(json.dumps(rec), flush=True)
    del np


def _run_children():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen([sys.executable, __file__, "--child", dt], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for dt in ("float32", "float64")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append((p.returncode, out, err))
    return results


def test_compile_ptx_every_kernel():
    results = _run_children()
    recs = []
    for rc, out, err in results:
        lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        if rc == SKIP_RC:
            missing(lines[0]["skip"] if lines else "PTX compilation unavailable")
        assert rc == 0, f"child failed (rc {rc}):\n{err[-4000:]}"
        recs.extend(lines)
    from srcgrad.backends import cuda_kernels as ck

    expected = sum(len(sigs) for _, _, sigs in ck.kernel_signatures())
    assert len(recs) == expected
    failed = [r for r in recs if not r["ok"]]
    assert not failed, "\n\n".join(f"{r['kernel']} {r['sig']}:\n{r['error']}" for r in failed)
    assert all(r["target"] for r in recs)
    promoted = [r["kernel"] for r in recs if r.get("f64_lines")]
    assert not promoted, f"float32 kernels using double precision: {promoted}"


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        _child(sys.argv[2])
    else:
        n_fail = 0
        for rc, out, err in _run_children():
            print(out, end="")
            if rc not in (0,):
                print(err[-4000:], file=sys.stderr)
            n_fail += sum(1 for ln in out.splitlines()
                          if ln.startswith("{") and json.loads(ln).get("ok") is False)
            n_fail += rc not in (0, SKIP_RC)
        sys.exit(1 if n_fail else 0)
