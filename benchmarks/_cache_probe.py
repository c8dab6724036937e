"""Second-process srcgrad cache-load probe (run by harness.srcgrad_cache_load).

usage: python _cache_probe.py PROGRAM SIZE_JSON SEED
Prints one JSON line: load_s (srcgrad.grad + first call), import_s, total_s.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    name, size, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    from benchmarks.lib import programs as P
    prog = P.ALL_PROGRAMS[name]
    args = P.make_args(prog, size, seed)
    if prog.float32:            # the arguments the benchmark process compiled and timed
        args = P.as_float32(args)
    t0 = time.perf_counter()
    import srcgrad
    t1 = time.perf_counter()
    wrt = prog.wrt[0] if len(prog.wrt) == 1 else tuple(prog.wrt)
    g = srcgrad.grad(prog.fn, wrt=wrt)
    g(*args)
    t2 = time.perf_counter()
    print(json.dumps({"load_s": t2 - t1, "import_s": t1 - t0, "total_s": t2 - t0,
                      "cache_dir": os.environ.get("SRCGRAD_CACHE_DIR")}))


if __name__ == "__main__":
    main()
