"""Optimizers as compiled in-place update rules: SGD, Momentum (heavy ball / Nesterov), Adam.

Two ways to use them.

From Python, a small class holds the hyperparameters and the state arrays::

    opt = Momentum(params, lr=0.05, momentum=0.9)
    opt.step(params, grads)          # updates every array in ``params`` in place

Inside your own ``@numba.njit`` code, call the module-level compiled update rules on tuples of
arrays (any mix of shapes and of ndim, float32 or float64)::

    sgd_update(params, grads, lr)
    momentum_update(params, grads, velocity, lr, mu, nesterov)
    adam_update(params, grads, m, v, t, lr, b1, b2, eps)      # t: this step's number, from 1

or the uniform form every optimizer object exposes, convenient to pass an optimizer into a
compiled training loop::

    kernel, state, hyper = opt.kernel, opt.state_tuple(), opt.hyper_tuple()
    kernel(params, grads, state, hyper)                          # inside @njit code

One call updates all parameters; the loop over the parameter tuple is unrolled at compile time,
so there is no Python loop per step. Parameters must be C- or F-contiguous arrays (they are
updated through a flat view); gradients may have any layout.

For the common case, :class:`MinibatchLoop` is a ready compiled training loop: it gathers shuffled
minibatches of ``(X, y)``, calls a srcgrad ``value_and_grad`` and applies the optimizer, all in
one compiled call::

    loop = MinibatchLoop(value_and_grad(loss, wrt=(0, 1, 2, 3)), opt)
    total_loss = loop(params, X, y, order, batch_size)    # one epoch; params updated in place
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import types
from numba.core.errors import TypingError
from numba.extending import overload

from .. import compile_gc
from ..errors import DTypeError, FusionGuardFailed
from . import compile_ahead, gather_ahead
from .blas_threads import check_setting, run_with_threads
from .flat_kernels import _adam_flat, _flat_view, _momentum_flat, _sgd_flat
from .fused_runs import (_gather_batch, _run_momentum_steps, _run_sgd_steps,
                         loop_argument_types)

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "sgd_update", "momentum_update", "adam_update",
           "sgd_kernel", "momentum_kernel", "adam_kernel", "make_optimizer", "MinibatchLoop"]


# ------------------------------------------------------------------------------------------------
# Per-array kernels: one compile per dtype, shared by every parameter shape
# ------------------------------------------------------------------------------------------------

# (the kernels and the flat view: flat_kernels.py, shared with fused_sgd.py)


def _as_param_dtype(x, a):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_as_param_dtype)
def _ov_as_param_dtype(x, a):
    dt = a.dtype
    return lambda x, a: dt(x)


# ------------------------------------------------------------------------------------------------
# Tuple-level update rules (compile-time unrolled over the parameter tuple)
# ------------------------------------------------------------------------------------------------


def _tuple_len(name, tup):
    if isinstance(tup, types.BaseTuple):
        return len(tup)
    raise TypingError(
        f"srcgrad.optim.{name}: expected a tuple of arrays, got {tup} (pass tuple(params))"
    )


def _unrolled(kernel, tuple_names, scalar_names, n):
    """Source of ``impl(*tuple_names, *scalar_names)`` calling
    ``kernel(tuple_names[0][i], ..., *scalar_names)`` for every i < n (unrolled)."""
    args = ", ".join(list(tuple_names) + list(scalar_names))
    lines = [f"def impl({args}):"]
    for i in range(n):
        call_args = ", ".join([f"{t}[{i}]" for t in tuple_names] + list(scalar_names))
        lines.append(f"    kernel({call_args})")
    lines.append("    return None")
    ns = {"kernel": kernel}
    exec("\n".join(lines), ns)  # noqa: S102 - generated from integers and fixed names only
    return ns["impl"]


def _check_lengths(name, *tuples):
    n = _tuple_len(name, tuples[0])
    for t in tuples[1:]:
        if _tuple_len(name, t) != n:
            raise TypingError(
                f"srcgrad.optim.{name}: tuples of different lengths ({n} parameters, "
                f"{len(t)} gradients/state arrays)"
            )
    return n


_SHAPE_MESSAGE = "srcgrad.optim: gradient/state shape does not match parameter shape"


def _flat_source(var, t, p, role):
    """Source of a flat 1-d C-contiguous view of ``var`` (Numba type ``t``) whose element order is
    that of the parameter's flat view (``p``: the parameter's type); ``role`` is "param", "grad"
    or "state". Refuses, at typing time, what cannot be updated in place through a flat view."""
    if not isinstance(t, types.Array):
        what = "parameters" if role == "param" else "gradients/state"
        raise TypingError(f"srcgrad.optim: {what} must be arrays, got {t}")
    if role == "param":
        if not isinstance(t.dtype, types.Float):
            raise TypingError(f"srcgrad.optim: parameters must be float32/float64 arrays, got {t}")
        if not t.mutable:
            raise TypingError(f"srcgrad.optim: parameter array is read-only: {t}")
        if t.layout not in ("C", "F"):
            raise TypingError(
                f"srcgrad.optim: parameter arrays must be contiguous (updated in place through a "
                f"flat view), got layout {t.layout!r}: {t}")
    elif t.ndim != p.ndim:
        raise TypingError(
            f"srcgrad.optim: array of ndim {t.ndim} paired with a parameter of ndim {p.ndim}")
    if role == "state":
        if not t.mutable:
            raise TypingError(f"srcgrad.optim: state array is read-only: {t}")
        if t.layout != p.layout:
            raise TypingError(
                f"srcgrad.optim: state array layout {t.layout!r} must match parameter layout "
                f"{p.layout!r} (allocate state with np.zeros_like(param))")
    # a Fortran-ordered parameter is updated through its transpose (C-contiguous); the gradient
    # is read in the same element order, copied to a contiguous array when it is not one already
    if t.ndim == 1 and t.layout == "C":
        return var                      # already flat
    ordered = f"{var}.T" if p.layout == "F" else var
    if t.layout == p.layout:
        return f"flat({ordered})"               # (a C-contiguous array: the parameter's order)
    return f"np.ascontiguousarray({ordered}).reshape({var}.size)"


def _unrolled_flat(name, kernel, tuple_args, scalar_names):
    """``impl(*tuple names, *scalar_names)`` for an update rule on tuples of arrays: for each
    parameter i, a shape check and ``kernel(flat views of tuple[i]..., *scalar_names)``.
    ``tuple_args``: ``[(name, Numba tuple type, role)]``, the parameters first."""
    n = _check_lengths(name, *(t for _, t, _ in tuple_args))
    head = ", ".join([a for a, _, _ in tuple_args] + list(scalar_names))
    lines = [f"def impl({head}):"]
    for i in range(n):
        p = tuple_args[0][1][i]
        flats, differs = [], []
        for k, (arg, tup, role) in enumerate(tuple_args):
            var = f"a{i}_{k}"
            lines.append(f"    {var} = {arg}[{i}]")
            flats.append(_flat_source(var, tup[i], p, role))
            if k:
                differs += [f"a{i}_0.shape[{d}] != {var}.shape[{d}]" for d in range(p.ndim)]
        if differs:
            lines.append(f"    if {' or '.join(differs)}:")
            lines.append(f"        raise ValueError({_SHAPE_MESSAGE!r})")
        lines.append(f"    kernel({', '.join(flats + list(scalar_names))})")
    lines.append("    return None")
    ns = {"kernel": kernel, "np": np, "flat": _flat_view}
    exec("\n".join(lines), ns)  # noqa: S102 - generated from integers and fixed names only
    return ns["impl"]


def _sgd_tuple(params, grads, lr):  # pragma: no cover
    raise NotImplementedError


@overload(_sgd_tuple)
def _ov_sgd_tuple(params, grads, lr):
    return _unrolled_flat("sgd_update", _sgd_flat,
                          [("params", params, "param"), ("grads", grads, "grad")], ("lr",))


def _momentum_tuple(params, grads, velocity, lr, mu, nesterov):  # pragma: no cover
    raise NotImplementedError


@overload(_momentum_tuple)
def _ov_momentum_tuple(params, grads, velocity, lr, mu, nesterov):
    return _unrolled_flat("momentum_update", _momentum_flat,
                          [("params", params, "param"), ("grads", grads, "grad"),
                           ("velocity", velocity, "state")], ("lr", "mu", "nesterov"))


def _adam_tuple(params, grads, m, v, t, lr, b1, b2, eps):  # pragma: no cover
    raise NotImplementedError


@overload(_adam_tuple)
def _ov_adam_tuple(params, grads, m, v, t, lr, b1, b2, eps):
    return _unrolled_flat("adam_update", _adam_flat,
                          [("params", params, "param"), ("grads", grads, "grad"),
                           ("m", m, "state"), ("v", v, "state")],
                          ("t", "lr", "b1", "b2", "eps"))


@numba.njit(cache=True)
def sgd_update(params, grads, lr):
    """``p -= lr * g`` for every pair; in place. Callable from Python and from njit code."""
    _sgd_tuple(params, grads, lr)


@numba.njit(cache=True)
def momentum_update(params, grads, velocity, lr, mu, nesterov=False):
    """Heavy-ball momentum (PyTorch convention), in place.

    ``v = mu*v + g``; then ``p -= lr*v``, or with ``nesterov`` ``p -= lr*(g + mu*v)``.
    """
    _momentum_tuple(params, grads, velocity, lr, mu, nesterov)


@numba.njit(cache=True)
def adam_update(params, grads, m, v, t, lr, b1, b2, eps):
    """Adam (Kingma & Ba), in place. ``t`` is the number of this step, starting at 1.

    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``;
    ``p -= lr * (m/(1-b1**t)) / (sqrt(v/(1-b2**t)) + eps)``.
    """
    _adam_tuple(params, grads, m, v, t, lr, b1, b2, eps)


# Uniform kernels: kernel(params, grads, state, hyper), with state/hyper from the optimizer object.


@numba.njit(cache=True)
def sgd_kernel(params, grads, state, hyper):
    _sgd_tuple(params, grads, hyper[0])


@numba.njit(cache=True)
def momentum_kernel(params, grads, state, hyper):
    _momentum_tuple(params, grads, state[0], hyper[0], hyper[1], hyper[2] != 0.0)


@numba.njit(cache=True)
def adam_kernel(params, grads, state, hyper):
    counter = state[2]
    counter[0] += 1
    _adam_tuple(params, grads, state[0], state[1], counter[0], hyper[0], hyper[1], hyper[2],
                hyper[3])


# The same kernels for MinibatchLoop, which calls the update only from compiled code, through a
# function pointer: compiled without the CPython wrapper (unboxing nested tuples of arrays is about
# a third of a kernel's compile). Separate functions, not a second dispatcher of the same Python
# function: Numba's on-disk cache names entries by function, not by compile options.
@numba.njit(cache=True, no_cpython_wrapper=True)
def _sgd_loop_kernel(params, grads, state, hyper):
    _sgd_tuple(params, grads, hyper[0])


@numba.njit(cache=True, no_cpython_wrapper=True)
def _momentum_loop_kernel(params, grads, state, hyper):
    _momentum_tuple(params, grads, state[0], hyper[0], hyper[1], hyper[2] != 0.0)


@numba.njit(cache=True, no_cpython_wrapper=True)
def _adam_loop_kernel(params, grads, state, hyper):
    counter = state[2]
    counter[0] += 1
    _adam_tuple(params, grads, state[0], state[1], counter[0], hyper[0], hyper[1], hyper[2],
                hyper[3])


_LOOP_KERNELS = {sgd_kernel: _sgd_loop_kernel, momentum_kernel: _momentum_loop_kernel,
                 adam_kernel: _adam_loop_kernel}


# ------------------------------------------------------------------------------------------------
# Python classes
# ------------------------------------------------------------------------------------------------


def _as_tuple(arrays, what):
    """The arrays of ``arrays``: a sequence of arrays, or a pytree (nested tuples/lists/dicts,
    like srcgrad's gradients of a pytree argument), flattened depth first."""
    from srcgrad.pytree import leaves
    if isinstance(arrays, np.ndarray):
        raise TypeError(f"{what} must be a sequence of arrays, got a single array")
    t = tuple(leaves(arrays)) if isinstance(arrays, (tuple, list, dict)) else tuple(arrays)
    for a in t:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what} must be numpy arrays (or a tuple/list/dict of them), got "
                            f"{type(a).__name__}")
    return t


def _same_structure(params, grads):
    from srcgrad.pytree import treedef_of
    if isinstance(params, (tuple, list, dict)) and isinstance(grads, (tuple, list, dict)) and \
            any(isinstance(p, (tuple, list, dict)) for p in
                (params.values() if isinstance(params, dict) else params)):
        if treedef_of(params) != treedef_of(grads):
            raise ValueError("grads do not have the structure of params")


class Optimizer:
    """Base class. Subclasses set ``kind``, ``kernel``, ``_state_names`` and ``hyper_tuple``."""

    kind = "base"
    kernel = None
    _state_names: tuple = ()

    def __init__(self, params=None):
        self._state = None  # dict name -> list of arrays
        if params is not None:
            self.init(params)

    # state ----------------------------------------------------------------------------------
    def init(self, params):
        """Allocate the state arrays (zeros like each parameter)."""
        params = _as_tuple(params, "params")
        for p in params:
            if p.dtype not in (np.float32, np.float64):
                raise TypeError(f"parameters must be float32 or float64, got {p.dtype}")
        self._state = {
            name: tuple(np.zeros_like(p, order="K") for p in params) for name in self._state_names
        }
        self._shapes = tuple((p.shape, p.dtype) for p in params)
        self._extra_init()
        return self

    def _extra_init(self):
        pass

    def _ensure(self, params):
        if self._state is None:
            self.init(params)
        elif len(params) != len(self._shapes) or any(
            p.shape != s or p.dtype != d for p, (s, d) in zip(params, self._shapes)
        ):
            raise ValueError(
                f"{type(self).__name__}: parameters do not match the ones the state was built "
                f"for ({[s for s, _ in self._shapes]})"
            )

    def state_tuple(self):
        """The ``state`` argument of ``self.kernel`` (a tuple of tuples of arrays)."""
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}: call init(params) or step() first")
        return tuple(self._state[name] for name in self._state_names)

    def hyper_tuple(self):  # pragma: no cover - overridden
        raise NotImplementedError

    # stepping -------------------------------------------------------------------------------
    def step(self, params, grads):
        """Update ``params`` (a sequence of arrays, or a pytree of them) in place from ``grads``
        (the same structure)."""
        _same_structure(params, grads)
        params = _as_tuple(params, "params")
        grads = _as_tuple(grads, "grads")
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
        for p, g in zip(params, grads):
            if p.shape != g.shape:
                raise ValueError(f"gradient shape {g.shape} != parameter shape {p.shape}")
        self._ensure(params)
        type(self).kernel(params, grads, self.state_tuple(), self.hyper_tuple())

    # checkpoints ----------------------------------------------------------------------------
    def _hyper_dict(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def state_dict(self):
        """A flat ``{str: numpy array or scalar}`` dict (store it with ``np.savez``)."""
        d = {"kind": np.array(self.kind)}
        for k, val in self._hyper_dict().items():
            d[k] = np.array(val)
        d["n_params"] = np.array(-1 if self._state is None else len(self._shapes))
        if self._state is not None:
            for name in self._state_names:
                for i, a in enumerate(self._state[name]):
                    d[f"{name}.{i}"] = a.copy()
        self._extra_state(d)
        return d

    def _extra_state(self, d):
        pass

    def load_state_dict(self, d):
        """Restore hyperparameters and state saved by :meth:`state_dict` (copies the arrays)."""
        kind = str(np.asarray(d["kind"]))
        if kind != self.kind:
            raise ValueError(f"state dict is for optimizer {kind!r}, not {self.kind!r}")
        for k in self._hyper_dict():
            setattr(self, k, type(getattr(self, k))(np.asarray(d[k])))
        n = int(np.asarray(d["n_params"]))
        if n < 0:
            self._state = None
        elif self._state_names:
            state = {}
            for name in self._state_names:
                arrays = []
                for i in range(n):
                    a = np.asarray(d[f"{name}.{i}"])
                    if self._state is not None:
                        if n != len(self._shapes):
                            raise ValueError(
                                f"state dict holds {n} parameters, optimizer has "
                                f"{len(self._shapes)}"
                            )
                        ref = self._state[name][i]
                        if a.shape != ref.shape or a.dtype != ref.dtype:
                            raise ValueError(
                                f"state {name}.{i}: saved {a.shape} {a.dtype}, "
                                f"parameters have {ref.shape} {ref.dtype}"
                            )
                        arrays.append(np.array(a, copy=True, order="K"))
                    else:
                        arrays.append(np.array(a, copy=True, order="K"))
                state[name] = tuple(arrays)
            self._state = state
            self._shapes = tuple((a.shape, a.dtype) for a in state[self._state_names[0]])
        self._load_extra(d)
        return self

    def _load_extra(self, d):
        pass


class SGD(Optimizer):
    """Plain stochastic gradient descent: ``p -= lr * g``."""

    kind = "sgd"
    kernel = sgd_kernel
    _state_names = ()

    def __init__(self, params=None, *, lr=0.01):
        self.lr = float(lr)
        super().__init__(params)

    def hyper_tuple(self):
        return (float(self.lr),)

    def _hyper_dict(self):
        return {"lr": float(self.lr)}


class Momentum(Optimizer):
    """Heavy-ball momentum, optionally Nesterov (PyTorch's SGD-with-momentum convention)."""

    kind = "momentum"
    kernel = momentum_kernel
    _state_names = ("velocity",)

    def __init__(self, params=None, *, lr=0.01, momentum=0.9, nesterov=False):
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        super().__init__(params)

    def hyper_tuple(self):
        return (float(self.lr), float(self.momentum), 1.0 if self.nesterov else 0.0)

    def _hyper_dict(self):
        return {"lr": float(self.lr), "momentum": float(self.momentum),
                "nesterov": bool(self.nesterov)}


class Adam(Optimizer):
    """Adam with bias correction."""

    kind = "adam"
    kernel = adam_kernel
    _state_names = ("m", "v")

    def __init__(self, params=None, *, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
        self.lr = float(lr)
        self.b1 = float(b1)
        self.b2 = float(b2)
        self.eps = float(eps)
        self._t = np.zeros(1, np.int64)
        super().__init__(params)

    @property
    def t(self):
        """Number of steps taken."""
        return int(self._t[0])

    def _extra_init(self):
        self._t[0] = 0

    def state_tuple(self):
        return super().state_tuple() + (self._t,)

    def hyper_tuple(self):
        return (float(self.lr), float(self.b1), float(self.b2), float(self.eps))

    def _hyper_dict(self):
        return {"lr": float(self.lr), "b1": float(self.b1), "b2": float(self.b2),
                "eps": float(self.eps)}

    def _extra_state(self, d):
        d["t"] = np.array(self.t, dtype=np.int64)

    def _load_extra(self, d):
        self._t[0] = int(np.asarray(d["t"]))


_OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(kind, params=None, **hyper):
    """``make_optimizer('momentum', params, lr=0.05, momentum=0.9)``."""
    try:
        cls = _OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r}; choose from {sorted(_OPTIMIZERS)}") from None
    return cls(params, **hyper)


# ------------------------------------------------------------------------------------------------
# A compiled minibatch training loop
# ------------------------------------------------------------------------------------------------


@numba.njit(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _gather_rows(dst, src, order, start):
    """``dst[r] = src[order[start + r]]`` for every row r of ``dst`` (C-contiguous arrays of any
    ndim, copied as flat rows: an explicit loop is twice as fast as Numba's row assignment)."""
    rows = dst.shape[0]
    dst_flat = dst.reshape(rows, -1)
    src_flat = src.reshape(src.shape[0], -1)
    for r in range(rows):
        sample = order[start + r]
        for k in range(dst_flat.shape[1]):
            dst_flat[r, k] = src_flat[sample, k]


@numba.njit(cache=True, nogil=True)   # see fused_runs: the GIL is released while it trains
def _run_minibatches(adjoint, update, params, X, y, order, batch_size, first, stop, state, hyper,
                     Xb, yb, scale, seed, progress):
    """Minibatches ``first <= i < stop`` of the sample order ``order``: gather each batch into
    ``Xb``/``yb`` (their first rows for a shorter last batch; integer samples multiplied by
    ``scale`` unless it is None: ``fused_runs._batch_value``), ``loss, grads = adjoint(*params,
    Xb, yb, seed)`` (srcgrad's generated adjoint, seed 1), ``update(params, grads, state, hyper)``.
    Returns the sum of the batch losses, each weighted by its number of samples. ``progress``
    holds the batch being computed and the total before it: an adjoint that stops on an exception
    (a fused loop's size guard, before the batch's update) leaves where to go on from."""
    total = 0.0
    for batch in range(first, stop):
        progress[0] = batch
        progress[1] = total
        Xc, yc, size = _gather_batch(X, y, order, batch * batch_size, batch_size, Xb, yb, scale)
        loss, grads = adjoint(*params, Xc, yc, seed)
        update(params, grads, state, hyper)
        total += loss * size
    return total


def _batch_scale(x_scale, X, params):
    """``x_scale`` as the compiled gather multiplies integer samples by: None (samples copied as
    they are), else a NumPy float of the parameters' dtype. Refuses (:class:`DTypeError`) a
    scale for samples that are not integers and a scale that is not a finite real number."""
    if x_scale is None:
        return None
    if X.dtype.kind not in "iu":
        raise DTypeError(
            f"MinibatchLoop: x_scale converts integer samples (e.g. uint8 pixels) in the gather; "
            f"X has dtype {X.dtype} (pass float samples without x_scale)")
    if isinstance(x_scale, (bool, np.bool_)) or not isinstance(
            x_scale, (int, float, np.integer, np.floating)):
        raise DTypeError(f"MinibatchLoop: x_scale must be a real number, got "
                         f"{type(x_scale).__name__} {x_scale!r}")
    value = np.result_type(*params).type(x_scale)
    if not np.isfinite(value):
        raise ValueError(f"MinibatchLoop: x_scale must be finite, got {x_scale!r}")
    return value


def _compiled_signature(dispatcher, argtypes):
    """The full signature (with the return type) of ``dispatcher`` compiled for ``argtypes``."""
    dispatcher.compile(argtypes)
    return dispatcher.overloads[argtypes].signature


class MinibatchLoop:
    """SGD-style training over minibatches as one compiled call.

    ``loss_and_grads`` is a srcgrad ``value_and_grad(loss, wrt=...)`` of a loss
    ``loss(*params, X_batch, y_batch)`` that differentiates with respect to every parameter;
    ``optimizer`` is an :class:`Optimizer` (its state is used and updated). Calling the loop::

        total = loop(params, X, y, order, batch_size, first=0, stop=None, x_scale=None)

    trains on minibatches ``first <= i < stop`` (default: all) of the samples ``order`` (e.g. a
    permutation of ``range(len(X))``), updates ``params`` in place and returns the sum of the batch
    losses weighted by batch size. A shorter last batch is used as it is.

    ``x_scale``: integer samples (e.g. MNIST's uint8 pixels, ``load_mnist(raw=True)``) become
    floats in the gather: each batch holds ``dtype(X[i]) * dtype(x_scale)``, ``dtype`` the
    parameters' float type (so ``x_scale=MNIST_SCALE`` with float32 parameters gives batches
    bitwise equal to ``load_mnist()``'s float32 images, and float64 parameters the float64
    products). The epoch reads a quarter of float32's bytes from memory; the gradient sees float
    batches. Without it, samples of any dtype reach the loss as they are (integer inputs too).
    A scale with samples that are not integers raises :class:`srcgrad.errors.DTypeError`.

    Why a class and not a plain ``@njit`` function calling the gradient: Numba links a called
    function's code into the caller and optimizes the whole again, which for a large generated
    adjoint took ~10 s per process. Here the loop receives the compiled gradient and update as
    function pointers (Numba first-class functions), so it compiles in under a second, once: the
    loop does not depend on which gradient it calls, and its machine code is cached on disk.
    ``blas_threads`` ("auto", an int, None): see :mod:`srcgrad.training.blas_threads`; after a
    call, ``blas_threads_used`` is {threads: batches} of that call (None: the BLAS's own
    setting) and ``blas_threads_chosen`` holds "auto"'s measurement per shapes
    (``.threads``, ``.summary()``).
    ``gather_ahead`` (False, "auto", True): for plain SGD and Momentum (the fused step), gather
    the next batches on a second thread while the step trains (:mod:`srcgrad.training.
    gather_ahead`). False (the default): never; "auto": two more candidates of
    ``blas_threads="auto"``'s measured choice, ``(n, "ahead")`` and ``(1, "ahead")``, kept only
    where they measured faster (only with a second CPU); True: always (with a fixed or the BLAS's
    own thread count too). Not the default: on this 2-core machine it was 5-12% slower in the
    quietest windows and faster only under load (benchmarks/results/gather_ahead.md).
    """

    def __init__(self, loss_and_grads, optimizer, blas_threads="auto", gather_ahead=False):
        if not hasattr(loss_and_grads, "specialize"):
            raise TypeError("MinibatchLoop needs a srcgrad value_and_grad(...) object, got "
                            f"{type(loss_and_grads).__name__}")
        if getattr(loss_and_grads, "mode", "value_and_grad") != "value_and_grad":
            raise TypeError("MinibatchLoop needs value_and_grad(...) (the loss and the gradients), "
                            f"got {loss_and_grads!r}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a srcgrad.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        self.loss_and_grads = loss_and_grads
        self.optimizer = optimizer
        self.blas_threads, self.blas_threads_chosen = check_setting(blas_threads), {}
        self.blas_threads_used = {}     # the last call's {BLAS threads: batches}
        if gather_ahead not in ("auto", True, False):
            raise ValueError(f'gather_ahead must be "auto", True or False, got {gather_ahead!r}')
        self.gather_ahead = gather_ahead
        self._rings = {}        # gather_ahead: batch shape -> its ring of buffers
        self.fused = ()         # parameters whose SGD update is fused into their gradient's GEMM
        self._buffers, self._argument_types = {}, {}     # (fused_runs.loop_argument_types)
        self._entries = {}      # (argument types, lean) -> (compiled loop entry, gradient, update kernel)
        # argument types whose lean adjoint (fused loops without fallbacks) met sizes its guards
        # do not allow (an operand stretched along a size-1 axis): they run the full adjoint
        self._not_lean = set()

    def _pieces(self, params, Xb, yb, tree=None, lean=False, ahead=None):
        """The compiled adjoint and its seed, the update kernel, and their function types
        (``lean``: the adjoint without the fused loops' fallback branches where srcgrad allows).
        ``ahead(gradient argtypes)``: jobs a helper process compiles meanwhile (compile_ahead)."""
        specialize = self.loss_and_grads.specialize_lean if lean else self.loss_and_grads.specialize
        if tree is not None:        # loss(params, X, y) with a pytree of parameters
            spec = specialize(tree, Xb, yb)
        else:
            spec = specialize(*params, Xb, yb)
        plan = getattr(spec, "plan", None)
        if plan is not None and plan.captures:
            names = ", ".join(sorted({c.name for c in plan.captures}))
            raise TypeError(f"MinibatchLoop: the loss reads module data or closure variables "
                            f"({names}); pass them as arguments (the compiled loop calls the "
                            "gradient with the parameters and the batch only)")
        gradient, seed = spec.adjoint, spec.one
        grad_args = tuple(numba.typeof(a) for a in (*params, Xb, yb, seed))
        helper = ahead and compile_ahead.start(ahead(grad_args), alongside=(gradient, grad_args))
        with compile_ahead.waiting(helper, self.loss_and_grads) as self.compile_timing:
            grad_sig = _compiled_signature(gradient, grad_args)
        grads_type = grad_sig.return_type.types[1]
        if not isinstance(grads_type, types.BaseTuple) or len(grads_type) != len(params):
            raise TypeError(f"{self.loss_and_grads!r} must differentiate with respect to all "
                            f"{len(params)} parameters (wrt=(0, ..., {len(params) - 1}))")
        kernel = type(self.optimizer).kernel
        kernel = _LOOP_KERNELS.get(kernel, kernel)   # a user's subclass: its own kernel
        state, hyper = self.optimizer.state_tuple(), self.optimizer.hyper_tuple()
        update_sig = _compiled_signature(
            kernel, (numba.typeof(params), grads_type, numba.typeof(state), numba.typeof(hyper)))
        return (gradient, seed, kernel, types.FunctionType(grad_sig), types.FunctionType(update_sig),
                getattr(spec, "lean", False))

    @property
    def ahead_candidate(self):
        """Whether ``blas_threads="auto"`` also measures the gather ahead (see the class)."""
        return self.gather_ahead == "auto" and type(self.optimizer) in (SGD, Momentum) and \
            gather_ahead.available() and gather_ahead.cpus() > 1

    def __call__(self, params, X, y, order, batch_size, first=0, stop=None, x_scale=None):
        train = self._train if x_scale is None else functools.partial(self._train,
                                                                      x_scale=x_scale)
        return run_with_threads(self, train, params, X, y, order, batch_size, first, stop)

    def _train(self, params, X, y, order, batch_size, first=0, stop=None, ahead=None,
               x_scale=None):
        given = params
        # loss(params, X, y) with params a pytree: the compiled gradient takes its leaves
        tree = params if isinstance(params, (tuple, list, dict)) and \
            len(getattr(self.loss_and_grads, "params", ())) == 3 else None
        params = _as_tuple(params, "params")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        order = np.asarray(order, dtype=np.int64)
        X = np.ascontiguousarray(X)         # (no copy when it already is)
        y = np.ascontiguousarray(y)
        n_batches = -(-order.shape[0] // batch_size)
        stop = n_batches if stop is None else min(int(stop), n_batches)
        used = order[int(first) * batch_size:stop * batch_size]
        if used.size and (used.min() < 0 or used.max() >= X.shape[0]):
            raise ValueError(f"order holds sample indices outside 0..{X.shape[0] - 1}")
        self.optimizer._ensure(params)
        scale = _batch_scale(x_scale, X, params)
        batch_dtype = X.dtype if scale is None else scale.dtype
        key = (batch_size, X.shape[1:], batch_dtype, y.shape[1:], y.dtype)
        if key not in self._buffers:
            self._buffers[key] = (np.empty((batch_size,) + X.shape[1:], batch_dtype),
                                  np.empty((batch_size,) + y.shape[1:], y.dtype))
        Xb, yb = self._buffers[key]
        state, hyper = self.optimizer.state_tuple(), self.optimizer.hyper_tuple()
        rest = (params, X, y, order, batch_size, int(first), stop, state, hyper, Xb, yb, scale)
        argtypes = loop_argument_types(self._argument_types, rest)
        key = (argtypes, argtypes not in self._not_lean)
        rule = {SGD: "sgd", Momentum: "momentum"}.get(type(self.optimizer))
        if key not in self._entries and tree is None and rule is not None:
            from .fused_sgd import fused_step      # SGD, Momentum: the update inside the gradient
            helper = compile_ahead.start(
                compile_ahead.sgd_jobs(_run_sgd_steps, argtypes) if rule == "sgd" else
                compile_ahead.momentum_jobs(_run_momentum_steps, argtypes))
            with compile_ahead.waiting(helper, self.loss_and_grads) as self.compile_timing:
                fused = fused_step(self.loss_and_grads, params, Xb, yb, lean=key[1], rule=rule,
                                   state=state[0] if rule == "momentum" else None)
            if fused is not None:
                step, seed, step_type, lean, self.fused = fused
                progress = np.zeros(2)
                runner = _run_sgd_steps if rule == "sgd" else _run_momentum_steps
                hyper_types = (types.float64,) if rule == "sgd" else \
                    (types.float64,) * 3 + (numba.typeof(state[0]),)
                signature = (step_type, argtypes[0]) + argtypes[1:7] + hyper_types + \
                    argtypes[9:] + (numba.typeof(seed), numba.typeof(progress))
                with compile_gc.fewer_collections():
                    runner.compile(signature)
                self._entries[key] = (runner.overloads[signature].entry_point,
                                      step, rule, seed, lean)
        if key not in self._entries:
            progress, kernel = np.zeros(2), type(self.optimizer).kernel
            ahead = None if tree is not None else lambda grad_args: compile_ahead.minibatch_jobs(
                _run_minibatches, _LOOP_KERNELS.get(kernel, kernel), grad_args, argtypes,
                numba.typeof(progress))
            gradient, seed, kernel, grad_type, update_type, lean = self._pieces(params, Xb, yb, tree,
                                                                               key[1], ahead)
            signature = (grad_type, update_type) + argtypes + (numba.typeof(seed), numba.typeof(progress))
            with compile_gc.fewer_collections():
                _run_minibatches.compile(signature)
            # the compiled entry for exactly these types, called with the Dispatcher objects as
            # the signature's function pointers (calling _run_minibatches itself would type them
            # as Dispatchers and compile the linked variant this class exists to avoid)
            self._entries[key] = (_run_minibatches.overloads[signature].entry_point,
                                  gradient, kernel, seed, lean)
        entry, gradient, kernel, seed, lean = self._entries[key]
        progress = np.zeros(2)
        if ahead is None:
            ahead = self.gather_ahead is True
        try:
            if ahead and kernel in ("sgd", "momentum") and gather_ahead.available():
                hyper_values = (float(hyper[0]),) if kernel == "sgd" else \
                    (*map(float, hyper[:3]), state[0])
                return gather_ahead.train(self, kernel, gradient, rest, hyper_values, seed,
                                          progress)
            if kernel == "sgd":         # the fused SGD step: the learning rate, no state
                return entry(gradient, *rest[:7], float(hyper[0]), *rest[9:], seed, progress)
            if kernel == "momentum":    # lr, momentum, nesterov and the velocity
                return entry(gradient, *rest[:7], *map(float, hyper[:3]), state[0], *rest[9:],
                             seed, progress)
            return entry(gradient, kernel, *rest, seed, progress)
        except FusionGuardFailed:
            if not lean:
                raise
        # a fused loop's size guard failed in batch progress[0], before its update (sizes the
        # fused loops do not handle, e.g. a batch of one sample broadcast along a size-1 axis):
        # that batch and the rest run with the adjoint that keeps the statements as written
        self._not_lean.add(argtypes)
        batch, total = int(progress[0]), float(progress[1])
        return total + self._train(given, X, y, order, batch_size, first=batch, stop=stop,
                                   x_scale=x_scale)
