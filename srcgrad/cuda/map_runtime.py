"""The ``cuda`` target: generated functions become CUDA device functions (map mode).

Every thread of a map-mode kernel (see :mod:`srcgrad.cuda.map_mode`) evaluates the scalar function and its
adjoint for one element, so the generated code only ever sees scalars.  A generated module imports
its runtime helpers from here, by the target's name ``srcgrad.backends.cuda`` (``from
srcgrad.backends.cuda import (jit, push_float, ...)``, as the other targets' modules import
``srcgrad.backends.python`` or ``srcgrad.backends.cpu``);
:func:`device_source` then rewrites the module for the device before it is written to the cache:

* each function gets a last parameter ``_status`` (a one-element int32 array local to the thread)
  and every call between generated functions passes it on;
* ``new_float_tape()`` / ``new_int_tape()`` become ``cuda.local.array(MAX_TAPE, dtype)`` with the
  ``max_tape`` of the gradient as a compile-time constant (the float tape holds the working
  dtype, so float32 code stays float32);
* a push past ``max_tape`` writes nothing and sets a bit of ``_status``; tape reads are clamped
  into the tape, so an overflowing thread computes garbage but never touches memory outside its
  tape.  The kernel reports the bit and the host raises :class:`srcgrad.SrcgradError`;
* every ``while`` loop counts its trips and stops after ``max_iter`` of them, setting another bit
  (a GPU thread that never stops would hang the device);
* float32: float literals become ``np.float32(...)`` unless the core already did that
  (``build_module(..., precision="float32")``);
* the Python-level wrappers (``f_grad``, ``f_value_and_grad``, ``f_vjp``) are dropped: kernels call
  the adjoint directly.

Array helpers (``reduce_sum``, ``matmul_grad_left``, ...) make no sense for one thread's scalars:
they are stubs that fail at typing time (in the simulator: when called) with a clear message.
"""
import ast
import re
import numpy as np
from numba import cuda
from numba.core import errors as numba_errors, types
from numba.extending import overload

from .. import helpers, naming
from ..errors import SrcgradError
from .device import SIMULATOR

# The runtime helpers map mode implements as device functions (srcgrad.helpers): scalar versions
# of the NumPy reference, the tape pushes with the thread's ``_status`` as a last argument (added
# by the rewrite below) and the tapes as thread-local arrays. tests/cuda/test_helper_conformance.py
# runs each in the simulator against its reference.
CLAIMS = ("jit", "external", "push_float", "push_int", "range_length", "_range_continues", "unbroadcast",
          "clip_scalar", "new_float_tape", "new_int_tape", "new_float32_tape")
helpers.register_backend("cuda", __name__, claims=CLAIMS)

# _status bits set by device code
TAPE_OVERFLOW = 1       # a float push past max_tape
INT_TAPE_OVERFLOW = 2   # an int push past max_tape
ITER_OVERFLOW = 4       # a while loop ran max_iter trips

MAX_TAPE = 1024         # default size of each per-thread tape (values), see srcgrad.cuda.grad
MAX_ITER = 100000       # default bound on the trips of one while loop

CACHE = True            # cache compiled kernels next to the generated module


def jit(function):
    """Compile a generated function as a CUDA device function."""
    return cuda.jit(device=True)(function)


def _device(function):
    if SIMULATOR:
        return cuda.jit(device=True)(function)
    return cuda.jit(device=True, inline="always")(function)


# ---- tapes -------------------------------------------------------------------------------------

@_device
def _new_float_tape():
    return cuda.local.array(MAX_TAPE, np.float64)


@_device
def _new_int_tape():
    return cuda.local.array(MAX_TAPE, np.int64)


@_device
def _new_float32_tape():
    return cuda.local.array(MAX_TAPE, np.float32)


new_float_tape = _new_float_tape
new_float32_tape = _new_float32_tape
new_int_tape = _new_int_tape


@_device
def push_float(tape, top, value, status):
    """Push ``value``; past the end nothing is written and ``status`` records the overflow."""
    if top < tape.shape[0]:
        tape[top] = value
    else:
        status[0] |= TAPE_OVERFLOW
    return tape, top + 1


@_device
def push_int(tape, top, value, status):
    if top < tape.shape[0]:
        tape[top] = value
    else:
        status[0] |= INT_TAPE_OVERFLOW
    return tape, top + 1


@_device
def tape_get(tape, index):
    """``tape[index]`` clamped into the tape (only an overflowed thread reads out of range)."""
    if index < 0:
        index = 0
    elif index >= tape.shape[0]:
        index = tape.shape[0] - 1
    return tape[index]


@_device
def range_length(start, stop, step):
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // (-step))


@_device
def _range_continues(counter, stop, step):
    return counter < stop if step > 0 else counter > stop


@_device
def unbroadcast(gradient, like):
    """Scalars only on the device: nothing to sum."""
    return gradient


@_device
def sign(x):
    """np.sign for a scalar (the derivative of abs)."""
    if x > 0:
        return x - x + 1
    if x < 0:
        return x - x - 1
    return x - x


@_device
def square(x):
    return x * x


@_device
def clip_scalar(x, lo, hi):
    return min(max(x, lo), hi)


def load(x, i):
    """Element ``i`` of a kernel argument: ``x[i]`` for an array, ``x`` itself for a scalar."""
    if getattr(x, "ndim", 0) == 0:
        return x
    return x[i]


if not SIMULATOR:
    @overload(load, target="cuda")
    def _load_ov(x, i):
        if isinstance(x, types.Array):
            return lambda x, i: x[i]
        return lambda x, i: x


# ---- array helpers: meaningless for one thread's scalars ---------------------------------------

def _array_stub(name):
    message = (f"srcgrad.cuda (map mode): {name} works on arrays, but each GPU thread of a map-mode "
               "kernel sees scalars; write the function for one element (math.*, branches, loops)")

    def stub(*args):
        raise SrcgradError(message)

    stub.__name__ = name

    if not SIMULATOR:
        @overload(stub, target="cuda")
        def _ov(*args):
            raise numba_errors.TypingError(message)
    return stub


# every other declared helper (srcgrad.helpers) works on arrays: a stub with that message
for _name in helpers.names(service=False):
    if _name not in CLAIMS:
        globals()[_name] = _array_stub(_name)
del _name


def external(qualified_name):
    """A user function with a registered rule, compiled as a device function."""
    from ..rules import external as lookup
    function = lookup(qualified_name)
    function = getattr(function, "py_func", function)
    return cuda.jit(device=True)(function)


# ---- rewriting a generated module for the device ------------------------------------------------

STATUS = naming.DEVICE_STATUS
_TAPES = {naming.FLOAT_TAPE_NAME, naming.INT_TAPE_NAME}


class _DeviceRewriter(ast.NodeTransformer):
    def __init__(self, functions, max_tape, max_iter, dtype, float_literals):
        self.functions = functions          # names of the module's generated functions
        self.max_tape = max_tape
        self.max_iter = max_iter
        self.dtype = dtype                  # "float32" / "float64"
        self.float_literals = float_literals
        self.loops = 0

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        node.args.args.append(ast.arg(arg=STATUS))
        return node

    def visit_Call(self, node):
        if _is_cast(node):          # np.float32(0.5): already what the device needs
            return node
        self.generic_visit(node)
        if isinstance(node.func, ast.Name):
            name = node.func.id
            if name in self.functions or name in (naming.FLOAT_TAPE[2], naming.INT_TAPE[2]):   # the pushes
                node.args.append(ast.Name(id=STATUS, ctx=ast.Load()))
            elif name in ("new_float_tape", "new_float32_tape", "new_int_tape"):
                dtype = {"new_float_tape": f"np.{self.dtype}", "new_float32_tape": "np.float32",
                         "new_int_tape": "np.int64"}[name]
                return ast.parse(f"cuda.local.array({self.max_tape}, {dtype})", mode="eval").body
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and \
                node.func.value.id == "np" and node.func.attr in _NP_SCALAR:
            # derivative rules are written with np.* ufuncs; on scalars the math.* functions
            # (libdevice) are what CUDA device code supports everywhere
            node.func = ast.parse(_NP_SCALAR[node.func.attr], mode="eval").body
        return node

    def visit_Assign(self, node):
        self.generic_visit(node)
        # loop-trip counters are integers even where a float32 pass cast their `+ 1`
        target = node.targets[0]
        if isinstance(target, ast.Name) and _COUNTER.match(target.id) and isinstance(node.value, ast.BinOp):
            for side in ("left", "right"):
                operand = getattr(node.value, side)
                if _is_cast(operand) and isinstance(operand.args[0], ast.Constant) and \
                        float(operand.args[0].value).is_integer():
                    setattr(node.value, side, ast.Constant(int(operand.args[0].value)))
        return node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name) and node.value.id in _TAPES:
            return ast.Call(func=ast.Name(id="tape_get", ctx=ast.Load()), args=[node.value, node.slice],
                            keywords=[])
        return node

    def visit_While(self, node):
        self.generic_visit(node)
        self.loops += 1
        counter = f"_iter{self.loops}"
        guard = ast.parse(f"{counter} += 1\n"
                          f"if {counter} > {self.max_iter}:\n"
                          f"    {STATUS}[0] |= {ITER_OVERFLOW}\n"
                          f"    break").body
        node.body = guard + node.body
        return [ast.parse(f"{counter} = 0").body[0], node]

    def visit_Constant(self, node):
        if self.float_literals and type(node.value) is float:
            return ast.Call(func=ast.parse(f"np.{self.dtype}", mode="eval").body, args=[node], keywords=[])
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        # float32: an int literal times an adjoint (e.g. ``_adj_x * 2 * x`` from the power rule)
        # would promote to float64 under NumPy's rules
        if self.float_literals and isinstance(node.op, ast.Div):
            # true division gives a float anyway: make it a float32 one (int / int, float32 / int
            # would be float64)
            for side in ("left", "right"):
                operand = getattr(node, side)
                if not _is_cast(operand):
                    setattr(node, side, ast.Call(func=ast.parse(f"np.{self.dtype}", mode="eval").body,
                                                 args=[operand], keywords=[]))
        if self.float_literals:
            for side, other in (("left", node.right), ("right", node.left)):
                value = getattr(node, side)
                if isinstance(value, ast.Constant) and type(value.value) is int and _is_float_expr(other) \
                        and not isinstance(node.op, ast.Pow):
                    setattr(node, side, ast.Call(func=ast.parse(f"np.{self.dtype}", mode="eval").body,
                                                 args=[value], keywords=[]))
        return node


# loop-trip counters: the while-loop trips the reverse sweep replays, this rewrite's own `_iter<n>`,
# the tape positions and the normalizer's loop indices (temporaries `_k<n>`)
_COUNTER = re.compile(rf"^({naming.TRIPS_PREFIX}\d+|_iter\d+|{naming.FLOAT_POSITION}|{naming.INT_POSITION}|_k\d+)$")

# np.* functions of derivative rules -> device functions for scalars
_NP_SCALAR = {"exp": "math.exp", "log": "math.log", "sqrt": "math.sqrt", "sin": "math.sin",
              "cos": "math.cos", "tan": "math.tan", "sinh": "math.sinh", "cosh": "math.cosh",
              "tanh": "math.tanh", "arcsin": "math.asin", "arccos": "math.acos", "arctan": "math.atan",
              "arctan2": "math.atan2", "log1p": "math.log1p", "expm1": "math.expm1", "log2": "math.log2",
              "log10": "math.log10", "floor": "math.floor", "ceil": "math.ceil", "fabs": "abs",
              "abs": "abs", "hypot": "math.hypot", "sign": "sign", "square": "square",
              "maximum": "max", "minimum": "min", "fmax": "max", "fmin": "min"}


def _is_cast(node):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
        isinstance(node.func.value, ast.Name) and node.func.value.id == "np" and \
        node.func.attr in ("float32", "float64", "int64", "int32")


def _is_float_expr(node):
    if isinstance(node, ast.Name):
        return naming.is_adjoint(node.id) or node.id == naming.SEED
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            isinstance(node.func.value, ast.Name) and node.func.value.id == "np" and \
            node.func.attr in ("float32", "float64"):
        return True
    if isinstance(node, ast.BinOp):
        return _is_float_expr(node.left) or _is_float_expr(node.right)
    return False


def device_source(source, primal, max_tape=MAX_TAPE, max_iter=MAX_ITER, dtype="float64",
                  float_literals=False):
    """Rewrite a generated module (see the module docstring) for CUDA device code."""
    tree = ast.parse(source)
    wrappers = {f"{primal}_grad", f"{primal}_value_and_grad", f"{primal}_vjp"}
    body = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name in wrappers:
            continue
        body.append(stmt)
    tree.body = body
    functions = {s.name for s in body if isinstance(s, ast.FunctionDef)}
    rewriter = _DeviceRewriter(functions, int(max_tape), int(max_iter), dtype, float_literals)
    new_body = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef):
            # keep docstrings as they are (visit_Constant only touches floats anyway)
            stmt = rewriter.visit(stmt)
        new_body.append(stmt)
    tree.body = new_body
    ast.fix_missing_locations(tree)
    imports = ast.parse("from numba import cuda\nfrom srcgrad.backends.cuda import tape_get, load, sign, square, CACHE").body
    at = 1 if ast.get_docstring(tree) is not None else 0
    tree.body[at:at] = imports
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"
