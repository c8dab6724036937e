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
    settings = {v: os.environ[v] for v in THREAD_VARS + ("XLA_FLAGS",) if v in os.environ}
    pinned = pin_to_cpus(n)
    if pinned is not None:
        settings["cpu_affinity"] = pinned
    return settings


def pin_to_cpus(n):
    """Restrict this process (and the processes it starts) to n CPUs; returns them, or None where
    the OS has no affinity call. The environment variables above are not enough: JAX 0.10's CPU
    runtime ignores the XLA thread flags and ran its matrix products on both cores of this 2-core
    machine (about 1.8x faster than with one core), so the "1 thread per tool" rule is enforced by
    the OS instead."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    wanted = os.environ.get("BENCH_CPUS")     # e.g. "1" to keep CPU 0 for another job
    if wanted:
        allowed = [int(c) for c in wanted.split(",")] + [c for c in allowed if str(c) not in wanted.split(",")]
    chosen = allowed[:max(1, int(n))]
    os.sched_setaffinity(0, chosen)
    return ",".join(str(c) for c in chosen)


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
