"""Arguments of a differentiated function, for every front door.

The three callables users get — :class:`srcgrad.api.GradFunction` (python and cpu targets),
:class:`srcgrad.cuda.map_mode.MapGradFunction` and :class:`srcgrad.cuda.array_mode.ArrayGradFunction`
— share what is here, below the API and above nothing of the pipeline:

* :class:`DifferentiatedFunction`, their base: the function, its parameters, the parsed ``wrt``
  (:func:`parse_wrt`), binding a call's arguments, checking that ``wrt`` names float arguments,
  the argument kinds, and the cache of specializations, each built once under :data:`BUILD_LOCK`;
* the working precision (:func:`working_precision`, one rule; :func:`precision_of` and
  :func:`numba_precision` say which values decide it for the python/cpu targets);
* call keys (:func:`call_key`, :func:`tree_key`): the cheap key of a call's argument types by
  which a repeated call finds its specialization;
* small conversions of argument and result values (0-d arrays, float32 constants, dtypes).
"""
import inspect
import threading

import numpy as np

from . import kinds as K

# One lock for building specializations (transforming, writing and compiling a module) in every
# front door: a second thread asking for the same specialization waits for the first.
BUILD_LOCK = threading.RLock()


def parse_wrt(wrt, params, fname):
    """``(indices, single)`` for ``wrt``: an argument position or name, or a tuple/list of them
    (``single`` is False for a tuple/list: the gradients then come as a tuple)."""
    single = not isinstance(wrt, (tuple, list))
    items = [wrt] if single else list(wrt)
    if not items:
        raise ValueError(f"wrt must name at least one argument of {fname}")
    indices = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str, np.integer)):
            raise TypeError(f"wrt entries must be argument positions (int) or names (str), got {item!r}")
        if isinstance(item, str):
            if item not in params:
                raise ValueError(f"wrt={item!r}: {fname} has no parameter named {item!r} "
                                 f"(parameters: {', '.join(params)})")
            index = params.index(item)
        else:
            index = int(item)
            if not 0 <= index < len(params):
                raise ValueError(f"wrt={index}: {fname} has {len(params)} parameter(s), so positions "
                                 f"0..{len(params) - 1} are valid")
        if index in indices:
            raise ValueError(f"wrt names argument {params[index]!r} twice")
        indices.append(index)
    return indices, single


class DifferentiatedFunction:
    """What every front door shares: ``func`` with its ``params``, ``wrt_indices``/``wrt_names``
    and ``single`` from ``wrt``, the call's ``mode``, argument binding, the ``wrt`` kind check,
    and ``_specializations`` (key -> what the front door builds for it; ``_last`` is the latest
    one used, for ``.source``)."""

    def __init__(self, func, wrt, mode):
        self.func = func
        self.mode = mode
        self.signature = inspect.signature(func)
        self.params = list(self.signature.parameters)
        self.wrt_indices, self.single = parse_wrt(wrt, self.params, func.__name__)
        self.wrt_names = [self.params[i] for i in self.wrt_indices]
        self._specializations = {}
        self._last = None

    def _bind(self, args, kwargs):
        """The call's argument values in parameter order (defaults applied); a TypeError that
        shows the function's signature when they do not fit it."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.func.__name__}{self.signature}: {exc}") from None
        bound.apply_defaults()
        return tuple(bound.arguments[p] for p in self.params)

    def kinds_of(self, values):
        """The kind of each argument value, checked (a TypeError naming an argument that is not
        a number or an array of numbers)."""
        kinds = []
        for name, value in zip(self.params, values):
            try:
                kinds.append(K.kind_of_value(value))
            except TypeError as exc:
                raise TypeError(f"argument {name!r} of {self.func.__name__}: {exc}") from None
        return self._check_kinds(kinds)

    def _check_kinds(self, kinds):
        """``kinds`` as a tuple, after checking there is one per parameter and that every
        ``wrt`` argument is a float or a float array."""
        if len(kinds) != len(self.params):
            raise TypeError(f"{self.func.__name__} takes {len(self.params)} arguments, got {len(kinds)}")
        for index in self.wrt_indices:
            if not kinds[index].is_float:
                raise TypeError(
                    f"cannot differentiate with respect to argument {self.params[index]!r} of "
                    f"{self.func.__name__}: it is a {kinds[index]} value; expected a float or a "
                    "float32/float64 array")
        return tuple(kinds)

    def _cached(self, key, build):
        """The specialization for ``key``, calling ``build()`` the first time (once, under
        :data:`BUILD_LOCK`: concurrent first calls build it once)."""
        spec = self._specializations.get(key)
        if spec is None:
            with BUILD_LOCK:
                spec = self._specializations.get(key)
                if spec is None:
                    spec = build()
                    self._specializations[key] = spec
        self._last = spec
        return spec


# -- working precision -----------------------------------------------------------------------------

def working_precision(dtypes):
    """The working precision decided by these float dtypes: float32 when there is at least one and
    all are float32, else float64.  Which values decide is each front door's rule (Python floats
    never do: like NumPy's weak scalars they do not promote float32 arrays)."""
    seen32 = False
    for dtype in dtypes:
        if dtype != np.float32:
            return "float64"
        seen32 = True
    return "float32" if seen32 else "float64"


def precision_of(values):
    """The python/cpu targets' working precision: float32 when the float inputs are float32 (and
    none is a float64 array). Float arrays and float32 scalars decide; a float64 NumPy scalar
    does not (compiled code would otherwise promote every float32 array it touches)."""
    return working_precision(_deciding_dtypes(values))


def _deciding_dtypes(values):
    for value in values:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and dtype.kind == "f" and (dtype == np.float32 or isinstance(value, np.ndarray)):
            yield dtype


def numba_precision(nbtypes):
    """:func:`precision_of` for arguments given as Numba types (a call from ``@njit`` code)."""
    from numba.core import types as nt

    def deciding():
        for t in nbtypes:
            dtype = t.dtype if isinstance(t, nt.Array) else t
            if isinstance(dtype, nt.Float) and (dtype.bitwidth == 32 or isinstance(t, nt.Array)):
                yield np.dtype(f"float{dtype.bitwidth}")
    return working_precision(deciding())


# -- call keys -------------------------------------------------------------------------------------

def call_key(values):
    """(dtype, ndim) of each array and the type of each scalar argument: everything the kinds and
    the working precision depend on; None when an argument needs the full path (a tuple, a 0-d
    array, anything else)."""
    key = []
    for value in values:
        cls = type(value)
        if cls is np.ndarray:
            if value.ndim == 0:
                return None
            key.append((value.dtype.char, value.ndim))
        elif cls in (float, int, bool) or isinstance(value, np.generic):
            key.append(cls)
        else:
            return None
    return tuple(key)


def tree_key(values):
    """Like :func:`call_key`, through tuples, lists and dicts (their types, keys and leaves)."""
    key = []
    for value in values:
        cls = type(value)
        if cls is np.ndarray:
            if value.ndim == 0:
                return None
            key.append((value.dtype.char, value.ndim))
        elif cls in (float, int, bool) or isinstance(value, np.generic):
            key.append(cls)
        elif cls is tuple or cls is list:
            inner = tree_key(value)
            if inner is None:
                return None
            key.append((cls, inner))
        elif cls is dict:
            inner = tree_key(list(value.values()))
            if inner is None:
                return None
            key.append((cls, tuple(value), inner))
        elif value is None:
            key.append(None)
        else:
            return None
    return tuple(key)


# -- argument and result values --------------------------------------------------------------------

def prepare(value):
    """A 0-d array runs as the scalar it holds."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def to_python_scalar(value):
    """A float result as a Python float (NumPy float scalars included); anything else as is."""
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def as_float32(values):
    """Python floats read from module data or closures, in float32 working precision: float32
    scalars (a float64 scalar would make compiled code promote the arrays it touches)."""
    return [np.float32(v) if type(v) is float else v for v in values]


def dtype_of(value):
    return value.dtype if isinstance(value, np.ndarray) else None


def in_dtype(grad, dtype):
    """An array gradient in its argument's dtype: a float32 array mixed with float64 arrays or
    Python floats works in float64 (NumPy's promotion; compiled code also promotes Python floats)
    but its gradient is float32, like the argument."""
    if dtype is not None and isinstance(grad, np.ndarray) and grad.dtype != dtype:
        return grad.astype(dtype)
    return grad
