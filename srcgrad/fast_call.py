"""The fast path of a repeated call of a :class:`srcgrad.api.GradFunction` (issue #18).

A gradient of a small program runs in a few microseconds, so what the wrapper does around the
compiled adjoint counts: binding, kind inference, the call key (``arguments.tree_key``: a tuple
built and hashed on every call), the specialization's entry dispatch and the generic result
assembly cost about as much as a small adjoint itself.

:func:`make` builds, after a call has run through the full path, one closure for the argument
types of that call: it checks each positional argument's exact type (and an array's dtype object
and ndim) against the ones seen, and on a match calls the adjoint directly with the seed bound
in, converting only the results that need it. Any mismatch (other types, a keyword argument, a
0-d array) returns :data:`MISS` and the caller takes the full path, which then builds the closure
for the new types. Only plain arguments of a function without a static plan (no pytrees, module
data or closures, whose values must be read again on each call) get one. Closures are kept per
call key (:func:`remember`, :func:`seen`), so calls alternating between argument types make each
closure once and find it by the call key after a miss.

Everything else stays as in the full path: a failing fusion guard reruns the call in the
specialization with the fallback branches (and drops the closure, so the next call builds one on
that specialization); any other error goes through ``GradFunction._located_error`` (shape errors
naming the user's line, Numba errors as UnsupportedSyntaxError).
"""
import itertools
import linecache

import numpy as np

from .errors import FusionGuardFailed

MISS = object()         # what a closure returns when the arguments are not of the types it is for

_ndarray = np.ndarray
_numbers = itertools.count(1)     # each closure's own file name, for linecache


def _scalar(value):
    """A float result as a Python float (as ``arguments.to_python_scalar``)."""
    if type(value) is float or not isinstance(value, (np.floating, float)):
        return value
    return float(value)


def _gradient(g, dtype):
    """A plain argument's gradient in the argument's dtype (``arguments.in_dtype``), a float
    gradient as a Python float."""
    if type(g) is _ndarray:
        if dtype is None or g.dtype is dtype or g.dtype == dtype:
            return g
        return g.astype(dtype)
    return _scalar(g)


def remember(function, key, spec, layout, args):
    """The closure for ``function``'s call key ``key`` (``arguments.tree_key``), made once per key
    and specialization run and kept in ``function._fast_calls``: calls alternating between
    argument types reuse theirs (making one compiles it); None when the full path is needed."""
    runs = spec.fallback if spec.fallback is not None else spec
    made = function._fast_calls.get(key)
    if made is None or made[0] is not spec or made[1] is not runs:
        made = function._fast_calls[key] = (spec, runs, make(function, spec, layout, args))
    return made[2]


def seen(function, key):
    """The closure :func:`remember` made for ``key``, if the specialization it runs is still the
    one to run (not a lean one whose guard has failed since); else None."""
    made = function._fast_calls.get(key)
    if made is None or made[2] is None or made[0].fallback not in (None, made[1]):
        return None
    return made[2]


def make(function, spec, layout, args):
    """The fast closure of ``function`` (a GradFunction) for arguments of the types of ``args``
    that the full path ran in ``spec`` with the gradient ``layout``; None when these arguments
    need the full path every time."""
    if spec.plan is not None or any(zero_d is not None or treedef is not None
                                    for treedef, zero_d, _, _ in layout):
        return None
    checks = []         # one line per argument: its exact type, an array's dtype and ndim
    for i, value in enumerate(args):
        cls = type(value)
        if cls is _ndarray:
            if value.ndim == 0:
                return None
            checks.append(f"type(a{i}) is not ndarray or (a{i}.dtype is not d{i} and a{i}.dtype != d{i}) "
                          f"or a{i}.ndim != {value.ndim}")
        elif cls in (float, int, bool) or isinstance(value, np.generic):
            checks.append(f"type(a{i}) is not c{i}")
        else:
            return None
    runs = spec.fallback if spec.fallback is not None else spec
    names = {"MISS": MISS, "ndarray": _ndarray, "FusionGuardFailed": FusionGuardFailed,
             "function": function, "spec": spec, "runs": runs, "layout": layout,
             "adjoint": runs.adjoint, "one": runs.one, "lean": runs.lean, "grad_only": function.mode == "grad",
             "gradient": _gradient, "scalar": _scalar, "dtypes": tuple(d for _, _, _, d in layout),
             "first_dtype": layout[0][3]}
    for i, value in enumerate(args):
        names[f"c{i}"] = type(value)
        names[f"d{i}"] = getattr(value, "dtype", None)
    unpack = f"    {''.join(f'a{i}, ' for i in range(len(args)))}= args\n" if args else ""
    test = "".join(f"    if {check}:\n        return MISS\n" for check in checks)
    if function.mode == "vjp":
        body = "    return function._vjp(spec, args, layout)\n"
    else:           # the unpacked names (no tuple of the arguments and the seed built per call)
        body = (_RUN_SINGLE if function.single else _RUN_TUPLE).replace(
            "adjoint(*args, one)", f"adjoint({''.join(f'a{i}, ' for i in range(len(args)))}one)")
    source = (f"def call(args):\n    if len(args) != {len(args)}:\n        return MISS\n"
              f"{unpack}{test}    function._last = spec\n{body}")
    filename = f"<srcgrad fast call of {function.__name__} #{next(_numbers)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)   # tracebacks
    exec(compile(source, filename, "exec"), names)  # noqa: S102
    call = names["call"]
    call.source = source        # for reading (and the tests)
    return call


# The rest of a closure's body (grad and value_and_grad): the adjoint with the seed bound in; a
# failing guard reruns the call with the fallbacks; other errors are located as in the full path.
_RUN = """    try:
        value, grads = adjoint(*args, one)
    except FusionGuardFailed:
        if not lean:
            raise
        function._fast = None       # the next call builds the closure on the fallback
        value, grads = function._run(function._fall_back(runs), "value_and_grad", args)
    except Exception as exc:        # re-raised, or as the located error
        error = function._located_error(exc, runs, "value_and_grad", args, ())
        if error is None:
            raise
        raise error from None
"""
_RUN_SINGLE = _RUN + """    g = grads[0]
    if type(g) is not ndarray or (g.dtype is not first_dtype and g.dtype != first_dtype):
        g = gradient(g, first_dtype)
    if grad_only:
        return g
    return (value if type(value) is float else scalar(value)), g
"""
_RUN_TUPLE = _RUN + """    grads = tuple(gradient(g, dtype) for g, dtype in zip(grads, dtypes))
    return grads if grad_only else (scalar(value), grads)
"""
