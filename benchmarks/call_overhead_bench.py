"""The Python-side cost of calling a compiled gradient (issue #18): ``value_and_grad(f)(*args)``
beside a direct call of the same compiled adjoint (``spec.adjoint(*args, 1.0)``), and beside the
full call path (the fast closure of srcgrad/fast_call.py switched off for that GradFunction),
interleaved in one process in random order; the best of many rounds per case.

usage: python benchmarks/call_overhead_bench.py [--rounds N]
       -> benchmarks/results/call_overhead.md and .json

Programs: a sum of squares of a 1-element array (the wrapper alone), Rosenbrock n = 1e4 and
Lorenz-63 RK4 (1000 steps), the loop benchmark's programs (``benchmarks/lib/programs.py``).
"""
import argparse
import json
import os
import random
import sys
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))


def sum_of_squares(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


def cases(fn, args, wrt):
    import srcgrad
    from srcgrad import fast_call
    fast = srcgrad.value_and_grad(fn, wrt=wrt)
    full = srcgrad.value_and_grad(fn, wrt=wrt)
    full._full_path_only = True
    make = fast_call.make
    fast_call.make = lambda function, *rest: None if getattr(function, "_full_path_only", False) \
        else make(function, *rest)
    fast(*args)
    full(*args)
    assert fast._fast is not None and full._fast is None
    spec = fast._last.fallback or fast._last
    adjoint, one = spec.adjoint, spec.one
    return {"direct adjoint": lambda: adjoint(*args, one),
            "value_and_grad": lambda: fast(*args),
            "value_and_grad, full path": lambda: full(*args)}


def best_times(table, number, rounds):
    best = {name: float("inf") for name in table}
    for _ in range(rounds):
        order = list(table.items())
        random.shuffle(order)
        for name, call in order:
            best[name] = min(best[name], timeit.timeit(call, number=number) / number)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    options = parser.parse_args(argv)
    import numpy as np
    from benchmarks.lib import programs as P
    programs = {"1-element array (sum of squares)": (sum_of_squares, (np.array([0.5]),), 0, 2000)}
    for name, size, number in (("rosenbrock", {"n": 10_000}, 100), ("lorenz", {"nsteps": 1000}, 50)):
        prog = P.PROGRAMS[name]
        wrt = prog.wrt[0] if len(prog.wrt) == 1 else tuple(prog.wrt)
        programs[name + " " + ", ".join(f"{k}={v}" for k, v in size.items())] = (prog.fn, prog.make_args(size, np.random.default_rng(0)), wrt, number)
    load_before = os.getloadavg()
    results = {}
    for name, (fn, args, wrt, number) in programs.items():
        best = best_times(cases(fn, args, wrt), number, options.rounds)
        results[name] = {case: seconds * 1e6 for case, seconds in best.items()}
    load_after = os.getloadavg()
    lines = ["# Call overhead of a compiled gradient (issue #18)", "",
             f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (2 shared cores: "
             "compare the ratios within this run). Best of "
             f"{options.rounds} interleaved rounds, µs per call.", "",
             "| program | direct adjoint | value_and_grad | ÷ direct | full path | ÷ direct |",
             "|---|---|---|---|---|---|"]
    for name, row in results.items():
        direct, fast, full = (row[k] for k in ("direct adjoint", "value_and_grad",
                                                  "value_and_grad, full path"))
        lines.append(f"| {name} | {direct:.2f} | {fast:.2f} | {fast / direct:.3f} | {full:.2f} | "
                     f"{full / direct:.3f} |")
    lines += ["", "`full path`: the same GradFunction call with the fast closure "
              "(srcgrad/fast_call.py) switched off: binding-free call key lookup, entry dispatch and "
              "generic result assembly, as before the fast path."]
    out = HERE / "results" / "call_overhead"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"load": [load_before, load_after],
                                                    "us_per_call": results}, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
