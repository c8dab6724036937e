"""CUDA array mode: an array program and its gradient as fused CUDA kernels.

    import srcgrad

    loss_and_grads = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3), target="cuda", arrays=True)
    loss, (dW1, db1, dW2, db2) = loss_and_grads(W1, b1, W2, b2, X, y)   # device or host arrays

Where map mode (:mod:`srcgrad.cuda.map_mode`) runs scalar code once per element, array mode runs
whole-array NumPy code (``X @ W1 + b1``, ``np.max(z, axis=1)``, gathers with labels) as a
sequence of CUDA kernels.  It starts from the same generated adjoint as the cpu target:

1. srcgrad generates the adjoint source (``target="python"``, identical to what the cpu backend
   compiles) for the argument kinds;
2. :mod:`srcgrad.cuda.array_trace` runs it on stand-ins with the arguments' static shapes and
   records a graph of array operations;
3. :mod:`srcgrad.cuda.array_plan` fuses elementwise chains, views and broadcasts into kernels,
   maps matrix products to the tiled GEMM (transposes by indexing, bias fused into the epilogue
   where it follows a product), reductions to shared-memory tree kernels, and allocates every
   buffer once.

A plan is built per shape signature: the shapes and dtypes of the array arguments and the values
of int/bool arguments.  Float scalars are passed at each call.

Calls: device arrays in give device arrays out — the value as a 1-element device array, the
gradients as device arrays *owned by the plan and overwritten by the next call with the same
shapes* (copy them to keep them; the training loop updates parameters from them in place, which
is the point: nothing is allocated per step).  With host (NumPy) arguments everything is copied
in and the results come back as a float and NumPy arrays.  ``check=False`` skips the per-call
status read (an out-of-range label); call :meth:`ArrayGradFunction.check` later instead.

Supported: straight-line array code — elementwise math, broadcasting, reductions with ``axis``
and ``keepdims``, 1-d/2-d matmul, basic slices and views, ``reshape``, gathers ``a[i]`` and
``a[rows, cols]``, creation functions.  Refused with a clear error: data-dependent branches
(use ``np.where``), loops that need a tape, NumPy functions without a CUDA rule.
"""

from __future__ import annotations

import numpy as np

from .. import kinds as K
from ..arguments import DifferentiatedFunction, working_precision
from ..errors import SrcgradError
from ..parse import unwrap_function
from ..program import build_module
from .device import host_numeric_array, is_device_array

__all__ = ["ArrayGradFunction"]


def _cuda():
    from numba import cuda
    return cuda


class ArrayGradFunction(DifferentiatedFunction):
    """``grad``/``value_and_grad`` of an array function, run as fused CUDA kernels."""

    def __init__(self, func, wrt=0, mode="grad", check=True):
        super().__init__(unwrap_function(func), wrt, mode)
        self.check_each_call = check

    def __repr__(self):
        return f"<srcgrad {self.mode} of {self.func.__name__} wrt={tuple(self.wrt_names)} target=cuda arrays>"

    # -- arguments ----------------------------------------------------------------------------
    def _classify(self, args, kwargs):
        items, on_device = [], False
        for index, (name, value) in enumerate(zip(self.params, self._bind(args, kwargs))):
            if is_device_array(value):
                on_device = True
                items.append(("array", value))
            elif isinstance(value, (float, np.floating)) or (index in self.wrt_indices and
                                                              isinstance(value, (int, np.integer))):
                items.append(("scalar", value))
            elif isinstance(value, (bool, int, np.integer, np.bool_)):
                items.append(("static", value))
            else:
                items.append(("array", host_numeric_array(value, name, self.func.__name__)))
        return items, on_device

    def _signature_key(self, items):
        key = []
        for tag, value in items:
            if tag == "array":
                key.append(("array", tuple(value.shape), np.dtype(value.dtype).str))
            elif tag == "scalar":
                key.append(("scalar",))
            else:
                key.append(("static", type(value).__name__, value))
        return tuple(key)

    def _precision(self, items):
        return working_precision(np.dtype(v.dtype) for tag, v in items
                                 if tag == "array" and np.dtype(v.dtype).kind == "f")

    # -- plans --------------------------------------------------------------------------------
    def plan_for(self, *args, **kwargs):
        """The compiled plan for these arguments (built on first use of a shape signature)."""
        items, _ = self._classify(args, kwargs)
        return self._plan(items)

    def _plan(self, items):
        return self._cached(self._signature_key(items), lambda: self._build(items))

    def _build(self, items):
        from . import array_plan
        return array_plan.compile_graph(self._trace(items), self.func.__name__)

    def plan_without_device(self, *args, **kwargs):
        """The kernel plan (source and signatures) for arguments given as NumPy arrays, without
        allocating anything on a device — for ``compile_ptx`` checks on machines without a GPU."""
        from . import array_plan
        items, _ = self._classify(args, kwargs)
        return array_plan.Plan(self._trace(items), self.func.__name__)

    def _trace(self, items):
        from . import array_trace
        precision = self._precision(items)
        kinds, arguments = [], {}
        for name, (tag, value) in zip(self.params, items):
            if tag == "array":
                dtype = np.dtype(value.dtype)
                kinds.append(K.kind_of_value(np.zeros((1,) * len(value.shape), dtype)))
                arguments[name] = ("array", tuple(value.shape), dtype)
            elif tag == "scalar":
                kinds.append(K.FLOAT)
                arguments[name] = ("scalar", np.dtype(precision))
            else:
                kinds.append(K.kind_of_value(value))
                arguments[name] = ("static", value)
        self._check_kinds(kinds)
        source, _, adjoint, _ = build_module(self.func, tuple(kinds), self.wrt_names, "python",
                                             self.single, precision)
        return array_trace.trace(source, adjoint, self.params, arguments, precision)

    # -- calls --------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        items, on_device = self._classify(args, kwargs)
        plan = self._plan(items)
        cuda = _cuda()
        inputs, scalars = {}, {}
        for name, (tag, value) in zip(self.params, items):
            if tag == "array":
                inputs[name] = value if is_device_array(value) else cuda.to_device(np.ascontiguousarray(value))
            elif tag == "scalar":
                scalars[name] = value
        outputs = plan.run(inputs, scalars)
        if self.check_each_call:
            plan.check()
        value, grads = outputs[0], outputs[1:]
        if on_device:
            grads = tuple(grads)
        else:
            value = float(value.copy_to_host()[0])
            grads = tuple(self._host(g, self.params[i], items[i]) for g, i in zip(grads, self.wrt_indices))
        result = grads[0] if self.single else grads
        return result if self.mode == "grad" else (value, result)

    @staticmethod
    def _host(buffer, name, item):
        array = buffer.copy_to_host()
        if item[0] == "scalar":
            return float(array[0])
        return array.reshape(np.shape(item[1]))

    def check(self):
        """Raise ``IndexError`` if a call since the last check gathered with an out-of-range index."""
        for plan in self._specializations.values():
            plan.check()

    def source_for(self, *args, **kwargs):
        """The generated CUDA kernel module for these arguments."""
        return self.plan_for(*args, **kwargs).source

    @property
    def source(self):
        if self._last is None:
            raise SrcgradError("call the function (or source_for(*args)) first: array-mode kernels "
                               "are generated per argument shape")
        return self._last.source
