"""Thread settings; must run before numpy / numba / torch / jax are imported."""

import os

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def setup_threads(n):
    """Pin every library to n threads via the environment (before imports)."""
    import sys
    n = int(n)
    for v in THREAD_VARS:
        if v == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            continue   # numba refuses a changed value once its pool exists; set_num_threads
        os.environ[v] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "intra_op_parallelism_threads" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false "
                 "intra_op_parallelism_threads=1").strip()
        os.environ["XLA_FLAGS"] = flags
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {v: os.environ[v] for v in THREAD_VARS + ("XLA_FLAGS",) if v in os.environ}


def apply_runtime_threads(n):
    """Runtime thread settings for libraries that have them (after import)."""
    out = {}
    try:
        import numba
        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
        out["numba"] = numba.get_num_threads()
    except Exception as e:  # pragma: no cover
        out["numba"] = f"error {e}"
    try:
        import torch
        torch.set_num_threads(int(n))
        out["torch"] = torch.get_num_threads()
    except ImportError:
        out["torch"] = "missing"
    return out
