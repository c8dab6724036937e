"""The user-facing API: ``grad``, ``value_and_grad`` and ``vjp``.

Each returns a :class:`GradFunction`. Calling it specializes the transformation to the argument
kinds (float / int / array of some ndim), generates and compiles the adjoint module once per kind
signature, and then calls straight into compiled code.

When the generated code fails on array shapes (a ValueError from NumPy or Numba, or a Numba typing
error about dimensions), the error is re-raised as a :class:`srcgrad.ShapeError` naming the user's
line: the python target reads the failing generated line from the traceback and maps it through
the module's line table; the cpu target first re-runs the uncompiled (python target) version of
the same specialization on copies of the arguments to find that line.
"""
import ast
import linecache
import os
import sys

import numpy as np

from . import checkpoint as checkpointing
from . import codegen, naming
from . import kinds as K
from . import pytree
from . import compile_gc, compile_notice
from . import fast_call
from .arguments import (BUILD_LOCK, DifferentiatedFunction, as_float32 as _as_float32, call_key as _call_key,
                        dtype_of as _dtype_of, in_dtype as _in_dtype, precision_of, prepare as _prepare,
                        to_python_scalar as _to_python_scalar, tree_key as _tree_key)
from .errors import FusionGuardFailed, ShapeError, SrcgradError, UnsupportedSyntaxError
from .parse import SourceFunction, library_wrapper, unwrap_function
from .backends import backend as target_backend
from .program import build_module, helper_sources
from .lean_calls import stretchable as _stretchable, may_store_into_arrays as _may_store_into_arrays
from .static import Plan, is_library_function, make_plan

TARGETS = ("cpu", "python", "cuda")


class Specialization:
    # cpu, compiled without the fused loops' fallback branches (calls from Python): a failing
    # guard raises FusionGuardFailed, and the call runs again with ``fallback``, the
    # specialization with them, compiled then and used for every later call (class defaults:
    # subclasses such as forward mode's build their own modules and keep the fallbacks)
    lean = False
    fallback = None

    def __init__(self, module, name, source, path, key=None):
        self.module = module
        self.source = source
        self.path = path
        self.key = key                      # (kinds, precision)
        self.lines, self.user_sources = codegen.line_table(module)
        self.primal = getattr(module, name)
        self.grad = getattr(module, f"{name}_grad")
        self.value_and_grad = getattr(module, f"{name}_value_and_grad")
        self.vjp = getattr(module, f"{name}_vjp")
        self.adjoint = getattr(module, naming.MODULE_ENTRY)       # (value, tuple of gradients) = adjoint(*args, seed)
        self.one = np.float32(1.0) if key is not None and key[1] == "float32" else 1.0
        self.name = name
        self._called = set()                # "adjoint" / "primal": called (so compiled) already

    def call(self, entry, values, extra=()):
        """Run entry point ``entry`` ("primal", "grad", "value_and_grad" or "vjp") from Python.
        The gradient entries call the adjoint itself (seed 1 for grad and value_and_grad), so a
        specialization compiles the adjoint once and none of the wrappers; the result is what the
        wrapper returns except that the gradients are always a tuple. The first call of a compiled
        (Numba) function compiles it or loads it from the cache: if that runs long, it says so
        once (compile_notice)."""
        which = "primal" if entry == "primal" else "adjoint"
        if which in self._called or not hasattr(self.adjoint, "signatures"):   # python target
            return self._call(entry, values, extra)
        what = self.name if which == "primal" else f"the gradient of {self.name}"
        if self.key is not None:
            kinds = ", ".join(f"{k.ndim}-d {k.dtype} array" if getattr(k, "cls", None) == "array"
                              else str(getattr(k, "cls", k)) for k in self.key[0])
            what += f" for ({kinds}) in {self.key[1]}"
        with compile_notice.announce_if_slow(what, os.path.dirname(self.path)), \
                compile_gc.fewer_collections():
            out = self._call(entry, values, extra)
        self._called.add(which)
        return out

    def _call(self, entry, values, extra):
        if entry in ("grad", "value_and_grad"):
            value, grads = self.adjoint(*values, self.one)
            return grads if entry == "grad" else (value, grads)
        if entry == "vjp":
            return self.adjoint(*values, *extra)
        return getattr(self, entry)(*values, *extra)


class GradFunction(DifferentiatedFunction):
    """A differentiated function. Call it like the original; see ``mode`` for what it returns."""

    def __init__(self, func, wrt=0, target="cpu", mode="grad", checkpoint=None):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        # None, K or "auto": the function's long loops are checkpointed (srcgrad/checkpoint.py)
        self.checkpoint = checkpointing.option(checkpoint)
        if target == "cuda":
            raise SrcgradError("target='cuda' functions are built by srcgrad.grad(..., target='cuda') "
                               "(srcgrad.cuda map mode), not GradFunction")
        super().__init__(_function(func), wrt, mode)
        self.target = target
        self._by_call_key = {}      # _call_key(args) -> specialization: the fast path of __call__
        self._fast = None           # fast_call.make's closure for the latest plain argument types
        self._fast_calls = {}       # call key -> (specialization, the one it runs, closure or None)
        self._entry = None
        self._python_twin = None
        self._plans = {}            # the arguments' treedefs -> static.Plan
        self.__name__ = f"{self.func.__name__}_{mode}"
        self.__doc__ = f"{mode} of {self.func.__name__} w.r.t. {', '.join(self.wrt_names)}"

    # -- calling -------------------------------------------------------------------------------
    def specialize(self, *args, **kwargs):
        """The compiled specialization for these arguments (generating it if needed)."""
        spec, _, _ = self._prepared_call(self._bind(args, kwargs))
        return spec

    def specialize_lean(self, *args, **kwargs):
        """The specialization a call from Python runs: on the cpu target, for a function that
        stores into no array, compiled without the fused loops' fallback branches, so that a
        failing size guard raises ``FusionGuardFailed`` (``spec.lean`` is then True; the caller
        runs the call again with :meth:`specialize`'s specialization)."""
        spec, _, _ = self._prepared_call(self._bind(args, kwargs), lean=True)
        return spec

    # -- pytrees, module data, closures (static.py) ----------------------------------------------
    def _plan_for(self, values, fresh=False):
        """The static.Plan for arguments of this structure (rebuilt when a constant it baked in,
        a module-level int, has changed)."""
        treedefs = tuple(pytree.treedef_of(v, f"argument {p!r} of {self.func.__name__}")
                         if v is None or pytree.is_container(v) else None
                         for p, v in zip(self.params, values))
        plan = None if fresh else self._plans.get(treedefs)
        if plan is None or (plan.guards and not plan.guards_hold()):
            with BUILD_LOCK:
                try:
                    plan = make_plan(self.func, values, self.params)
                except SrcgradError:
                    raise
                except Exception:       # noqa: BLE001
                    # a construct the pre-pass does not anticipate, in a function with plain
                    # arguments: the pipeline sees the function as written (and checks it)
                    if any(t is not None for t in treedefs) or isinstance(self.func, SourceFunction) \
                            or self.func.__name__ == "<lambda>":
                        raise
                    plan = Plan(self.func, treedefs, [[p] for p in self.params], [], [], True, [])
                self._plans[treedefs] = plan
        return plan

    def _default_plan(self):
        """The plan for plain (non-pytree) arguments, or None when it is the function itself."""
        plan = self._plan_for([0.0] * len(self.params))
        return None if plan.trivial else plan

    def _prepared_call(self, raw, lean=False):
        """(specialization, flat argument values, layout of the gradients) for the bound
        arguments ``raw`` (``lean``: see :meth:`_specialization`)."""
        values = tuple(_prepare(v) for v in raw)
        plan = self._plan_for(values)
        captured, same = plan.read_captures()
        if not same:                      # a captured pytree changed structure: plan again
            plan = self._plan_for(values, fresh=True)
            captured, _ = plan.read_captures()
        if plan.trivial:
            kinds = self.kinds_of(values)
            spec = self._specialization(kinds, precision_of(values), lean=lean and not _stretchable(values))
            # 0-d arrays run as scalars; their gradients are given back as 0-d arrays
            layout = tuple((None, raw[i].dtype if isinstance(raw[i], np.ndarray) and
                            raw[i].ndim == 0 else None, None, _dtype_of(values[i]))
                           for i in self.wrt_indices)
            return spec, values, layout
        flat, kinds = [], []
        for name, treedef, value in zip(self.params, plan.arg_treedefs, values):
            items = [value] if treedef is None else pytree.leaves(value)
            for item in items:
                try:
                    kinds.append(K.kind_of_value(item))
                except TypeError as exc:
                    raise TypeError(f"argument {name!r} of {self.func.__name__}: {exc}") from None
            flat += items
        for capture in plan.captures:
            for item in pytree.leaves(capture.read()):
                try:
                    kinds.append(K.kind_of_value(item))
                except TypeError as exc:
                    raise TypeError(f"{capture.where}: {exc}") from None
        flat += captured
        layout = []
        wrt_names = []
        for index in self.wrt_indices:
            names = plan.arg_params[index]
            treedef = plan.arg_treedefs[index]
            start = sum(len(plan.arg_params[i]) for i in range(index))
            leaf_kinds = kinds[start:start + len(names)]
            mask = tuple(k.is_float for k in leaf_kinds)
            if not any(mask):
                what = "it holds no float leaves" if treedef is not None else \
                    f"it is a {leaf_kinds[0]} value"
                raise TypeError(
                    f"cannot differentiate with respect to argument {self.params[index]!r} of "
                    f"{self.func.__name__}: {what}; expected a float, a float32/float64 array, or "
                    "a tuple/list/dict of those")
            wrt_names += [n for n, m in zip(names, mask) if m]
            zero_d = raw[index].dtype if treedef is None and isinstance(raw[index], np.ndarray) \
                and raw[index].ndim == 0 else None
            dtypes = _dtype_of(values[index]) if treedef is None else \
                tuple(_dtype_of(item) for item in flat[start:start + len(names)])
            layout.append((treedef, zero_d, mask, dtypes))
        values = [_prepare(v) for v in flat]
        precision = precision_of(values)
        if precision == "float32":
            values = values[:len(values) - len(captured)] + _as_float32(captured)
        spec = self._specialization(tuple(kinds), precision, plan, tuple(wrt_names),
                                    lean=lean and not _stretchable(values))
        return spec, tuple(values), tuple(layout)

    def _specialization(self, kinds, precision="float64", plan=None, wrt_names=None, lean=False):
        """The specialization for these kinds. ``lean`` (calls from Python, which :meth:`_run`
        reruns when a guard fails): on the cpu target, compiled without the fused loops' fallback
        ``else:`` branches, about half of Numba's work for a typical adjoint; compiled code
        calling a specialization (``.njit``, ``MinibatchLoop``) gets the one with them, and so
        does a call whose arguments have a size-1 axis (see :func:`_stretchable`)."""
        if plan is not None and plan.trivial:
            plan = None
        key = (kinds, precision) if plan is None else (kinds, precision, plan, wrt_names)
        if lean and self._lean_allowed():
            cpu = target_backend("cpu")

            def build():
                with cpu.without_fallback():
                    spec = self._build(kinds, precision) if plan is None else \
                        self._build_plan(kinds, precision, plan, wrt_names)
                spec.lean = True
                return spec
            return self._cached(key + ("without fallback",), build)
        if plan is None:
            return self._cached(key, lambda: self._build(kinds, precision))
        return self._cached(key, lambda: self._build_plan(kinds, precision, plan, wrt_names))

    def _lean_allowed(self):
        """Whether a call may run a specialization without fusion fallbacks: the cpu target with
        loop fusion on, and a function (with its helpers) that stores into no array element, so
        that a call stopped by a failing guard changed nothing and can run again from the start."""
        if self.target != "cpu" or not target_backend("cpu").fuse:
            return False
        allowed = getattr(self, "_lean_ok", None)
        if allowed is None:
            allowed = self._lean_ok = not _may_store_into_arrays(self.func)
        return allowed

    def _build_plan(self, kinds, precision, plan, wrt_names):
        root = plan.root
        vjp = self.mode == "vjp"
        key = codegen.cache_key(self.target, kinds, precision, wrt_names, False, vjp, *plan.source_key(),
                                *self._checkpoint_key())
        path = codegen.module_path(root.__name__, key)
        if not os.path.exists(path):
            source, _, _, _ = build_module(root, kinds, list(wrt_names), self.target, False, precision,
                                           array_result=vjp, checkpoint=self.checkpoint,
                                           seed_at_end=self.target in ("python", "cpu"),
                                           tape_transcendentals=True)
            codegen.write_module(path, source)
        module = codegen.import_module(path)
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        spec = Specialization(module, root.__name__, source, path, (kinds, precision, plan, wrt_names))
        spec.plan = plan
        return spec

    def _checkpoint_key(self):
        """The cache-key part of the checkpoint option (none when it is off: keys stay as they were)."""
        return () if self.checkpoint is None else (f"checkpoint={self.checkpoint}",)

    def _build(self, kinds, precision):
        plan = self._default_plan()
        if plan is not None:        # module data, a lambda, ...: the rewritten function
            if any(k.cls == "tuple" for k in kinds):
                raise TypeError("pytree arguments need a call with values (their structure)")
            wrt = [self.params[i] for i in self.wrt_indices]
            return self._build_plan(kinds + tuple(K.kind_of_value(v) for v in plan.read_captures()[0]),
                                    precision, plan, tuple(wrt))
        sources = helper_sources(self.func)
        key = codegen.cache_key(self.target, kinds, precision, self.wrt_names, self.single, self.mode == "vjp",
                                *sorted(sources.values()), *self._checkpoint_key())
        path = codegen.module_path(self.func.__name__, key)
        if not os.path.exists(path):
            source, _, _, _ = build_module(self.func, kinds, self.wrt_names, self.target, self.single,
                                           precision, array_result=self.mode == "vjp",
                                           checkpoint=self.checkpoint,
                                           seed_at_end=self.target in ("python", "cpu"),
                                           tape_transcendentals=True)
            codegen.write_module(path, source)
        module = codegen.import_module(path)
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        spec = Specialization(module, self.func.__name__, source, path, (kinds, precision))
        spec.plan = None
        return spec

    def __call__(self, *args, **kwargs):
        fast = self._fast           # the types of the latest call again: straight to the adjoint
        if fast is not None and not kwargs:
            out = fast(args)
            if out is not fast_call.MISS:
                return out
        # Fast path for repeated calls with all arguments given by position: a cheap key of the
        # argument types (and pytree structures) finds the specialization without binding and
        # kind inference (~30 us a call, which matters for gradients that run in well under a
        # millisecond). Module data and closure values the function reads are read again here.
        key = _tree_key(args) if not kwargs and len(args) == len(self.params) else None
        fast = fast_call.seen(self, key) if key is not None else None
        if fast is not None:            # types seen before the latest call's: their closure
            out = fast(args)
            if out is not fast_call.MISS:
                self._fast = fast
                return out
        entry = self._by_call_key.get(key) if key is not None else None
        values = None
        if entry is not None:
            spec, layout = entry
            plan = spec.plan
            if plan is None:
                values = args
            elif not plan.guards or plan.guards_hold():
                captured, same = plan.read_captures()
                if spec.key[1] == "float32":
                    captured = _as_float32(captured)
                if same and _call_key(captured) == spec.capture_key:
                    values = []
                    for treedef, value in zip(plan.arg_treedefs, args):
                        if treedef is None:
                            values.append(value)
                        else:
                            pytree.leaves(value, values)
                    values = tuple(values) + tuple(captured)
            if values is not None:
                self._last = spec
        if values is None:
            spec, values, layout = self._prepared_call(self._bind(args, kwargs), lean=True)
            if spec.plan is not None:
                spec.capture_key = _call_key(values[len(values) - _n_captured(spec.plan):])
            if key is not None:
                self._by_call_key[key] = (spec, layout)
        if self.mode == "vjp":
            out = self._vjp(spec, values, layout)
        elif self.mode == "grad":
            out = self._assemble(self._run(spec, "grad", values), layout)
        else:
            value, grads = self._run(spec, "value_and_grad", values)
            out = _to_python_scalar(value), self._assemble(grads, layout)
        if key is not None and not kwargs:      # ran: the next call with these types is fast
            self._fast = fast_call.remember(self, key, spec, layout, args)
        return out

    def _assemble(self, grads, layout):
        """The flat gradients of the compiled code, one per float leaf of the ``wrt`` arguments,
        as the arguments' structures: a plain argument's gradient has its shape and dtype (0-d
        arrays included), a pytree's is the same pytree with a gradient per float leaf and None
        for the other leaves."""
        items = iter(grads)
        out = []
        for treedef, zero_d, mask, dtypes in layout:
            if treedef is None:
                g = _in_dtype(next(items), dtypes)
                out.append(np.asarray(g, dtype=zero_d) if zero_d is not None else _to_python_scalar(g))
            else:
                leaves = [_to_python_scalar(_in_dtype(next(items), dtype)) if m else None
                          for m, dtype in zip(mask, dtypes)]
                out.append(pytree.unflatten(treedef, iter(leaves)))
        return out[0] if self.single else tuple(out)

    def _run(self, spec, entry, values, extra=()):
        """Call ``spec.<entry>``; shape failures become a ShapeError naming the user's line."""
        if spec.fallback is not None:       # a guard failed once: the specialization with fallbacks
            spec = spec.fallback
        try:
            return spec.call(entry, values, extra)
        except FusionGuardFailed:
            if not spec.lean:
                raise
            return self._run(self._fall_back(spec), entry, values, extra)
        except Exception as exc:    # noqa: BLE001  (anything that is not a shape error is re-raised)
            error = self._located_error(exc, spec, entry, values, extra)
            if error is None:
                raise
            raise error from None

    def _fall_back(self, spec):
        """The specialization with the fused loops' fallback branches for the lean ``spec`` whose
        guard failed: sizes the fused loops do not handle (NumPy broadcasting along a size-1 axis,
        or an error), where the statements as written decide; used for every later call."""
        spec.fallback = self._specialization(*spec.key)
        return spec.fallback

    def _located_error(self, exc, spec, entry, values, extra):
        """The error to raise for ``exc`` from running ``spec``: a ShapeError or an
        UnsupportedSyntaxError naming the user's line, or None (``exc`` itself)."""
        error = self._shape_error(exc, spec, entry, values, extra)
        if error is None and self.target == "cpu":
            error = compile_error(exc, spec)
        return error

    def _shape_error(self, exc, spec, entry, values, extra):
        if not _may_be_shape_error(exc):
            return None
        if self.target == "python":
            return locate_shape_error(exc, spec)
        # compiled code has no line information: run the same generated code uncompiled
        try:
            if self._python_twin is None:
                wrt = self.wrt_indices[0] if self.single else tuple(self.wrt_indices)
                self._python_twin = GradFunction(self.func, wrt=wrt, target="python", mode=self.mode,
                                                 checkpoint=self.checkpoint)
            twin = self._python_twin._specialization(*spec.key)
        except Exception:           # noqa: BLE001
            return None
        copies = [np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in values]
        extra = [np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in extra]
        try:
            getattr(twin, entry)(*copies, *extra)
        except ValueError as python_exc:
            if isinstance(python_exc, SrcgradError):
                return None
            return locate_shape_error(python_exc, twin)
        except Exception:           # noqa: BLE001
            return None
        return None

    def _vjp(self, spec, values, layout):
        value = self._run(spec, "primal", values)
        shape = np.shape(value)
        dtype = np.asarray(value).dtype

        def pullback(seed):
            """Vector-Jacobian product: the gradient(s) of ``sum(seed * f(...))`` w.r.t. ``wrt``."""
            seed_array = np.asarray(seed)
            if seed_array.shape != shape:
                raise ValueError(f"the seed of {self.func.__name__}'s pullback must have the result's "
                                 f"shape {shape}, got {seed_array.shape}")
            seed_value = seed_array.astype(dtype, copy=True) if shape else dtype.type(seed_array)
            _, grads = self._run(spec, "vjp", values, (seed_value,))
            return self._assemble(grads, layout)
        return _to_python_scalar(value), pullback

    # -- inspection and composition ------------------------------------------------------------
    @property
    def source(self):
        """The generated module (primal, adjoint and wrappers) of the latest specialization.

        Before any call there is none: the argument kinds are then guessed from how the function
        uses its parameters (fine for scalar code); when that guess does not type-check (matrix
        code, say), a SrcgradError points to ``source_for(*args)``."""
        if self._last is None:
            kinds = self._guess_kinds()         # unsupported syntax is reported as such here
            try:
                self._specialization(kinds)
            except SrcgradError as exc:
                raise SrcgradError(
                    f"{self.func.__name__} has not been called yet, so there is no specialization "
                    f"to show, and its argument kinds cannot be guessed from the source ({exc}); "
                    f"use .source_for(*args) with example arguments, or call it first") from None
        return self._last.source

    def source_for(self, *args, **kwargs):
        return self.specialize(*args, **kwargs).source

    def _guess_kinds(self):
        """Kinds for ``.source`` before any call: annotations, else guessed from how params are used."""
        from .program import FunctionUnit
        import ast
        unit = FunctionUnit(self.func)
        guessed = []
        for name in self.params:
            ndim = 0
            integer = False
            for node in ast.walk(unit.fsrc.tree):
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == name:
                    index = node.slice
                    ndim = max(ndim, len(index.elts) if isinstance(index, ast.Tuple) else 1)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                        node.value.id == name and node.attr in ("shape", "T", "size"):
                    ndim = max(ndim, 1)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
                    if any(isinstance(a, ast.Name) and a.id == name for a in node.args):
                        integer = True
            index = self.params.index(name)
            if ndim:
                guessed.append(K.array(ndim))
            elif integer and index not in self.wrt_indices:
                guessed.append(K.INT)
            else:
                guessed.append(K.FLOAT)
        return tuple(guessed)

    @property
    def njit(self):
        """A function callable from inside ``@numba.njit`` code, returning what this object returns."""
        if self._entry is None:
            from .backends.compose import make_entry
            self._entry = make_entry(self)
        return self._entry

    def __repr__(self):
        return f"<srcgrad {self.mode} of {self.func.__name__} wrt={tuple(self.wrt_names)} target={self.target}>"


# -- shape errors ----------------------------------------------------------------------------------

_SHAPE_WORDS = ("shape", "broadcast", "align", "dimension", "ndim", "axis", "concatenat", "mismatch",
                "zero-size", "sizes")
# a Numba typing error (compile time) is worth localizing when it is about dimensions: then the
# python target, run on the same arguments, usually fails with NumPy's ValueError on that line
_TYPING_SHAPE_WORDS = ("dimension", "ndim", "axis", "1-d", "2-d", "broadcast", "shape mismatch",
                       "same shape")
_PRODUCTS = ("dot", "matmul", "inner", "vdot")
_SAFE_CALLS = ("ones", "zeros", "full", "empty", "ones_like", "zeros_like", "full_like", "empty_like",
               "arange", "eye", "float32", "float64")


def _may_be_shape_error(exc):
    if isinstance(exc, SrcgradError):
        return False
    if isinstance(exc, ValueError):
        return True
    numba = sys.modules.get("numba")       # a Numba typing error about dimensions (compile time)
    typing_error = getattr(getattr(getattr(numba, "core", None), "errors", None), "TypingError", None)
    if typing_error is not None and isinstance(exc, typing_error):
        return any(word in str(exc).lower() for word in _TYPING_SHAPE_WORDS)
    return False


def compile_error(exc, spec):
    """An UnsupportedSyntaxError for a Numba error ``exc`` compiling ``spec``'s generated code on
    the cpu target (something the compiled target does not support that the python target does):
    the user's file and line from the generated line Numba names, mapped through the line table,
    and the first line of Numba's own explanation. None when ``exc`` is not a Numba error."""
    import re
    numba = sys.modules.get("numba")
    errors = getattr(getattr(numba, "core", None), "errors", None)
    if errors is None or not isinstance(exc, errors.NumbaError):
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))       # Numba colours its messages
    owner = line = None
    for match in re.finditer(r'File "([^"]+)", line (\d+)', text):
        if os.path.basename(match.group(1)) == os.path.basename(spec.path):
            entry = spec.lines.get(int(match.group(2)))
            if entry is not None:
                owner, line, _ = entry
    ours = re.search(r"srcgrad: (.*)", text)
    inner = re.findall(r"(?:TypingError|NumbaTypeError|NumbaValueError|UnsupportedError): (.+)", text)
    if ours is not None:
        reason = ours.group(1).strip()
    elif inner:                     # the error an overload raised, deepest last
        reason = inner[-1].strip()
    else:
        skip = ("Failed in", "During:", "File ", "<source elided>", "There are", "- Of which",
                "Rejected as", "With argument", "No implementation", ">>>", "^", "Intrinsic in")
        lines = [t.strip() for t in text.splitlines() if t.strip()]
        reason = next((t for t in lines if not t.startswith(skip)), lines[0] if lines else repr(exc))
    filename, texts = spec.user_sources.get(owner, (None, {}))
    where = f" `{texts.get(line, '')}`" if line is not None else ""
    return UnsupportedSyntaxError(
        f"target='cpu' (Numba) cannot compile this{where}: {reason}. target='python' runs the same "
        "generated code without Numba", filename, line, "not supported by the compiled target")


def locate_shape_error(exc, spec):
    """A ShapeError for ``exc`` raised by the python-target generated code of ``spec``, or None.

    The innermost traceback frame in the generated module gives the failing line (mapped to the
    user's line by the module's line table) and, from the instruction's column span, the failing
    expression, whose operands are re-evaluated in that frame for their shapes.
    """
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == spec.path:
            entry = spec.lines.get(tb.tb_lineno)
            if entry is not None:
                frames.append((tb, entry))
        tb = tb.tb_next
    if not frames:
        return None
    tb, (owner, lineno, sweep) = frames[-1]
    node = _failing_node(tb, spec.path)
    shapes = _operand_shapes(node, tb.tb_frame) if node is not None else None
    detail, certain = _describe(node, shapes, exc)
    if not certain and not any(word in str(exc).lower() for word in _SHAPE_WORDS):
        return None
    filename, texts = spec.user_sources.get(owner, ("<unknown>", {}))
    callers = []
    for _, (c_owner, c_line, _) in frames[:-1]:
        c_file, c_texts = spec.user_sources.get(c_owner, ("<unknown>", {}))
        caller = (c_file, c_line, c_owner, c_texts.get(c_line, ""))
        if (c_owner, c_line) != (owner, lineno) and (not callers or callers[-1] != caller):
            callers.append(caller)
    return ShapeError(detail, filename, lineno, owner, texts.get(lineno, ""), shapes, sweep, callers,
                      str(exc).strip())


def _failing_node(tb, path):
    """The AST of the expression (or statement) whose instruction raised, from its column span."""
    try:
        positions = list(tb.tb_frame.f_code.co_positions())[tb.tb_lasti // 2]
        first, last, col, end_col = positions
        lines = [linecache.getline(path, n).encode() for n in range(first, last + 1)]
        if None in positions or not all(lines):
            return None
        if first == last:
            segment = lines[0][col:end_col]
        else:
            segment = lines[0][col:] + b"".join(lines[1:-1]) + lines[-1][:end_col]
        text = segment.decode().strip()
        try:
            return ast.parse(text, mode="eval").body
        except SyntaxError:
            return ast.parse(text).body[0]
    except Exception:               # noqa: BLE001  (no position information: no shapes)
        return None


def _operands(node):
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, (ast.AugAssign, ast.Assign)):
        target = node.target if isinstance(node, ast.AugAssign) else node.targets[0]
        return [target, node.value]
    if isinstance(node, ast.Call):
        return list(node.args)
    return []


def _safe(node):
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and
                    func.value.id == "np" and func.attr in _SAFE_CALLS):
                return False
        elif isinstance(sub, (ast.Lambda, ast.NamedExpr, ast.comprehension, ast.Await)):
            return False
    return True


def _operand_shapes(node, frame):
    shapes = []
    for operand in _operands(node):
        shape = None
        if _safe(operand):
            operand = _copy_as_load(operand)
            try:
                value = eval(compile(ast.Expression(operand), "<srcgrad shape>", "eval"),  # noqa: S307
                             dict(frame.f_globals), dict(frame.f_locals))
                if isinstance(value, (np.ndarray, np.generic, float, int)):
                    shape = tuple(np.shape(value))
            except Exception:       # noqa: BLE001
                shape = None
        shapes.append(shape)
    return shapes


def _copy_as_load(node):
    node = ast.parse(ast.unparse(node), mode="eval").body
    return ast.fix_missing_locations(node)


def _callee(node):
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return ""


def _describe(node, shapes, exc):
    """(detail, certain): the message's tail, and whether the shapes alone prove a mismatch."""
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    known = [s for s in (shapes or []) if s]        # the arrays' shapes (not the scalars')
    all_known = bool(shapes) and len(known) == len(shapes)
    if all_known and len(shapes) == 2 and (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)
                                          or _callee(node) in _PRODUCTS):
        a, b = shapes
        if a and b:
            inner_b = b[-2] if len(b) >= 2 else b[0]
            if a[-1] != inner_b:
                return f"shapes {a} and {b} are not aligned ({a[-1]} != {inner_b})", True
    if all_known and len(shapes) >= 2 and (isinstance(node, (ast.BinOp, ast.AugAssign)) or
                                           _callee(node) in _BROADCASTING):
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            if isinstance(node, ast.AugAssign):
                return f"a value of shape {shapes[1]} cannot be added into one of shape {shapes[0]}", True
            listed = ", ".join(map(str, shapes[:-1])) + f" and {shapes[-1]}"
            return f"shapes {listed} cannot be broadcast together", True
        if isinstance(node, ast.AugAssign) and np.broadcast_shapes(*shapes) != shapes[0]:
            return f"a value of shape {shapes[1]} cannot be added into one of shape {shapes[0]}", True
    if known:
        return f"{message} (shapes involved: {', '.join(map(str, known))})", False
    return message, False


_BROADCASTING = ("maximum", "minimum", "where", "arctan2", "hypot", "power", "add", "subtract",
                 "multiply", "divide", "clip", "unbroadcast")


def _n_captured(plan):
    return sum(pytree.count_leaves(c.treedef) for c in plan.captures)


def _function(func):
    """The Python function to differentiate: a NumPy/SciPy function passed directly
    (``grad(np.tanh)``) becomes a generated one-line function calling it."""
    if isinstance(func, SourceFunction):
        return func
    inner = getattr(func, "py_func", func)
    if isinstance(func, np.ufunc) or (callable(func) and is_library_function(inner)):
        return library_wrapper(func)
    return unwrap_function(func)


def _decorator(mode):
    def api(func=None, *, wrt=0, target="cpu", checkpoint=None, **options):
        def make(f):
            if checkpoint is not None and target == "cuda":
                raise ValueError("checkpoint=... is available on target='python' and target='cpu', "
                                 "not target='cuda'")
            if target == "cuda":        # map mode: one GPU thread per element (srcgrad.cuda)
                if mode == "vjp":
                    raise ValueError("vjp has no cuda target; use grad or value_and_grad")
                from . import cuda
                return getattr(cuda, mode)(f, wrt=wrt, **options)
            if options:
                raise TypeError(f"unexpected options for target={target!r}: {', '.join(options)}")
            return GradFunction(f, wrt=wrt, target=target, mode=mode, checkpoint=checkpoint)
        if func is None:
            return make
        if isinstance(func, (int, str, tuple, list)):
            raise TypeError(f"{mode}(...) takes the function first; use {mode}(f, wrt=...) or "
                            f"@{mode}(wrt=...)")
        return make(func)
    return api


grad = _decorator("grad")
grad.__doc__ = """Gradient of a scalar function: ``grad(f, wrt=0 | (0, 1) | "name", target="cpu")``.

Usable as ``@grad``, ``@grad(wrt=...)`` or ``grad(f, wrt=...)``. A single ``wrt`` gives one gradient,
a tuple gives a tuple. Each gradient has the shape and dtype of its argument (a Python float for a
float). ``target="python"`` runs the same generated code without Numba.

``checkpoint=K`` (or ``"auto"``: about sqrt(n) for a loop of n iterations) bounds the tape of
long top-level ``for`` loops: the loop-carried state is stored every K iterations and each segment
runs again, taped, just before its reverse sweep (periodic checkpointing, see
:mod:`srcgrad.checkpoint`; python and cpu targets)."""

value_and_grad = _decorator("value_and_grad")
value_and_grad.__doc__ = """Like :func:`grad`, but returns ``(value, gradient(s))``."""


vjp = _decorator("vjp")
vjp.__doc__ = """Vector-Jacobian products of a function with a float or array result.

``value, pullback = vjp(f, wrt=...)(*args)``: ``value`` is ``f(*args)``; ``pullback(seed)``, with
``seed`` of the result's shape, returns the gradient(s) of ``sum(seed * f(*args))`` with respect to
``wrt`` (one array/float, or a tuple for a tuple ``wrt``). Each pullback call reruns the compiled
forward and reverse sweeps (no state is kept between calls)."""
