"""Forward mode and second order: ``jvp``, ``hvp``, ``hessian`` and ``jacobian``.

* ``jvp(f, wrt)(*args, tangent)`` → ``(f(*args), directional derivative)``: the forward-mode
  module of :mod:`srcgrad.forward` (primal and tangent statements interleaved, no tape).
* ``hvp(f, wrt)(*args, v)`` → H·v: reverse mode over forward mode. The tangent function
  ``<f>_jvp_tangent(*args, *v)`` (generated as plain NumPy source) is itself a function srcgrad
  can differentiate; its gradient with respect to ``wrt`` is H·v (H is symmetric).
* ``hessian`` / ``jacobian``: sweeps over the basis directions (jvp per input element or vjp per
  output element, whichever is fewer). Forward sweeps take several directions at once where the
  code is in :mod:`srcgrad.forward_batch`'s subset: jacobian's jvp, and hessian as forward mode
  over the gradient (jacfwd of the gradient); elsewhere hessian sweeps one hvp per column.
"""
import ast
import os

import numpy as np

from . import codegen, naming
from .api import GradFunction, Specialization, precision_of, _call_key, _prepare, _to_python_scalar
from .errors import SrcgradError
from .forward import build_forward_module
from .kinds import FLOAT as _FLOAT
from .program import helper_sources


class ForwardSpecialization(Specialization):
    def __init__(self, module, name, source, path, key=None):     # noqa: D107 (no reverse entries)
        self.module = module
        self.source = source
        self.path = path
        self.key = key
        self.lines, self.user_sources = codegen.line_table(module)
        self.jvp = getattr(module, name)
        self.jacobian_columns = getattr(module, naming.MODULE_JACOBIAN_COLUMNS, None)

    def call(self, entry, values, extra=()):
        return getattr(self, entry)(*values, *extra)


def _forward_module(func, kinds, wrt_names, target, precision, lowered=True):
    """Import (generating if needed) the forward-mode module; (module, jvp name, source, path)."""
    sources = helper_sources(func)
    key = codegen.cache_key(target, kinds, precision, wrt_names, "jvp", lowered, *sorted(sources.values()))
    name_of = f"{func.__name__}_jvp"
    path = codegen.module_path(name_of, key)
    if not os.path.exists(path):
        source, _, _ = build_forward_module(func, kinds, wrt_names, target, precision, lowered)
        codegen.write_module(path, source)
    module = codegen.import_module(path)
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    return module, name_of, source, path


def _tangents(fn, values, tangent):
    """The tangent(s) as the generated code takes them: one per wrt argument, in its dtype and
    shape (the generated code copies a tangent before writing into it)."""
    parts = (tangent,) if fn.single else tangent
    if not isinstance(parts, (tuple, list)) or len(parts) != len(fn.wrt_indices):
        raise TypeError(f"{fn.__name__}: expected a tuple of {len(fn.wrt_indices)} tangents/directions "
                        f"(one per wrt argument {tuple(fn.wrt_names)}), got {type(tangent).__name__}")
    out = []
    for index, part in zip(fn.wrt_indices, parts):
        x = values[index]
        if isinstance(x, np.ndarray):
            array = np.asarray(part)
            if array.shape != x.shape:
                raise ValueError(f"{fn.__name__}: the direction for {fn.params[index]!r} must have its "
                                 f"shape {x.shape}, got {array.shape}")
            out.append(array.astype(x.dtype, copy=False))
        else:
            array = np.asarray(part)
            if array.shape != ():
                raise ValueError(f"{fn.__name__}: the direction for the float {fn.params[index]!r} must "
                                 f"be a float, got shape {array.shape}")
            out.append(type(x)(array[()]) if isinstance(x, np.floating) else float(array[()]))
    return tuple(out)


# Version of the rewrite below: part of the cache key of the modules it produces.
_GRADIENT_ONLY = "gradient-only-1"


def _gradient_only(source, hessian_of=None):
    """The module ``source`` of a reverse-mode gradient plus ``<adjoint>_gradient_only``: the
    adjoint without the function's value. hvp needs H·v alone, the gradient of the tangent
    function; its value (the jvp) is what the forward sweep computes, and where the reverse sweep
    recomputes its loop iterations rather than reading a tape (Rosenbrock, the MLP), the forward
    sweep then has no other use and liveness removes it. ``_srcgrad_gradient_only`` names it."""
    import re
    from .forward import remove_dead_code
    match = re.search(rf"^{naming.MODULE_ENTRY} = (\w+)$", source, re.M)
    tree = ast.parse(source)
    (adjoint,) = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                  and node.name == match.group(1)]
    tail = adjoint.body[-1]
    if not (isinstance(tail, ast.Return) and isinstance(tail.value, ast.Tuple) and len(tail.value.elts) == 2):
        return source                    # (not the shape build_module writes: the adjoint serves)
    body = adjoint.body[:-1]
    docstring = body[:1] if body and isinstance(body[0], ast.Expr) and \
        isinstance(body[0].value, ast.Constant) else []
    body = remove_dead_code(body[len(docstring):] + [ast.Return(value=tail.value.elts[1])])
    name = f"{adjoint.name}_gradient_only"
    doc = ast.Expr(value=ast.Constant(f"The gradients of {adjoint.name} without its value (for hvp): "
                                      "statements only the value needed are left out."))
    function = ast.FunctionDef(name=name, args=adjoint.args, body=[doc] + body,
                               decorator_list=adjoint.decorator_list, returns=None, type_comment=None,
                               type_params=[])
    text = ast.unparse(ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[])))
    out = source.rstrip("\n") + f"\n\n\n{text}\n\n\n{naming.MODULE_GRADIENT_ONLY} = {name}\n"
    if hessian_of is not None:
        index, count = hessian_of
        params = [a.arg for a in adjoint.args.args][:count]
        decorators = "".join(f"@{ast.unparse(d)}\n" for d in adjoint.decorator_list)
        out += "\n\n" + _HESSIAN_COLUMNS.format(decorators=decorators, params=", ".join(params),
                                                 x=params[index], gradient_only=name,
                                                 name=naming.MODULE_HESSIAN_COLUMNS, seed=naming.SEED)
    return out


# hessian(f) of one array argument: the hvp sweeps over its basis vectors in one compiled call
_HESSIAN_COLUMNS = """{decorators}def {name}({params}, {seed}):
    \"\"\"The dense Hessian w.r.t. {x}: one hvp sweep (the gradient-only adjoint) per basis vector,
    all in this call.\"\"\"
    _n = {x}.size
    _H = np.empty((_n, _n), dtype={x}.dtype)
    for _k in range(_n):
        _e = np.zeros(_n, dtype={x}.dtype)
        _e[_k] = 1.0
        _column = {gradient_only}({params}, _e.reshape({x}.shape), {seed})[0]
        _H[:, _k] = _column.ravel()
    return _H.reshape({x}.shape + {x}.shape)
"""


# Version of the gradient function below: part of the cache key of the modules it produces.
_GRADIENT_FUNCTION = "gradient-function-1"


def _gradient_function(func, kinds, wrt_name, precision):
    """``<f>_gradient(*params, _seed)``: f's gradient w.r.t. its one array argument ``wrt_name``,
    as plain generated (python target) source that srcgrad can differentiate again: the adjoint
    without its value. Forward mode over it is the Hessian (forward over reverse, as jacfwd of
    the gradient)."""
    import re
    from .forward import remove_dead_code
    from .program import build_module
    sources = helper_sources(func)
    key = codegen.cache_key("python", kinds, precision, wrt_name, _GRADIENT_FUNCTION, *sorted(sources.values()))
    path = codegen.module_path(f"{func.__name__}_gradient", key)
    name = f"{func.__name__}_gradient"
    if not os.path.exists(path):
        source, _, _, _ = build_module(func, kinds, [wrt_name], "python", True, precision)
        entry = re.search(rf"^{naming.MODULE_ENTRY} = (\w+)$", source, re.M).group(1)
        tree = ast.parse(source)
        (adjoint,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == entry]
        tail = adjoint.body[-1]
        if not (isinstance(tail, ast.Return) and isinstance(tail.value, ast.Tuple) and len(tail.value.elts) == 2
                and isinstance(tail.value.elts[1], ast.Tuple) and len(tail.value.elts[1].elts) == 1):
            raise SrcgradError(f"{func.__name__}: the adjoint does not return (value, (gradient,))")
        body = adjoint.body[:-1]
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        body = remove_dead_code(body + [ast.Return(value=tail.value.elts[1].elts[0])])
        _write_one_function(path, source, name, adjoint.args, body,
                            f"The gradient of {func.__name__} w.r.t. {wrt_name} (for hessian: "
                            "forward mode over it).")
    return getattr(codegen.import_module(path), name)


def _flat_gradient_function(func, kinds, wrt_names, precision):
    """``<f>_gradient_flat(*params, _seed)``: f's gradients w.r.t. several arguments (or one float),
    written element by element into one flat array (what the batched forward mode takes: element
    writes), for hessian's blocks."""
    import re
    from .program import build_module
    sources = helper_sources(func)
    key = codegen.cache_key("python", kinds, precision, tuple(wrt_names), _GRADIENT_FUNCTION, "flat",
                            *sorted(sources.values()))
    path = codegen.module_path(f"{func.__name__}_gradient_flat", key)
    name = f"{func.__name__}_gradient_flat"
    if not os.path.exists(path):
        source, _, _, _ = build_module(func, kinds, list(wrt_names), "python", len(wrt_names) == 1, precision)
        entry = re.search(rf"^{naming.MODULE_ENTRY} = (\w+)$", source, re.M).group(1)
        tree = ast.parse(source)
        (adjoint,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == entry]
        tail = adjoint.body[-1]
        grads = tail.value.elts[1].elts if isinstance(tail, ast.Return) and isinstance(tail.value, ast.Tuple) \
            and len(tail.value.elts) == 2 and isinstance(tail.value.elts[1], ast.Tuple) else None
        if grads is None or len(grads) != len(wrt_names):
            raise SrcgradError(f"{func.__name__}: the adjoint does not return (value, (gradients...))")
        params = [a.arg for a in adjoint.args.args]
        arrays = [n for n in wrt_names if kinds[params.index(n)].is_array]
        size = " + ".join([f"{n}.size" for n in arrays] + [str(len(wrt_names) - len(arrays))])
        lines = [f"_flat = np.empty({size})", "_o = 0"]      # (float64: hessian casts the blocks)
        for k, (n, g) in enumerate(zip(wrt_names, grads)):
            lines.append(f"_g{k} = {ast.unparse(g)}")
            ndim = kinds[params.index(n)].ndim if n in arrays else 0
            indent = ""
            for d in range(ndim):
                lines.append(f"{indent}for _i{d} in range(_g{k}.shape[{d}]):")
                indent += "    "
            item = f"_g{k}[{', '.join(f'_i{d}' for d in range(ndim))}]" if ndim else f"_g{k}"
            lines += [f"{indent}_flat[_o] = {item}", f"{indent}_o += 1"]
        lines.append("return _flat")
        body = adjoint.body[:-1]
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        body += ast.parse("\n".join(lines)).body
        _write_one_function(path, source, name, adjoint.args, body,
                            f"The gradients of {func.__name__} w.r.t. ({', '.join(wrt_names)}) "
                            "in one flat array (for hessian: forward mode over it).")
    return getattr(codegen.import_module(path), name)


class _GradientOnlySpecialization(Specialization):
    """A gradient specialization whose ``grad`` entry (all hvp calls) runs the adjoint without
    the value; the other entries are the ordinary ones."""

    def __init__(self, module, name, source, path, key):
        super().__init__(module, name, source, path, key)
        self.gradient_only = getattr(module, naming.MODULE_GRADIENT_ONLY, None)
        self.hessian_columns = getattr(module, naming.MODULE_HESSIAN_COLUMNS, None)

    def _call(self, entry, values, extra):
        if entry == "grad" and self.gradient_only is not None:
            return self.gradient_only(*values, self.one)
        return super()._call(entry, values, extra)


class _TangentGradient(GradFunction):
    """The gradient of a generated tangent function (hvp's inner function), built from
    :func:`_gradient_only` modules."""

    def _build(self, kinds, precision):
        from .program import build_module
        if self._default_plan() is not None:
            return super()._build(kinds, precision)
        sources = helper_sources(self.func)
        key = codegen.cache_key(self.target, kinds, precision, self.wrt_names, self.single, _GRADIENT_ONLY,
                                *sorted(sources.values()))
        path = codegen.module_path(self.func.__name__, key)
        if not os.path.exists(path):
            source, _, _, _ = build_module(self.func, kinds, self.wrt_names, self.target, self.single,
                                           precision)
            count = len(self.params) - len(self.wrt_indices)       # f's own parameters
            index = self.wrt_indices[0]
            square = self.single and kinds[index].is_array
            codegen.write_module(path, _gradient_only(source, (index, count) if square else None))
        module = codegen.import_module(path)
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        spec = _GradientOnlySpecialization(module, self.func.__name__, source, path, (kinds, precision))
        spec.plan = None
        return spec


class _ForwardBase(GradFunction):
    """Shared argument handling: ``(*args, direction)`` calls with f's own kinds and precision."""

    def _split(self, args, kwargs):
        if not args:
            raise TypeError(f"{self.__name__} takes f's arguments followed by the direction")
        values = tuple(_prepare(v) for v in self._bind(args[:-1], kwargs))
        return values, args[-1]

    def specialize(self, *args, **kwargs):
        values = tuple(_prepare(v) for v in self._bind(args, kwargs))
        return self._specialization(self.kinds_of(values), precision_of(values))

    def source_for(self, *args, **kwargs):
        """The generated source for f's arguments ``args`` (no direction needed)."""
        return self.specialize(*args, **kwargs).source


class JvpFunction(_ForwardBase):
    """``jvp(f, wrt)``: call with f's arguments and then the tangent(s)."""

    def __init__(self, func, wrt=0, target="cpu"):
        super().__init__(func, wrt=wrt, target=target, mode="jvp")

    def _build(self, kinds, precision):
        module, name, source, path = _forward_module(self.func, kinds, self.wrt_names, self.target, precision)
        return ForwardSpecialization(module, name, source, path, (kinds, precision))

    def __call__(self, *args, **kwargs):
        # fast path (as GradFunction's): the argument types find the specialization
        key = _call_key(args[:-1]) if not kwargs and len(args) == len(self.params) + 1 else None
        spec = self._by_call_key.get(key) if key is not None else None
        if spec is not None:
            values, tangent = args[:-1], args[-1]
            self._last = spec
        else:
            values, tangent = self._split(args, kwargs)
            spec = self._specialization(self.kinds_of(values), precision_of(values))
            if key is not None:
                self._by_call_key[key] = spec
        tangents = _tangents(self, values, tangent)
        value, derivative = self._run(spec, "jvp", values, tangents)
        return _to_python_scalar(value), _to_python_scalar(derivative)

    @property
    def njit(self):
        """``g(*args, tangent)`` callable from ``@numba.njit`` code (cpu target)."""
        if self._entry is None:
            self._entry = _make_entry(self, lambda spec: spec.jvp, tangent_last=True)
        return self._entry


class HvpFunction(_ForwardBase):
    """``hvp(f, wrt)``: H·v for a scalar f, by reverse mode over the generated tangent function."""

    def __init__(self, func, wrt=0, target="cpu"):
        super().__init__(func, wrt=wrt, target=target, mode="hvp")
        self._inner = {}

    def inner(self, kinds, precision):
        """The gradient (w.r.t. wrt) of the tangent function for these kinds: H·v."""
        key = (kinds, precision)
        inner = self._inner.get(key)
        if inner is None:
            # the tangent function as plain NumPy source (float64 literals: the reverse
            # transformation writes them in the working precision itself)
            from .program import ModuleBuilder
            _, result_kind = ModuleBuilder("python").analysis_of(self.func, tuple(kinds))
            if result_kind.is_array or result_kind.cls == "tuple":
                raise SrcgradError(f"hvp/hessian need a scalar (float) function; {self.func.__name__} "
                                   f"returns a {result_kind} (use srcgrad.jacobian, jvp or vjp)")
            module, name, source, path = _forward_module(self.func, kinds, self.wrt_names, "python",
                                                         "float64", lowered=False)
            for helper, what in (("cumprod_tangent(", "np.cumprod"),):
                if helper in source:
                    raise SrcgradError(f"hvp/hessian of {self.func.__name__}: the second derivative "
                                       f"of {what} is not supported (its tangent uses a runtime helper "
                                       f"that has no adjoint); jvp and grad of {what} work")
            tangent_function = getattr(module, f"{name}_tangent")
            wrt = self.wrt_indices[0] if self.single else tuple(self.wrt_indices)
            inner = _TangentGradient(tangent_function, wrt=wrt, target=self.target, mode="grad")
            self._inner[key] = inner
        return inner

    def _specialization(self, kinds, precision="float64"):
        inner = self.inner(kinds, precision)
        wrt_kinds = tuple(kinds[i] for i in self.wrt_indices)
        spec = inner._specialization(tuple(kinds) + wrt_kinds, precision)
        self._last = spec
        return spec

    def __call__(self, *args, **kwargs):
        key = _call_key(args[:-1]) if not kwargs and len(args) == len(self.params) + 1 else None
        inner = self._by_call_key.get(key) if key is not None else None
        if inner is not None:
            values, direction = args[:-1], args[-1]
        else:
            values, direction = self._split(args, kwargs)
            kinds = self.kinds_of(values)
            precision = precision_of(values)
            inner = self.inner(kinds, precision)
            self._last = inner._specialization(tuple(kinds) + tuple(kinds[i] for i in self.wrt_indices),
                                               precision)
            if key is not None:
                self._by_call_key[key] = inner
        return inner(*values, *_tangents(self, values, direction))

    @property
    def njit(self):
        """``h(*args, v)`` callable from ``@numba.njit`` code (cpu target)."""
        if self._entry is None:
            self._entry = _make_entry(self, lambda spec: spec.grad, tangent_last=True)
        return self._entry


class HessianFunction(_ForwardBase):
    """``hessian(f, wrt)``: the dense Hessian. Of one array argument: forward mode over the
    gradient with BATCH directions per sweep (forward_batch) where the gradient code is in the
    batched subset, else one hvp sweep per column in one compiled call; tuple ``wrt`` and float
    arguments: forward mode over the flat gradient (one sweep per chunk of BATCH columns), else
    one hvp call per column. ``last_path`` says which ran, ``.source`` (after a call) shows its
    code."""

    def __init__(self, func, wrt=0, target="cpu"):
        super().__init__(func, wrt=wrt, target=target, mode="hessian")
        self._hvp = HvpFunction(func, wrt=wrt, target=target)
        self._batched_drivers = {}      # (kinds, precision) -> (forward-over-reverse driver, its
        #                                 specialization: what .source shows after a call), or None
        self.last_path = None           # "batched", "hvp sweeps in one call" or "hvp per column"
        self._batched_ok = set()        # ids of the drivers whose first call succeeded

    def _specialization(self, kinds, precision="float64"):
        spec = self._hvp._specialization(kinds, precision)
        self._last = spec
        return spec

    def __call__(self, *args, **kwargs):
        values = tuple(_prepare(v) for v in self._bind(args, kwargs))
        kinds = self.kinds_of(values)
        if self.single and isinstance(values[self.wrt_indices[0]], np.ndarray):
            batched = self._batched(kinds, precision_of(values))
            if batched is not None:
                H = _call_batched(self, batched[0], values)
                if H is not None:
                    self._last = batched[1]
                    self.last_path = "batched"
                    return H
            # one array argument: all the sweeps in one (compiled) call
            spec = self._hvp._specialization(kinds, precision_of(values))
            self._last = spec
            if getattr(spec, "hessian_columns", None) is not None:
                self.last_path = "hvp sweeps in one call"
                return self._hvp._run(spec, "hessian_columns", values, (spec.one,))
        blocks = self._batched_blocks(kinds, values)
        if blocks is not None:
            self.last_path = "batched"
            return blocks
        self.last_path = "hvp per column"
        return self._by_columns(values)

    def _batched_blocks(self, kinds, values):
        """Tuple ``wrt`` and float arguments: the blocks from forward mode over the flat gradient,
        BATCH directions per sweep (one compiled sweep per chunk, the chunks from Python), or None
        where that code is outside the batched subset."""
        precision = precision_of(values)
        key = ("flat", kinds, precision)
        if key not in self._batched_drivers:
            entry = None
            try:
                gradient = _flat_gradient_function(self.func, kinds, self.wrt_names, "float64")
                module, name, source, path = _forward_module(gradient, tuple(kinds) + (_FLOAT,), self.wrt_names,
                                                             self.target, precision)
                if hasattr(module, f"{name}_batch"):
                    entry = (getattr(module, f"{name}_batch"),
                             ForwardSpecialization(module, name, source, path, key))
            except SrcgradError:
                entry = None
            self._batched_drivers[key] = entry
        entry = self._batched_drivers[key]
        if entry is None:
            return None
        from .forward_batch import BATCH
        xs = [values[i] for i in self.wrt_indices]
        shapes = [np.shape(x) for x in xs]
        sizes = [int(np.prod(s)) for s in shapes]
        dtypes = [x.dtype if isinstance(x, np.ndarray) else np.dtype(np.float64) for x in xs]
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(int)
        total = int(offsets[-1])
        seed = dtypes[0].type(1.0)
        H = None
        for c in range(0, total, BATCH):
            w = min(BATCH, total - c)
            directions = []
            for i in range(len(xs)):
                E = np.zeros((sizes[i], BATCH), dtype=dtypes[i])
                for k in range(w):
                    if offsets[i] <= c + k < offsets[i + 1]:
                        E[c + k - offsets[i], k] = 1.0
                directions.append(E.reshape(shapes[i] + (BATCH,)))
            try:
                _, T = self._call_entry(entry, values, seed, directions)
            except _FirstCallFailed:
                return None
            if H is None:
                H = np.empty((total, total), dtype=T.dtype)
            H[:, c:c + w] = T[:, :w]
        self._last = entry[1]
        blocks = [[_scalar_if_0d(np.ascontiguousarray(H[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]],
                                                      dtype=dtypes[i]).reshape(shapes[i] + shapes[j]))
                   for j in range(len(xs))] for i in range(len(xs))]
        if self.single:
            return blocks[0][0]
        return tuple(tuple(row) for row in blocks)

    def _call_entry(self, entry, values, seed, directions):
        """The batched function's result; on a failing first call (a construct the compiled
        backend does not take) the entry is dropped and :class:`_FirstCallFailed` raised."""
        if id(entry[0]) in self._batched_ok:
            return entry[0](*values, seed, *directions)
        try:
            out = entry[0](*values, seed, *directions)
        except Exception:   # noqa: BLE001  (the first call only; the fallback re-raises real errors)
            for key, held in list(self._batched_drivers.items()):
                if held is entry:
                    self._batched_drivers[key] = None
            raise _FirstCallFailed from None
        self._batched_ok.add(id(entry[0]))
        return out

    def _batched(self, kinds, precision):
        """Forward mode over the gradient, several directions per sweep (forward_batch): the
        compiled driver, or None where the gradient code has a construct the batched forward mode
        does not take (tapes, array statements, helpers: the hvp sweeps serve, one per column)."""
        key = (kinds, precision)
        if key not in self._batched_drivers:
            driver = None
            try:
                # (float64 literals in the gradient's source: the forward transformation writes
                # them in the working precision itself)
                gradient = _gradient_function(self.func, kinds, self.wrt_names[0], "float64")
                module, name, source, path = _forward_module(gradient, tuple(kinds) + (_FLOAT,), self.wrt_names,
                                                             self.target, precision)
                if hasattr(module, f"{name}_batch"):
                    driver = (getattr(module, naming.MODULE_JACOBIAN_COLUMNS),
                              ForwardSpecialization(module, name, source, path, key))
            except SrcgradError:
                driver = None
            self._batched_drivers[key] = driver
        return self._batched_drivers[key]

    def _by_columns(self, values):
        """One hvp call from Python per basis vector (tuple wrt, float arguments)."""
        xs = [values[i] for i in self.wrt_indices]
        shapes = [np.shape(x) for x in xs]
        sizes = [int(np.prod(s)) for s in shapes]
        dtypes = [np.asarray(x).dtype if isinstance(x, np.ndarray) else np.dtype(np.float64) for x in xs]
        blocks = [[np.empty(shapes[i] + shapes[j], dtype=dtypes[i]) for j in range(len(xs))]
                  for i in range(len(xs))]
        for j, (shape, size) in enumerate(zip(shapes, sizes)):
            for k in range(size):
                direction = []
                for i, x in enumerate(xs):
                    e = np.zeros(shapes[i], dtype=dtypes[i])
                    if i == j:
                        e.reshape(-1)[k] = 1.0
                    direction.append(e if shapes[i] else dtypes[i].type(e[()]))
                columns = self._hvp(*values, direction[0] if self.single else tuple(direction))
                columns = (columns,) if self.single else columns
                for i, column in enumerate(columns):
                    # column k of the (i, j) block: H[i][..., index of k in x_j]
                    block = blocks[i][j].reshape(shapes[i] + (size,))
                    block[..., k] = column
        out = [[_scalar_if_0d(b) for b in row] for row in blocks]
        if self.single:
            return out[0][0]
        return tuple(tuple(row) for row in out)

    @property
    def njit(self):
        """``hessian(*args)`` callable from ``@numba.njit`` code (one wrt argument): a compiled
        loop of hvp sweeps over the basis vectors."""
        if self._entry is None:
            self._entry = _make_driver_entry(self, "hessian")
        return self._entry


class JacobianFunction(_ForwardBase):
    """``jacobian(f, wrt)``: shape ``f(x).shape + x.shape``; forward mode (one jvp per input
    element) when the inputs are no more than the outputs, else reverse mode (one vjp per output
    element)."""

    def __init__(self, func, wrt=0, target="cpu"):
        super().__init__(func, wrt=wrt, target=target, mode="jacobian")
        wrt_spec = self.wrt_indices[0] if self.single else tuple(self.wrt_indices)
        self._jvp = JvpFunction(func, wrt=wrt_spec, target=target)
        self._vjp = GradFunction(func, wrt=wrt_spec, target=target, mode="vjp")
        self.last_mode = None

    def _specialization(self, kinds, precision="float64"):
        spec = self._jvp._specialization(kinds, precision)
        self._last = spec
        return spec

    def __call__(self, *args, **kwargs):
        values = tuple(_prepare(v) for v in self._bind(args, kwargs))
        self.kinds_of(values)
        xs = [values[i] for i in self.wrt_indices]
        shapes = [np.shape(x) for x in xs]
        sizes = [int(np.prod(s)) for s in shapes]
        dtypes = [np.asarray(x).dtype if isinstance(x, np.ndarray) else np.dtype(np.float64) for x in xs]
        value, pullback = self._vjp(*values)
        out_shape = np.shape(value)
        out_size = int(np.prod(out_shape))
        out_dtype = np.asarray(value).dtype
        blocks = [np.empty(out_shape + shape, dtype=out_dtype) for shape in shapes]
        flat = [b.reshape(out_size, size) for b, size in zip(blocks, sizes)]
        if sum(sizes) <= out_size:
            self.last_mode = "forward"
            spec = self._jvp._specialization(self.kinds_of(values), precision_of(values))
            self._last = spec
            if self.single and sizes[0] > 0 and spec.jacobian_columns is not None:
                # one array argument, an array result: all the sweeps in one (compiled) call
                flat[0][...] = np.asarray(self._jvp._run(spec, "jacobian_columns", values)).reshape(out_size, sizes[0])
                return blocks[0]
            for j, (shape, size) in enumerate(zip(shapes, sizes)):
                for k in range(size):
                    direction = []
                    for i in range(len(xs)):
                        e = np.zeros(shapes[i], dtype=dtypes[i])
                        if i == j:
                            e.reshape(-1)[k] = 1.0
                        direction.append(e if shapes[i] else dtypes[i].type(e[()]))
                    _, column = self._jvp(*values, direction[0] if self.single else tuple(direction))
                    flat[j][:, k] = np.ravel(column)
        else:
            self.last_mode = "reverse"
            for r in range(out_size):
                seed = np.zeros(out_shape, dtype=out_dtype)
                seed.reshape(-1)[r] = 1.0
                rows = pullback(seed if out_shape else out_dtype.type(seed[()]))
                rows = (rows,) if self.single else rows
                for j, row in enumerate(rows):
                    flat[j][r, :] = np.ravel(row)
        out = [_scalar_if_0d(b) for b in blocks]
        return out[0] if self.single else tuple(out)

    @property
    def njit(self):
        """``jacobian(*args)`` callable from ``@numba.njit`` code (one wrt argument): a compiled
        loop of jvp sweeps (inputs no more than outputs) or vjp sweeps (otherwise)."""
        if self._entry is None:
            self._entry = _make_driver_entry(self, "jacobian")
        return self._entry


class _FirstCallFailed(Exception):
    """The first call of a batched hessian function failed: the hvp path serves."""


def _call_batched(fn, driver, values):
    """The batched driver's Hessian (the seed 1.0 last), or None when its first call fails (a
    construct the compiled backend does not take in the batched code): the caller's hvp sweeps
    serve then, and their errors are the ones the user sees."""
    seed = values[fn.wrt_indices[0]].dtype.type(1.0)
    if id(driver) in fn._batched_ok:
        return driver(*values, seed)
    try:
        out = driver(*values, seed)
    except Exception:   # noqa: BLE001  (the first call only; the fallback re-raises real errors)
        for key, held in list(fn._batched_drivers.items()):
            if held is not None and held[0] is driver:
                fn._batched_drivers[key] = None
        return None
    fn._batched_ok.add(id(driver))
    return out


def _scalar_if_0d(array):
    return float(array[()]) if array.ndim == 0 and array.dtype == np.float64 else \
        (array[()] if array.ndim == 0 else array)


def _make_entry(fn, compiled_of, tangent_last):
    """A function callable from ``@numba.njit`` code. For jvp, the compiled tangent function
    itself is inlined; the others call back into the interpreter (numba.objmode), which is
    correct for any kinds (each hvp/hessian/jacobian call runs compiled sweeps)."""
    from numba.extending import overload

    def entry(*args):
        return fn(*args)
    entry.__name__ = f"{fn.func.__name__}_{fn.mode}_njit"

    @overload(entry, prefer_literal=False)
    def _typed_entry(*args):
        from .backends.compose import numba_precision
        from .kinds import kind_of_numba_type
        types = args[0].types if len(args) == 1 and type(args[0]).__name__ == "StarArgTuple" else args
        f_types = types[:-1] if tangent_last else types
        kinds = tuple(kind_of_numba_type(t) for t in f_types)
        spec = fn._specialization(fn._check_kinds(kinds), numba_precision(f_types))
        target = compiled_of(spec)
        if fn.single:
            def impl(*args):
                return target(*args)
        else:
            count = len(fn.wrt_indices)
            namespace = {"target": target}
            parts = ", ".join(f"args[-1][{k}]" for k in range(count))
            exec(f"def impl(*args):\n    return target(*args[:-1], {parts})\n", namespace)  # noqa: S102
            impl = namespace["impl"]
        return impl

    return entry


# Compiled drivers of hessian/jacobian for njit code: a loop over the basis vectors of the (one)
# differentiated argument, calling the compiled hvp / jvp / vjp of each direction.
_HESSIAN_DRIVER = """
def impl(*args):
    x = args[{index}]
    n = x.size
    H = np.empty((n, n), dtype=x.dtype)
    for k in range(n):
        e = np.zeros(n, dtype=x.dtype)
        e[k] = 1.0
        column = hvp(*args, e.reshape(x.shape))
        H[:, k] = column.ravel()
    return H.reshape(x.shape + x.shape)
"""

_JACOBIAN_DRIVER = """
def impl(*args):
    x = args[{index}]
    n = x.size
    value = primal(*args)
    out = np.asarray(value)
    m = out.size
    J = np.empty((m, n), dtype=out.dtype)
    if n <= m:
        for k in range(n):
            e = np.zeros(n, dtype=x.dtype)
            e[k] = 1.0
            J[:, k] = np.asarray(jvp(*args, e.reshape(x.shape))[1]).ravel()
    else:
        for r in range(m):
            seed = np.zeros(m, dtype=out.dtype)
            seed[r] = 1.0
            J[r, :] = vjp(*args, {seed})[1][0].ravel()
    return J.reshape(out.shape + x.shape)
"""


def _make_driver_entry(fn, kind):
    from numba.extending import overload

    def entry(*args):
        return fn(*args)
    entry.__name__ = f"{fn.func.__name__}_{kind}_njit"

    @overload(entry, prefer_literal=False)
    def _typed_entry(*args):
        from numba.core import types as nt
        from .backends.compose import numba_precision
        from .kinds import kind_of_numba_type
        types = args[0].types if len(args) == 1 and type(args[0]).__name__ == "StarArgTuple" else args
        if not fn.single or not isinstance(types[fn.wrt_indices[0]], nt.Array):
            raise SrcgradError(f"{kind}(...).njit differentiates one array argument; call the {kind} "
                               "object from Python for tuple wrt or float arguments")
        kinds = fn._check_kinds(tuple(kind_of_numba_type(t) for t in types))
        precision = numba_precision(types)
        namespace = {"np": np}
        if kind == "hessian":
            namespace["hvp"] = fn._hvp._specialization(kinds, precision).grad
            source = _HESSIAN_DRIVER.format(index=fn.wrt_indices[0])
        else:
            jvp_spec = fn._jvp._specialization(kinds, precision)
            vjp_spec = fn._vjp._specialization(kinds, precision)
            namespace.update(jvp=jvp_spec.jvp, vjp=vjp_spec.vjp, primal=vjp_spec.primal)
            from .program import ModuleBuilder
            scalar = not ModuleBuilder("python").analysis_of(fn.func, kinds)[1].is_array
            source = _JACOBIAN_DRIVER.format(index=fn.wrt_indices[0],
                                             seed="seed[0]" if scalar else "seed.reshape(out.shape)")
        exec(source, namespace)  # noqa: S102  (a fixed template)
        return namespace["impl"]

    return entry


def _decorator(cls, mode):
    def api(func=None, *, wrt=0, target="cpu"):
        def make(f):
            if target not in ("cpu", "python"):
                raise ValueError(f"{mode} supports target='cpu' or 'python', got {target!r}")
            return cls(f, wrt=wrt, target=target)
        if func is None:
            return make
        if isinstance(func, (int, str, tuple, list)):
            raise TypeError(f"{mode}(...) takes the function first; use {mode}(f, wrt=...)")
        return make(func)
    api.__name__ = mode
    return api


jvp = _decorator(JvpFunction, "jvp")
jvp.__doc__ = """Jacobian-vector product by forward mode: ``jvp(f, wrt=0)(*args, tangent)`` returns
``(f(*args), directional derivative)``; for a tuple ``wrt``, ``tangent`` is a tuple with one entry
per differentiated argument (each of its argument's shape). The derivative has f's value shape."""

hvp = _decorator(HvpFunction, "hvp")
hvp.__doc__ = """Hessian-vector product of a scalar f: ``hvp(f, wrt=0)(*args, v)`` returns H·v with the
structure of ``wrt`` (a tuple for a tuple ``wrt``). Reverse mode over the generated forward mode."""

hessian = _decorator(HessianFunction, "hessian")
hessian.__doc__ = """Dense Hessian of a scalar f: shape ``x.shape + x.shape`` (a float for a float
argument); for a tuple ``wrt`` a tuple of tuples of blocks ``H[i][j]`` of shape
``x_i.shape + x_j.shape``."""

jacobian = _decorator(JacobianFunction, "jacobian")
jacobian.__doc__ = """Jacobian of f: shape ``f(x).shape + x.shape`` (a tuple of blocks for a tuple
``wrt``), by forward mode when the inputs are no more than the outputs, else by reverse mode."""


def _write_one_function(path, source, name, args, body, doc):
    """Write a module at ``path`` holding the header and imports of the generated module
    ``source`` and one function ``name(args)``: ``doc``, then ``body``."""
    function = ast.FunctionDef(name=name, args=args, body=[ast.Expr(value=ast.Constant(doc))] + body,
                               decorator_list=[], returns=None, type_comment=None, type_params=[])
    text = ast.unparse(ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[])))
    head = source[:source.index("\n\n\n")]
    codegen.write_module(path, f"{head}\n\n\n{text}\n")
