"""CUDA map mode: the gradient of a scalar function, one GPU thread per element.

    import srcgrad.cuda

    @srcgrad.cuda.grad(wrt=(0, 4))
    def call_price(S, K, T, r, sigma):      # scalar code: math.*, branches, loops, helpers
        ...

    dS, dsigma = call_price(S, K, T, r, sigma)

Arguments are arrays (host NumPy arrays, or device arrays: Numba device arrays and anything with
``__cuda_array_interface__``) and scalars; they broadcast like a ufunc, and each thread evaluates
the function and its adjoint (compiled as CUDA device functions by :mod:`srcgrad.cuda.map_runtime`)
for one element.  Results come back where the inputs were: if any argument is a device array the
results are device arrays, otherwise NumPy arrays (NumPy scalars when every argument is a scalar).
The working dtype is float32 when the float arrays are float32 (Python floats do not promote),
float64 otherwise; results have the working dtype.  Integer arrays/ints that are not
differentiated stay integers (loop bounds, say).

Per-thread limits (compile-time constants, part of the cache key):

* ``max_tape`` (default 1024): values each thread's tape can hold (float and int tape each).  The
  tape saves values the reverse sweep needs (values overwritten in loops, branch-local values);
  an RK4 loop of n steps needs about 7 n.  Tapes live in local memory: 8 bytes x max_tape per
  thread and tape.
* ``max_iter`` (default 100000): trips of any ``while`` loop; a loop that would run longer stops.

A thread that exceeds either limit is reported: the call raises :class:`srcgrad.SrcgradError`
naming the option to raise (and the first element affected); no memory outside the tape is touched.
"""
import os

import numpy as np
from numba import cuda

from .. import codegen
from .. import kinds as K
from ..arguments import DifferentiatedFunction, working_precision
from ..errors import SrcgradError
from ..parse import unwrap_function
from ..program import build_module, helper_sources
from . import map_runtime as backend
from .device import as_device_array, device_cc, host_numeric_array, is_device_array

__all__ = ["MapGradFunction", "kernel_source", "BLOCK"]

BLOCK = 256


def kernel_source(primal, adjoint, params, kinds, wrt_count, dtype):
    """The map-mode kernels appended to a device module (one thread per element)."""
    cast = [("np.int64" if k == K.INT else f"np.{dtype}") for k in kinds]
    xs = [f"_x{j}" for j in range(len(params))]
    reads = ", ".join(f"{c}(load({x}, _i))" for c, x in zip(cast, xs))
    grads = [f"_g{j}" for j in range(wrt_count)]
    tail = ("        if _st[0] != 0:\n"
            "            cuda.atomic.or_(_status, 0, _st[0])\n"
            "            cuda.atomic.min(_status, 1, _i)\n")
    head = ("    _i = cuda.grid(1)\n"
            "    if _i < _n:\n"
            "        _st = cuda.local.array(1, np.int32)\n"
            "        _st[0] = 0\n")
    seed = f"np.{dtype}(1.0)"
    sep = ", " if reads else ""
    out = []
    # gradients only
    out.append(f"@cuda.jit(cache=CACHE)\ndef _srcgrad_grad_kernel({', '.join(xs + grads)}, _status, _n):\n"
               f"    \"\"\"One thread per element: the gradient of {primal}.\"\"\"\n" + head +
               f"        _v, _g = {adjoint}({reads}{sep}{seed}, _st)\n" +
               "".join(f"        {g}[_i] = _g[{j}]\n" for j, g in enumerate(grads)) + tail)
    # value and gradients
    out.append(f"@cuda.jit(cache=CACHE)\ndef _srcgrad_value_and_grad_kernel({', '.join(xs)}, _value, "
               f"{', '.join(grads)}, _status, _n):\n"
               f"    \"\"\"One thread per element: the value and gradient of {primal}.\"\"\"\n" + head +
               f"        _v, _g = {adjoint}({reads}{sep}{seed}, _st)\n"
               "        _value[_i] = _v\n" +
               "".join(f"        {g}[_i] = _g[{j}]\n" for j, g in enumerate(grads)) + tail)
    # primal only (for comparison and for .value)
    out.append(f"@cuda.jit(cache=CACHE)\ndef _srcgrad_value_kernel({', '.join(xs)}, _value, _status, _n):\n"
               f"    \"\"\"One thread per element: {primal} (no derivatives).\"\"\"\n" + head +
               f"        _value[_i] = {primal}({reads}{sep}_st)\n" + tail)
    return "\n\n" + "\n\n".join(out)


class _Spec:
    def __init__(self, module, path, source):
        self.module = module
        self.path = path
        self.source = source
        self.grad_kernel = module._srcgrad_grad_kernel
        self.value_and_grad_kernel = module._srcgrad_value_and_grad_kernel
        self.value_kernel = module._srcgrad_value_kernel


class MapGradFunction(DifferentiatedFunction):
    """A scalar function's gradient mapped over arrays on the GPU (see the module docstring)."""

    def __init__(self, func, wrt=0, mode="grad", max_tape=backend.MAX_TAPE, max_iter=backend.MAX_ITER,
                 block=BLOCK):
        if mode not in ("grad", "value_and_grad"):
            raise ValueError(f"mode must be 'grad' or 'value_and_grad', got {mode!r}")
        if int(max_tape) < 1 or int(max_iter) < 1:
            raise ValueError("max_tape and max_iter must be positive")
        super().__init__(unwrap_function(func), wrt, mode)
        self.max_tape = int(max_tape)
        self.max_iter = int(max_iter)
        self.block = int(block)
        self.__name__ = f"{self.func.__name__}_{mode}"
        self.__doc__ = (f"{mode} of {self.func.__name__} w.r.t. {', '.join(self.wrt_names)}, "
                        "mapped over arrays on the GPU (srcgrad.cuda)")

    def __repr__(self):
        return (f"<srcgrad.cuda {self.mode} of {self.func.__name__} wrt={tuple(self.wrt_names)} "
                f"max_tape={self.max_tape} max_iter={self.max_iter}>")

    # -- building --------------------------------------------------------------------------------
    def _spec(self, kinds, dtype):
        return self._cached((kinds, dtype), lambda: self._build(kinds, dtype))

    def _build(self, kinds, dtype):
        sources = helper_sources(self.func)
        precision = dtype == "float32"      # the core casts float32 literals itself
        key = codegen.cache_key("cuda", "map", kinds, self.wrt_names, dtype, self.max_tape, self.max_iter,
                                precision, *sorted(sources.values()))
        path = codegen.module_path(f"{self.func.__name__}_cuda", key)
        if not os.path.exists(path):
            extra = {"precision": dtype} if precision else {}
            source, primal, adjoint, _ = build_module(self.func, kinds, self.wrt_names, "cuda", False, **extra)
            source = backend.device_source(source, primal, self.max_tape, self.max_iter, dtype,
                                           float_literals=(dtype == "float32"))
            source += kernel_source(primal, adjoint, self.params, kinds, len(self.wrt_names), dtype)
            codegen.write_module(path, source)
        module = codegen.import_module(path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        return _Spec(module, path, text)

    # -- calling ---------------------------------------------------------------------------------
    def _prepare(self, args, kwargs):
        """Classify the arguments: (kinds, dtype, kernel args, n, shape, on_device)."""
        values = self._bind(args, kwargs)
        on_device = False
        items = []          # (kind of value: "dev"/"host"/"scalar", value)
        for name, value in zip(self.params, values):
            if is_device_array(value):
                on_device = True
                value = as_device_array(value)
                items.append(["dev", value] if value.ndim else ["scalar", value.copy_to_host()[()]])
            elif isinstance(value, (bool, int, float, np.number)):
                items.append(["scalar", value])
            else:
                array = host_numeric_array(value, name, self.func.__name__)
                items.append(["host", array] if array.ndim else ["scalar", array[()]])
        # working dtype: float arrays and NumPy float scalars decide; Python floats and ints do not
        strong = [np.dtype(v.dtype) for t, v in items if t != "scalar" or isinstance(v, np.floating)]
        dtype = working_precision(d for d in strong if d.kind == "f")
        kinds = []
        for index, (name, (tag, value)) in enumerate(zip(self.params, items)):
            integer = (np.dtype(value.dtype).kind in "biu") if hasattr(value, "dtype") else \
                isinstance(value, (bool, int))
            kinds.append(K.INT if integer and index not in self.wrt_indices else K.FLOAT)
        # broadcast shape
        shapes = [tuple(v.shape) for t, v in items if t != "scalar"]
        shape = ()
        if shapes:
            try:
                shape = np.broadcast_shapes(*shapes)
            except ValueError:
                raise ValueError(f"{self.func.__name__}: argument shapes {shapes} do not broadcast") from None
        n = int(np.prod(shape)) if shape else 1
        kernel_args = []
        for name, kind, (tag, value) in zip(self.params, kinds, items):
            want = np.int64 if kind == K.INT else np.dtype(dtype).type
            if tag == "scalar":
                kernel_args.append(want(value))
                continue
            if tuple(value.shape) != shape:
                if tag == "dev":
                    raise ValueError(f"{self.func.__name__}: device argument {name!r} has shape "
                                     f"{tuple(value.shape)}, the others broadcast to {shape}; map mode "
                                     "broadcasts device arrays of one shape with scalars only")
                value = np.broadcast_to(value, shape)
            if tag == "dev":
                if not value.is_c_contiguous():
                    raise ValueError(f"{self.func.__name__}: device argument {name!r} is not contiguous")
                # a new view costs host time on every call: only where the shape needs one
                kernel_args.append(value if value.ndim == 1 else value.reshape(n))
            else:
                kernel_args.append(np.ascontiguousarray(value).reshape(n))
        return tuple(kinds), dtype, kernel_args, n, shape, on_device

    def _outputs(self, out, count, n, shape, dtype):
        """``(buffers the kernel writes, what the call returns)``: new device arrays (returned
        reshaped), or the caller's ``out`` arrays (checked; returned as given)."""
        if out is None:
            return [cuda.device_array(n, dtype=dtype) for _ in range(count)], None
        flat = []
        for item in (out if isinstance(out, (tuple, list)) else (out,)):
            flat.extend(item if isinstance(item, (tuple, list)) else (item,))
        if len(flat) != count:
            raise ValueError(f"{self.func.__name__}: out= needs {count} device array(s) (the value "
                             f"for value_and_grad, then one per wrt), got {len(flat)}")
        buffers = []
        for array in flat:
            if not is_device_array(array):
                raise TypeError(f"{self.func.__name__}: out= takes device arrays, got {type(array).__name__}")
            array = as_device_array(array)
            if tuple(array.shape) != shape or np.dtype(array.dtype) != np.dtype(dtype) or \
                    not array.is_c_contiguous():
                raise ValueError(f"{self.func.__name__}: an out= array is {tuple(array.shape)} "
                                 f"{np.dtype(array.dtype)}; the results are contiguous {shape} {dtype}")
            buffers.append(array if array.ndim == 1 else array.reshape(n))
        return buffers, flat

    def _launch(self, which, args, kwargs, out=None):
        kinds, dtype, kernel_args, n, shape, on_device = self._prepare(args, kwargs)
        if out is not None and not shape:
            raise ValueError(f"{self.func.__name__}: out= is for array results; these arguments "
                             "give a single value")
        spec = self._spec(kinds, dtype)
        kernel = {"grad": spec.grad_kernel, "value_and_grad": spec.value_and_grad_kernel,
                  "value": spec.value_kernel}[which]
        count = {"grad": len(self.wrt_names), "value_and_grad": 1 + len(self.wrt_names), "value": 1}[which]
        stream = 0
        # host arrays travel to the device once; device arrays stay where they are
        kernel_args = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in kernel_args]
        outputs, given = self._outputs(out, count, n, shape, dtype)
        status = cuda.to_device(np.array([0, n], dtype=np.int32))
        if n:
            threads = max(1, min(self.block, n))
            blocks = (n + threads - 1) // threads
            kernel[blocks, threads, stream](*kernel_args, *outputs, status, np.int64(n))
        flags, first = status.copy_to_host()
        if flags:
            self._raise(int(flags), int(first), shape)
        if given is not None:
            results = list(given)
        elif on_device:
            results = [o.reshape(shape) if len(shape) > 1 else o for o in outputs]
            if not shape:
                results = [o.copy_to_host()[0] for o in results]
        else:
            results = [o.copy_to_host().reshape(shape) for o in outputs]
            if not shape:
                results = [r[()] for r in results]
        if which == "value":
            return results[0]
        grads = results[-len(self.wrt_names):]
        grads = grads[0] if self.single else tuple(grads)
        if which == "grad":
            return grads
        return results[0], grads

    def _raise(self, flags, first, shape):
        where = f"element {np.unravel_index(first, shape) if shape else ()}"
        problems = []
        if flags & (backend.TAPE_OVERFLOW | backend.INT_TAPE_OVERFLOW):
            problems.append(f"the tape of saved values needs more than max_tape={self.max_tape} entries "
                            f"(first at {where}); pass a larger max_tape to srcgrad.cuda."
                            f"{self.mode}(..., max_tape=N)")
        if flags & backend.ITER_OVERFLOW:
            problems.append(f"a while loop ran more than max_iter={self.max_iter} trips (first at "
                            f"{where}); pass a larger max_iter to srcgrad.cuda.{self.mode}(..., "
                            "max_iter=N) if the loop does terminate")
        raise SrcgradError(f"srcgrad.cuda {self.mode} of {self.func.__name__}: " + "; ".join(problems))

    def _split_out(self, kwargs):
        """``out=`` (device arrays to write the results into, no allocation), unless the user's
        function has a parameter of that name."""
        if "out" in self.params:
            return kwargs, None
        kwargs = dict(kwargs)
        return kwargs, kwargs.pop("out", None)

    def __call__(self, *args, **kwargs):
        """Map over the arguments.  ``out=``: device arrays of the broadcast shape to write the
        results into (the value for value_and_grad, then one per wrt), returned in place of new
        ones; without it each call allocates its results."""
        kwargs, out = self._split_out(kwargs)
        return self._launch(self.mode, args, kwargs, out)

    def value(self, *args, **kwargs):
        """The function itself mapped over the arguments (the primal kernel, no derivatives);
        ``out=`` as for a call."""
        kwargs, out = self._split_out(kwargs)
        return self._launch("value", args, kwargs, out)

    def ptx(self, *args, which=None, cc=(9, 0), **kwargs):
        """PTX of the map-mode kernel for arguments like these (compiled, not launched; no GPU needed).

        ``which``: "grad", "value_and_grad" or "value" (default: this object's mode)."""
        from numba import typeof, types
        which = which or self.mode
        kinds, dtype, kernel_args, *_ = self._prepare(args, kwargs)
        spec = self._spec(kinds, dtype)
        kernel = {"grad": spec.grad_kernel, "value_and_grad": spec.value_and_grad_kernel,
                  "value": spec.value_kernel}[which]
        count = {"grad": len(self.wrt_names), "value_and_grad": 1 + len(self.wrt_names), "value": 1}[which]
        element = types.float32 if dtype == "float32" else types.float64
        argtypes = [typeof(a) for a in kernel_args] + [types.Array(element, 1, "C")] * count + \
            [types.Array(types.int32, 1, "C"), types.int64]
        with device_cc(cc):
            ptx, _ = cuda.compile_ptx(kernel.py_func, tuple(argtypes), cc=cc)
        return ptx

    # -- inspection ------------------------------------------------------------------------------
    def source_for(self, *args, **kwargs):
        """The generated device module (adjoint, primal, kernels) for these arguments."""
        kinds, dtype, *_ = self._prepare(args, kwargs)
        return self._spec(kinds, dtype).source

    @property
    def source(self):
        if self._last is None:
            return self._spec(tuple(K.FLOAT for _ in self.params), "float64").source
        return self._last.source

