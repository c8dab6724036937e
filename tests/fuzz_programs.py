"""Random programs inside srcgrad's supported subset, for differential fuzzing against FD.

``programs(features)`` is a Hypothesis strategy producing the source text of a module defining
``prog(x, y, a)`` (x, y floats, ``a`` a float64 array of length N) and a helper it may call. Values
are kept bounded (loop bodies squash through tanh/sin, logs and square roots only see 1 + e*e) so
the function stays smooth and finite; data-dependent branches are allowed; the checker rejects
points where a branch boundary lies within the finite-difference step.
"""
import hashlib
import importlib.util
import math
import os
import sys
import tempfile

import numpy as np
from hypothesis import strategies as st

N = 4
SCALARS = ["x", "y", "t0", "t1", "t2"]
ALL_FEATURES = frozenset({"if", "for", "while", "array", "helper", "break", "continue"})

HEADER = '''import math
import numpy as np


def helper(u, v):
    w = u * v + math.sin(u)
    if w > 0.5:
        w = 0.5 + math.tanh(w - 0.5)
    return w

'''


class Gen:
    def __init__(self, draw, features):
        self.draw = draw
        self.features = features
        self.counter = 0

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def const(self):
        return repr(self.draw(st.sampled_from([0.5, 1.5, -0.7, 2.0, 0.3, -1.2])))

    def index(self, loop_vars):
        options = [str(self.draw(st.integers(0, N - 1)))]
        for v in loop_vars:
            options += [v, f"({v} + {self.draw(st.integers(1, N - 1))}) % {N}"]
        return self.choice(options)

    def expr(self, depth, loop_vars):
        leaves = SCALARS + ["CONST", "A", "A"]   # `a` is always an argument
        if "array" in self.features:
            leaves = leaves + ["B"]
        if depth <= 0 or self.draw(st.integers(0, 3)) == 0:
            leaf = self.choice(leaves)
            if leaf == "CONST":
                return self.const()
            if leaf == "A":
                return f"a[{self.index(loop_vars)}]"
            if leaf == "B":
                return f"b[{self.index(loop_vars)}]"
            return leaf
        ops = ["+", "-", "*", "*c", "sin", "cos", "tanh", "log", "sqrt", "div", "atan", "max"]
        if "helper" in self.features:
            ops.append("helper")
        op = self.choice(ops)
        e1 = self.expr(depth - 1, loop_vars)
        if op in ("+", "-", "*"):
            return f"({e1} {op} {self.expr(depth - 1, loop_vars)})"
        if op == "*c":
            return f"({self.const()} * {e1})"
        if op in ("sin", "cos", "tanh"):
            return f"math.{op}({e1})" if self.draw(st.booleans()) else f"np.{op}({e1})"
        if op == "log":
            return f"math.log(1.0 + {e1} * {e1})"
        if op == "sqrt":
            return f"np.sqrt(1.0 + {e1} * {e1})"
        if op == "div":
            return f"({e1} / (1.5 + math.cos({self.expr(depth - 1, loop_vars)})))"
        if op == "atan":
            return f"math.atan({e1})"
        if op == "max":
            return f"max({e1}, {self.expr(depth - 1, loop_vars)})"
        return f"helper({e1}, {self.expr(depth - 1, loop_vars)})"

    def cond(self, loop_vars):
        c = f"{self.expr(1, loop_vars)} > {self.const()}"
        if self.draw(st.integers(0, 3)) == 0:
            c = f"{c} {self.choice(['and', 'or'])} {self.expr(1, loop_vars)} < {self.const()}"
        return c

    def squash(self, e):
        return f"{self.choice(['math.tanh', 'np.sin', '0.9 * math.tanh'])}({e})"

    def stmts(self, depth, loop_vars, indent, in_loop):
        out = []
        for _ in range(self.draw(st.integers(1, 3))):
            out += self.stmt(depth, loop_vars, indent, in_loop)
        return out

    def stmt(self, depth, loop_vars, indent, in_loop):
        pad = "    " * indent
        kinds = ["assign", "assign", "aug"]
        if "if" in self.features and depth > 0:
            kinds.append("if")
        if "for" in self.features and depth > 0:
            kinds.append("for")
        if "while" in self.features and depth > 0 and not in_loop:
            kinds.append("while")
        if "array" in self.features:
            kinds.append("write")
        if in_loop and "break" in self.features:
            kinds.append("break")
        if in_loop and "continue" in self.features:
            kinds.append("continue")
        kind = self.choice(kinds)
        target = self.choice(["t0", "t1", "t2", "x", "y"])
        if kind == "assign":
            e = self.expr(2, loop_vars)
            return [f"{pad}{target} = {self.squash(e) if in_loop else e}"]
        if kind == "aug":
            e = self.expr(1, loop_vars)
            if in_loop:
                return [f"{pad}{target} = 0.5 * {target} + 0.5 * {self.squash(e)}"]
            return [f"{pad}{target} {self.choice(['+=', '-=', '*='])} {e}"]
        if kind == "write":
            e = self.squash(self.expr(2, loop_vars))
            return [f"{pad}b[{self.index(loop_vars)}] = {e}"]
        if kind == "if":
            lines = [f"{pad}if {self.cond(loop_vars)}:"] + self.stmts(depth - 1, loop_vars, indent + 1, in_loop)
            if self.draw(st.booleans()):
                lines += [f"{pad}else:"] + self.stmts(depth - 1, loop_vars, indent + 1, in_loop)
            return lines
        if kind == "for":
            var = f"i{len(loop_vars)}"
            bounds = self.choice([f"{N}", f"1, {N}", f"0, {N}, 2", f"{N - 1}, -1, -1", "len_a",
                                  f"{loop_vars[-1]}" if loop_vars else "2"])
            bounds = bounds.replace("len_a", "a.shape[0]")
            return [f"{pad}for {var} in range({bounds}):"] + \
                self.stmts(depth - 1, loop_vars + [var], indent + 1, True)
        if kind == "while":
            self.counter += 1
            k = f"k{self.counter}"
            limit = self.draw(st.integers(1, 5))
            # the counter moves first, so a `continue` in the body cannot make the loop endless
            return [f"{pad}{k} = 0",
                    f"{pad}while {k} < {limit} and {self.expr(1, loop_vars)} < {self.const()}:",
                    f"{pad}    {k} = {k} + 1"] + self.stmts(depth - 1, loop_vars, indent + 1, True)
        if kind == "break":
            return [f"{pad}if {self.cond(loop_vars)}:", f"{pad}    break"]
        return [f"{pad}if {self.cond(loop_vars)}:", f"{pad}    continue"]


@st.composite
def programs(draw, features=ALL_FEATURES - {"break", "continue"}):
    gen = Gen(draw, features)
    lines = ["def prog(x, y, a):",
             "    t0 = x * 0.5 + y",
             "    t1 = math.sin(x) * a[0]",
             "    t2 = y * y - a[1]"]
    if "array" in features:
        lines += [f"    b = np.zeros({N})",
                  f"    for j in range({N}):",
                  "        b[j] = a[j] * 0.5"]
    lines += gen.stmts(2, [], 1, False)
    ret = "    return t0 + 0.5 * t1 - t2 + 0.25 * x * y"
    if "array" in features:
        ret += " + b[0] + b[1] * b[2] - b[3]"
    lines.append(ret)
    return HEADER + "\n".join(lines) + "\n"


_DIR = None


def load_program(source):
    """Write ``source`` to a fresh .py file and import it; returns the module."""
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="srcgrad-fuzz-")
    name = "fuzzprog_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(_DIR, name + ".py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def directional_fd(f, x, y, a, dx, dy, da, h):
    return (f(x + h * dx, y + h * dy, a + h * da) - f(x - h * dx, y - h * dy, a - h * da)) / (2 * h)


def check_program(source, targets, point_seed=0, rtol=1e-5, atol=1e-6):
    """Compare srcgrad's gradient of ``prog`` with central FD along a random direction.

    Returns False when the point is not smooth enough to judge (FD with two steps disagree),
    True when checked; raises AssertionError (with the program source) on a mismatch.
    """
    import srcgrad

    module = load_program(source)
    f = module.prog
    rng = np.random.default_rng(point_seed)
    x, y = (float(v) for v in rng.uniform(-1.5, 1.5, 2))
    a = rng.uniform(-1.5, 1.5, N)
    dx, dy = (float(v) for v in rng.standard_normal(2))
    da = rng.standard_normal(N)
    value = f(x, y, a.copy())
    if not math.isfinite(value):
        return False
    fd1 = directional_fd(f, x, y, a, dx, dy, da, 1e-6)
    fd2 = directional_fd(f, x, y, a, dx, dy, da, 4e-6)
    if not math.isclose(fd1, fd2, rel_tol=1e-4, abs_tol=1e-5):
        return False           # a branch boundary within the step: FD means nothing here
    results = {}
    for target in targets:
        g = srcgrad.value_and_grad(f, wrt=(0, 1, 2), target=target)
        try:
            val, (gx, gy, ga) = g(x, y, a.copy())
        except Exception as exc:
            raise AssertionError(f"srcgrad failed on target={target} ({type(exc).__name__}: "
                                 f"{str(exc)[:500]}) for program:\n{source}") from exc
        got = gx * dx + gy * dy + float(np.dot(ga, da))
        assert math.isclose(val, value, rel_tol=1e-12, abs_tol=1e-12), \
            f"value differs on target={target}: {val} vs {value}\n{source}"
        assert math.isclose(got, fd1, rel_tol=rtol, abs_tol=atol), (
            f"gradient mismatch on target={target}: srcgrad {got!r} vs FD {fd1!r} at "
            f"x={x!r}, y={y!r}, a={a.tolist()!r}\nprogram:\n{source}")
        results[target] = (gx, gy, ga)
    if len(results) == 2:
        (p, c) = results.values()
        np.testing.assert_allclose(np.r_[p[0], p[1], p[2]], np.r_[c[0], c[1], c[2]], rtol=1e-9,
                                   atol=1e-12, err_msg=f"targets disagree\n{source}")
    return True


# ================================================================================================
# Whole-array programs: broadcasting, reductions with axis, matmul, gathers, slices
# ================================================================================================
# ``prog(A, b, c, s, idx)``: A (M, N), b (N,), c (M, 1) float64 arrays, s a float, idx an int array
# of M column indices (for gathers). Every expression is generated for a shape class, so every
# program is valid: "MN" (M, N), "N" (N,), "M" (M,), "M1" (M, 1), "S" a scalar. Values stay
# bounded (no division; exp only of tanh; logs and square roots of 1 + e*e). Kinks (abs, maximum,
# clip, where, max reductions) are allowed: the checker rejects points where two FD steps disagree.

AM, AN = 3, 4

ARRAY_LEAVES = {
    "MN": ["A", "A", "(c * b)", "A[:, ::-1]", "A.T.T"],
    "N": ["b", "A[0]", "A[1:, :].sum(axis=0)", "np.mean(A[:-1, :], axis=0)"],
    "M": ["c[:, 0]", "A[:, 2]", "A[np.arange(3), idx]", "(A[:, 1:3] @ b[1:3])"],
    "M1": ["c", "A[:, 1:2]", "np.sum(A, axis=1, keepdims=True)"],
    "S": ["s", "0.5", "-1.2", "np.sum(b[1:] * b[:-1])", "A[1, 2]", "np.sum(A[1:, :] * A[:-1, :])"],
}
ARRAY_UNARY = ["np.tanh({})", "np.sin({})", "np.exp(np.tanh({}))", "np.sqrt(1.0 + {0} * {0})",
               "np.log(1.0 + {0} * {0})", "np.maximum({}, 0.1)", "np.abs({})",
               "np.where({0} > 0.0, {0}, 0.5 * {0})", "np.clip({}, -0.7, 0.7)", "np.square({})",
               "(-{})"]
ARRAY_BINARY = ["({} + {})", "({} - {})", "({} * {})"]
# what a binary operation of a shape class may be combined with (NumPy broadcasting)
PARTNERS = {"MN": ["MN", "N", "M1", "S"], "N": ["N", "S"], "M": ["M", "S"], "M1": ["M1", "S"],
            "S": ["S"]}
# reductions and products that produce each class (format with an operand of the named class)
PRODUCERS = {
    "N": [("MN", "np.sum({}, axis=0)"), ("MN", "np.mean({}, axis=0)"), ("MN", "np.max({}, axis=0)"),
          ("MN", "np.min({}, axis=0)"), ("M", "{} @ A"), ("MN", "A.T @ np.tanh({}[:, 0])")],
    "M": [("MN", "np.sum({}, axis=1)"), ("MN", "np.max({}, axis=1)"), ("N", "A @ {}"),
          ("MN", "{} @ b"), ("MN", "{}[np.arange(3), idx]")],
    "M1": [("MN", "np.sum({}, axis=1, keepdims=True)"), ("MN", "np.max({}, axis=1, keepdims=True)"),
           ("MN", "np.mean({}, axis=1, keepdims=True)"), ("M", "np.expand_dims({}, 1)"),
           ("MN", "({} @ A.T)[:, 1:2]")],
    "S": [("MN", "np.sum({})"), ("N", "np.mean({})"), ("M", "np.max({})"), ("N", "{} @ b"),
          ("MN", "np.sum({}[1:, ::2])"), ("M1", "np.min({})")],
    "MN": [("M1", "np.tanh({}) * A"), ("N", "np.outer(c[:, 0], {})"), ("MN", "{}[:, ::-1] * A"),
           ("MN", "np.transpose({}).T")],
}


class ArrayGen:
    def __init__(self, draw):
        self.draw = draw

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def expr(self, cls, depth):
        if depth <= 0 or self.draw(st.integers(0, 4)) == 0:
            return self.choice(ARRAY_LEAVES[cls])
        kind = self.draw(st.integers(0, 2))
        if kind == 0:
            return self.choice(ARRAY_UNARY).format(self.expr(cls, depth - 1))
        if kind == 1:
            other = self.choice(PARTNERS[cls])
            left, right = self.expr(cls, depth - 1), self.expr(other, depth - 1)
            if self.draw(st.booleans()):
                left, right = right, left        # the scalar or the smaller operand on either side
            return self.choice(ARRAY_BINARY).format(left, right)
        operand_cls, template = self.choice(PRODUCERS[cls])
        return "(" + template.format(self.expr(operand_cls, depth - 1)) + ")"   # `@` binds like `*`


@st.composite
def array_programs(draw, name="prog", statements=4, depth=3):
    """Source of a module-level ``name(A, b, c, s, idx)`` returning a float."""
    gen = ArrayGen(draw)
    lines = [f"def {name}(A, b, c, s, idx):"]
    # a few statements, each a whole-array value of some class, then a scalar combination
    classes = []
    for k in range(draw(st.integers(1, statements))):
        cls = gen.choice(["MN", "N", "M", "M1", "S"])
        lines.append(f"    t{k} = {gen.expr(cls, depth)}")
        classes.append(cls)
    terms = [f"np.sum(np.tanh(t{k}) * t{k})" if cls != "S" else f"np.tanh(t{k}) * t{k}"
             for k, cls in enumerate(classes)]
    lines.append(f"    return {' + '.join(terms)} + s * np.sum(A * A)")
    return "\n".join(lines) + "\n"


ARRAY_HEADER = "import numpy as np\n\n\n"


def array_args(seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1.2, 1.2, (AM, AN)), rng.uniform(-1.2, 1.2, AN),
            rng.uniform(-1.2, 1.2, (AM, 1)), float(rng.uniform(-1.2, 1.2)),
            rng.integers(0, AN, AM))


def _array_fd(f, args, direction, h):
    plus = [a + h * d if d is not None else a for a, d in zip(args, direction)]
    minus = [a - h * d if d is not None else a for a, d in zip(args, direction)]
    return (f(*plus) - f(*minus)) / (2 * h)


def check_array_program(f, args, grads, value, seed, label, rtol=1e-5, atol=1e-6):
    """One program's value and gradients (w.r.t. A, b, c, s) against Python and central FD along
    a random direction. Returns False when the point is not smooth enough to judge."""
    expected = f(*args)
    if not math.isfinite(expected):
        return False
    rng = np.random.default_rng(seed + 1)
    direction = [rng.standard_normal(np.shape(a)) for a in args[:3]] + \
        [float(rng.standard_normal()), None]
    fd1 = _array_fd(f, args, direction, 1e-6)
    fd2 = _array_fd(f, args, direction, 4e-6)
    if not math.isclose(fd1, fd2, rel_tol=1e-4, abs_tol=1e-5):
        return False
    assert math.isclose(value, expected, rel_tol=1e-10, abs_tol=1e-10), \
        f"value differs ({label}): {value!r} vs Python {expected!r}"
    for g, a in zip(grads, args):
        assert np.shape(g) == np.shape(a), f"gradient shape {np.shape(g)} for {np.shape(a)} ({label})"
    got = sum(float(np.sum(np.asarray(g) * d)) for g, d in zip(grads, direction[:4]))
    assert math.isclose(got, fd1, rel_tol=rtol, abs_tol=atol), \
        f"gradient mismatch ({label}): srcgrad {got!r} vs FD {fd1!r}"
    return True


def bundle_array_programs(sources):
    """One module: ``prog_k`` for each source and ``bundle`` taking every program's five arguments
    in turn, returning the sum of the programs (one compile checks them all: the gradient w.r.t.
    program k's arguments is program k's gradient)."""
    params, calls = [], []
    for k in range(len(sources)):
        names = [f"{p}{k}" for p in ("A", "b", "c", "s", "idx")]
        params += names
        calls.append(f"prog_{k}({', '.join(names)})")
    body = "".join(src.replace("def prog(", f"def prog_{k}(", 1) + "\n\n"
                   for k, src in enumerate(sources))
    return (ARRAY_HEADER + body + f"def bundle({', '.join(params)}):\n"
            f"    return {' + '.join(calls)}\n")


def check_array_bundle(sources, target, seed=0):
    """Compile ``sources`` as one bundle on ``target`` and check each program against FD.
    Returns (the number of programs checked at smooth points, the bundle's gradients)."""
    import srcgrad

    module = load_program(bundle_array_programs(sources))
    per = [array_args(seed + k) for k in range(len(sources))]
    flat = [a for args in per for a in args]
    wrt = tuple(i for i in range(len(flat)) if i % 5 != 4)
    try:
        value, grads = srcgrad.value_and_grad(module.bundle, wrt=wrt, target=target)(*flat)
    except Exception as exc:
        raise AssertionError(f"srcgrad failed on target={target} ({type(exc).__name__}: "
                             f"{str(exc)[:800]}) for the bundle:\n{module.__file__}") from exc
    expected_total = module.bundle(*flat)
    assert math.isclose(value, expected_total, rel_tol=1e-10, abs_tol=1e-10), (value, expected_total)
    checked = 0
    for k, (src, args) in enumerate(zip(sources, per)):
        f = getattr(module, f"prog_{k}")
        g = grads[4 * k:4 * k + 4]
        own_value = f(*args)             # the bundle's value is checked above; each program's here
        if check_array_program(f, args, g, own_value, seed + k, f"target={target}, program:\n{src}"):
            checked += 1
    return checked, grads


ARRAY_FEATURES = {"matmul": "@", "axis": "axis=", "keepdims": "keepdims", "gather": "idx]",
                  "slice": "[1:", "reversed slice": "::-1", "outer": "np.outer", "broadcast": "c * b"}


def covering_subset(sources, limit):
    """At most ``limit`` of ``sources`` that together use as many ARRAY_FEATURES as possible
    (greedy; the shortest program wins a tie): a small compiled bundle that still exercises
    every kind of whole-array operation."""
    chosen, missing = [], set(ARRAY_FEATURES)
    for _ in range(limit):
        best = max(sources, key=lambda src: (len({f for f in missing if ARRAY_FEATURES[f] in src}),
                                             -len(src)))
        chosen.append(best)
        missing -= {f for f in ARRAY_FEATURES if ARRAY_FEATURES[f] in best}
        if not missing:
            break
    return chosen, missing
