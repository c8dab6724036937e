"""CUDA array mode, stage 2: fuse a traced graph into CUDA kernels and run them.

Input: the :class:`~srcgrad.cuda.array_graph.Graph` of a generated adjoint (static shapes).
Output: a :class:`Plan` — one generated module of ``@cuda.jit`` kernels plus a fixed list of
launches into preallocated device buffers.  Calling the plan runs one forward and reverse sweep
with no allocation and no host synchronisation.

How the graph becomes kernels:

* **Materialized nodes** get a device buffer: matrix products, reductions, scatters, slice
  writes, the arg-max adjoint, the outputs, and elementwise values read by more than one
  consumer (or by an operation that needs an array in memory, such as a matrix product).
* Every other elementwise node, view, broadcast, gather, ``arange`` and constant is **fused**
  into the kernel of the materialized node that reads it: the kernel computes it in registers
  at the index it needs.  Views (slices, ``.T``, ``None``) and broadcasting become index
  arithmetic, never copies.
* Matrix products call the tiled shared-memory GEMM of :mod:`srcgrad.cuda.kernels`;
  a transposed operand (``a.T @ g``, ``g @ b.T``) is passed untransposed with the transpose flag.
  A bias row added to a product (``X @ W1 + b1``) is fused into the GEMM epilogue.
* Reductions are one block per output element with a shared-memory tree (no atomics); the
  reduced expression (``np.exp(z - m)``) is fused into the reduction loop.
* Scatter-adds (the adjoint of a label gather) use atomics on the few scattered elements only.

The generated kernel module is readable: each kernel's docstring names the generated statement
it computes, and each fused line carries the statement it comes from.  ``Plan.source`` has it.

Index errors (a label out of range in a gather) set a status flag instead of reading out of
bounds; :meth:`Plan.check` raises them as ``IndexError``.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .. import codegen
from . import kernels as ck
from .array_codegen import (EW_EXPRESSIONS, _MODULE_HEADER, _Kernel, _broadcast_index, _cast, _const_only,
                            _flat_to_index, _literal)
from .device import SIMULATOR

EW_BLOCK = 256
EW_MAX_GRID = 4096
MAX_REDUCE_BLOCK = 256
# A value read by a few kernels is recomputed in each (not stored) when that costs at most this
# many operations: at these sizes a kernel launch costs far more than a few flops per element.
RECOMPUTE_MAX_OPS = 4
RECOMPUTE_MAX_USERS = 3

_MATERIAL_OPS = {"matmul", "reduce", "scatter_add2", "scatter_add1", "argindex"}
_GIVEN_OPS = {"input", "scalar"}


def _pow2_at_least(n, lo=32, hi=MAX_REDUCE_BLOCK):
    p = lo
    while p < n and p < hi:
        p *= 2
    return p


class Plan:
    """Kernels and launches for one traced graph (one shape signature)."""

    def __init__(self, graph, name="program"):
        self.graph = graph
        self.name = name
        self.live = self._live_nodes()
        self.users = self._count_users()
        self._material = {}
        self.kernels = []
        self.steps = []        # (kind, data) in execution order
        self._decide_materialization()
        self._build_kernels()

    # -- analysis -----------------------------------------------------------------------------
    def _live_nodes(self):
        live, stack = set(), list(self.graph.outputs)
        while stack:
            node = stack.pop()
            if node.id in live:
                continue
            live.add(node.id)
            stack.extend(node.args)
        return live

    def _count_users(self):
        users = {}
        for node in self.graph.nodes:
            if node.id in self.live:
                for a in node.args:
                    users.setdefault(a.id, []).append(node)
        for node in self.graph.outputs:
            users.setdefault(node.id, []).append(None)
        return users

    def materialized(self, node):
        return self._material.get(node.id, False)

    def _inline_cost(self, node):
        """Operations to recompute ``node`` where it is read (its fused, unmaterialized tree)."""
        if node.op in _GIVEN_OPS or node.op in ("const", "iota") or self.materialized(node):
            return 0
        if node.op in ("view", "reshape") or (node.op == "ew" and node.attrs["fn"] in ("copy", "cast")):
            own = 0
        elif node.op in ("scatter_rows", "setslice", "argext_scatter"):
            own = 2
        else:
            own = 1
        return own + sum(self._inline_cost(a) for a in node.args)

    def _cheap(self, node):
        """Values recomputed wherever they are read instead of stored."""
        if node.op in ("const", "iota", "scalar", "input"):
            return True
        if node.op == "view":
            return self._cheap(node.args[0]) or self.materialized(node.args[0])
        if node.op == "ew" and node.attrs["fn"] in ("copy", "cast", "neg"):
            return all(self._cheap(a) or self.materialized(a) for a in node.args)
        return False

    def _decide_materialization(self):
        outputs = {n.id for n in self.graph.outputs}
        needs_memory = set()
        for node in self.graph.nodes:
            if node.id not in self.live:
                continue
            if node.op == "matmul":
                for a in node.args:
                    needs_memory.add(a.args[0].id if self._transposed_buffer(a) else a.id)
            elif node.op in ("reshape", "argindex"):
                needs_memory.add(node.args[0].id)
        for node in self.graph.nodes:    # graph order: arguments are decided before users
            if node.id not in self.live or node.op in _GIVEN_OPS:
                continue
            if node.op in _MATERIAL_OPS or node.id in outputs:
                self._material[node.id] = True
            elif node.op == "reshape":
                self._material[node.id] = False     # aliases its base buffer
            elif node.id in needs_memory:
                self._material[node.id] = True
            elif len(self.users.get(node.id, ())) > 1 and self._bias_operands(node):
                self._material[node.id] = True      # free: the GEMM epilogue writes it
            elif len(self.users.get(node.id, ())) > 1 and not self._cheap(node) and not (
                    len(self.users[node.id]) <= RECOMPUTE_MAX_USERS
                    and self._inline_cost(node) <= RECOMPUTE_MAX_OPS):
                self._material[node.id] = True
        self._fuse_bias_into_gemm()
        self._pair_argindex_with_reduction()
        self._fuse_reduction_epilogues()

    def _fuse_reduction_epilogues(self):
        """``mean = total / n``: an elementwise value computed only from a reduction's result
        (and constants) is written by the reduction kernel itself."""
        self.epilogue = {}       # reduce node id -> the elementwise node it writes instead
        self.in_epilogue = set()
        outputs = {n.id for n in self.graph.outputs}
        for node in self.graph.nodes:
            if not (node.id in self.live and node.op == "reduce" and node.id not in outputs
                    and node.id not in self.argindex_of):
                continue
            users = self.users.get(node.id, [])
            if len(users) != 1 or users[0] is None:
                continue
            user = users[0]
            if (user.op == "ew" and user.shape == node.shape and self.materialized(user)
                    and all(a is node or _const_only(a) for a in user.args)):
                self.epilogue[node.id] = user
                self.in_epilogue.add(user.id)
                self._material[node.id] = False

    def _fuse_bias_into_gemm(self):
        """``C = A @ B + bias`` (a row vector) as one GEMM with a bias epilogue, when the product
        is read by nothing else."""
        self.gemm_bias = {}      # the add node -> (matmul node, bias node)
        for node in self.graph.nodes:
            if node.id in self.live and self.materialized(node):
                operands = self._bias_operands(node)
                if operands:
                    self.gemm_bias[node.id] = operands
                    self._material[operands[0].id] = False

    def _bias_operands(self, node):
        """``(product, bias)`` when ``node`` is ``A @ B + bias`` with a row-vector bias in memory
        and a product nothing else reads; else None."""
        if not (node.op == "ew" and node.attrs["fn"] == "add" and node.ndim == 2):
            return None
        for product, bias in (node.args, tuple(reversed(node.args))):
            if (product.op == "matmul" and self.users.get(product.id) == [node]
                    and product.shape == node.shape and product.dtype == node.dtype == bias.dtype
                    and bias.shape in ((node.shape[1],), (1, node.shape[1]))
                    and (bias.op == "input" or self.materialized(bias))):
                return product, bias
        return None

    def _pair_argindex_with_reduction(self):
        """The arg-max of ``max_adjoint`` comes out of the forward ``np.max`` kernel itself."""
        self.argindex_of = {}    # reduce node id -> argindex node
        self.paired = set()
        for node in self.graph.nodes:
            if node.id not in self.live or node.op != "argindex":
                continue
            kind = "max" if node.attrs["take_max"] else "min"
            for other in self.graph.nodes:
                if (other.id in self.live and other.op == "reduce" and other.attrs["kind"] == kind
                        and other.args[0] is node.args[0] and other.attrs["axes"] == node.attrs["axes"]
                        and other.id not in self.argindex_of):
                    self.argindex_of[other.id] = node
                    self.paired.add(node.id)
                    break

    def _transposed_buffer(self, node):
        """A 2-d ``.T`` view of a value that will be in memory (read by GEMM with a flag)."""
        return (node.op == "view" and node.ndim == 2 and node.args[0].ndim == 2
                and node.attrs["offset"] == (0, 0) and node.attrs["coeff"] == ((0, 1), (1, 0)))

    # -- kernel construction ------------------------------------------------------------------
    def _kernel(self, node, what):
        label = (node.label or f"n{node.id}").lstrip("_")
        name = f"k{len(self.kernels) + 1}_{what}_{label}"
        doc = f"{node.line or node.label or node.op}  [{node.op} -> shape {node.shape}, {node.dtype}]"
        kernel = _Kernel(self, name, doc)
        self.kernels.append(kernel)
        return kernel

    def _build_kernels(self):
        for node in self.graph.nodes:
            if node.id in self.live and node.op == "reduce" and node.id in self.epilogue:
                self._reduce_kernel(node)
                continue
            if (node.id not in self.live or not self.materialized(node) or node.id in self.paired
                    or node.id in self.in_epilogue):
                continue
            if node.op == "matmul":
                self._gemm_step(node, node)
            elif node.id in self.gemm_bias:
                product, bias = self.gemm_bias[node.id]
                self._gemm_step(node, product, bias)
            elif node.op == "reduce":
                self._reduce_kernel(node, self.argindex_of.get(node.id))
            elif node.op == "argindex":
                self._reduce_kernel(node, node)
            elif node.op in ("scatter_add2", "scatter_add1"):
                self._map_kernel(node, node.args[0])
                self._scatter_kernel(node)
            else:
                self._map_kernel(node, node, top=True)

    def _grid_loop(self, kernel, total, names, shape):
        """Grid-stride loop header over ``total`` elements split into ``names`` over ``shape``."""
        kernel.lines += ["flat = cuda.grid(1)", f"while flat < {total}:"]
        return ["f = flat", *_flat_to_index("f", shape, names)] if shape else []

    def _map_kernel(self, node, source, top=False):
        """``out[i] = source[i]`` over ``node``'s shape, ``source`` fused (or the node itself)."""
        kernel = self._kernel(node, "map" if source is node else "copy")
        shape = node.shape
        names = [f"i{d}" for d in range(len(shape))]
        body = self._grid_loop(kernel, max(1, node.size), names, shape)
        value = kernel.emit(source, names, body, top=top)
        value = _cast(value, source.dtype, node.dtype)
        out = kernel.param_for(("node", node.id))
        body.append(f"{out}[{', '.join(names) if shape else '0'}] = {value}")
        body.append("flat += cuda.gridsize(1)")
        kernel.lines += ["    " + b for b in body]
        self.steps.append(("kernel", kernel, _ew_grid(max(1, node.size)), EW_BLOCK))

    def _scatter_kernel(self, node):
        """``out[rows, cols] += values`` with atomics (repeated indices add up)."""
        kernel = self._kernel(node, "scatter")
        _, *index_nodes, values = node.args     # the base was copied into the output first
        shape = values.shape
        names = [f"j{d}" for d in range(len(shape))]
        body = self._grid_loop(kernel, max(1, values.size), names, shape)
        status = kernel.param_for(("status",))
        if node.op == "scatter_add2":
            positions = [kernel.emit(i, _broadcast_index(names, shape, i.shape), body) for i in index_nodes]
            rest = []
        else:
            lead = index_nodes[0].ndim
            positions = [kernel.emit(index_nodes[0], names[:lead], body)]
            rest = names[lead:]
        checked = []
        for axis, p in enumerate(positions):
            size = node.shape[axis]
            name = f"p{axis}"
            body += [f"{name} = {p} if {p} >= 0 else {p} + {size}",
                     f"if {name} < 0 or {name} >= {size}:",
                     f"    {status}[0] = 1  # index out of range", f"    {name} = 0"]
            checked.append(name)
        value = _cast(kernel.emit(values, names, body), values.dtype, node.dtype)
        out = kernel.param_for(("node", node.id))
        target = ", ".join(checked + rest)
        body += [f"cuda.atomic.add({out}, ({target},), {value})" if len(checked + rest) > 1
                 else f"cuda.atomic.add({out}, {target}, {value})", "flat += cuda.gridsize(1)"]
        kernel.lines += ["    " + b for b in body]
        self.steps.append(("kernel", kernel, _ew_grid(max(1, values.size)), EW_BLOCK))

    def _reduction_layout(self, x, axes):
        kept = [d for d in range(x.ndim) if d not in axes]
        n_out = int(np.prod([x.shape[d] for d in kept], dtype=np.int64))
        n_red = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
        return kept, n_out, n_red

    def _reduce_kernel(self, node, argindex=None):
        """One block per output element; threads stride over the reduced elements; a tree in
        shared memory combines them (no atomics).  max/min propagate NaN as NumPy does.  With
        ``argindex`` the kernel also writes the flat reduced index of the first extreme element
        (NumPy's argmax/argmin: first NaN, else first maximum) — for ``max_adjoint``."""
        x = node.args[0]
        kernel = self._kernel(node, "reduce" if node.op == "reduce" else "argindex")
        axes = node.attrs["axes"]
        kind = node.attrs["kind"] if node.op == "reduce" else ("max" if node.attrs["take_max"] else "min")
        write_value = node.op == "reduce"
        kept, n_out, n_red = self._reduction_layout(x, axes)
        block = _pow2_at_least(n_red)
        dt = node.dtype if write_value else x.dtype
        identity = {"sum": 0, "max": -math.inf, "min": math.inf}[kind]
        if dt.kind in "iu" and kind != "sum":
            identity = np.iinfo(dt).min if kind == "max" else np.iinfo(dt).max
        beats = {"max": ">", "min": "<"}.get(kind)
        if argindex is None:
            combine = {"sum": ["{a} = {a} + {b}"],
                       "max": ["{a} = {b} if ({b} > {a} or {b} != {b}) else {a}"],
                       "min": ["{a} = {b} if ({b} < {a} or {b} != {b}) else {a}"]}[kind]
        else:   # (value, index) pairs: NaN first, then the extreme value, ties to the lower index
            combine = ["if {bi} >= 0 and ({ai} < 0 or ({b} != {b} and ({a} == {a} or {bi} < {ai})) or "
                       "({a} == {a} and ({b} " + beats + " {a} or ({b} == {a} and {bi} < {ai})))):",
                       "    {a} = {b}", "    {ai} = {bi}"]
        names = [f"i{d}" for d in range(x.ndim)]
        L = kernel.lines
        L += [f"cache = cuda.shared.array({block}, np.{dt.name})"]
        if argindex is not None:
            L += [f"where = cuda.shared.array({block}, np.int64)"]
        L += ["t = cuda.threadIdx.x", "o = cuda.blockIdx.x", f"while o < {n_out}:"]
        inner = _flat_to_index("o", [x.shape[d] for d in kept], [names[d] for d in kept]) if kept else []
        inner += [f"acc = {_literal(identity, dt)}"] + (["acc_at = -1"] if argindex is not None else [])
        inner += ["r = t", f"while r < {n_red}:"]
        loop = _flat_to_index("r", [x.shape[d] for d in axes], [names[d] for d in axes])
        kernel.scope()
        value = _cast(kernel.emit(x, names, loop), x.dtype, dt)
        if value != "v":
            loop.append(f"v = {value}")
        loop += [line.format(a="acc", b="v", ai="acc_at", bi="r") for line in combine]
        loop.append(f"r += {block}")
        inner += ["    " + line for line in loop]
        inner += ["cache[t] = acc"] + (["where[t] = acc_at"] if argindex is not None else [])
        inner += ["cuda.syncthreads()", f"width = {block // 2}", "while width > 0:", "    if t < width:",
                  "        other = cache[t + width]"]
        if argindex is not None:
            inner += ["        other_at = where[t + width]"]
        inner += ["        " + line.format(a="acc", b="other", ai="acc_at", bi="other_at") for line in combine]
        inner += ["        cache[t] = acc"] + (["        where[t] = acc_at"] if argindex is not None else [])
        inner += ["    cuda.syncthreads()", "    width //= 2", "if t == 0:"]
        if write_value:
            out_index = [names[d] if d not in axes else "0" for d in range(x.ndim)
                         if d not in axes or d in node.attrs["kept"]]
            target = self.epilogue.get(node.id, node)
            value = "cache[0]"
            if target is not node:      # the fused elementwise epilogue, computed on the result
                kernel.scope()
                kernel._memo[(node.id, tuple(out_index))] = "cache[0]"
                lines = []
                value = _cast(kernel.emit(target, out_index, lines, top=True), target.dtype, target.dtype)
                inner += ["    " + line for line in lines]
            out = kernel.param_for(("node", target.id))
            inner += [f"    {out}[{', '.join(out_index) if out_index else '0'}] = {value}"]
        if argindex is not None:
            at = kernel.param_for(("node", argindex.id))
            at_index = [names[d] if d not in axes else "0" for d in range(x.ndim)]
            inner += [f"    {at}[{', '.join(at_index) if at_index else '0'}] = where[0]"]
        inner += ["cuda.syncthreads()", "o += cuda.gridDim.x"]
        L += ["    " + line for line in inner]
        self.steps.append(("kernel", kernel, max(1, min(n_out, 65535)), block))

    def _gemm_step(self, node, product, bias=None):
        """``node = op(A) @ op(B) (+ bias)``: transposed views are read with the GEMM's flags."""
        operands = []
        for operand in product.args:
            if self._transposed_buffer(operand) and not self.materialized(operand):
                operands.append((operand.args[0], True))
            else:
                operands.append((operand, False))
        self.steps.append(("gemm", node, operands, bias))

    def kernel_signatures(self):
        """``(kernel name, numba signature)`` of every generated kernel (for compile_ptx checks)."""
        from numba import types
        from numba.np.numpy_support import from_dtype
        out = []
        for kernel in self.kernels:
            argtypes = []
            for _, source in kernel.params:
                if source[0] == "status":
                    argtypes.append(types.Array(types.int32, 1, "C"))
                    continue
                node = self.graph.nodes[source[1]]
                scalar = from_dtype(node.dtype)
                argtypes.append(scalar if source[0] == "scalar" else
                                types.Array(scalar, max(1, node.ndim), "A"))
            out.append((kernel.name, types.void(*argtypes)))
        return out

    # -- module ------------------------------------------------------------------------------
    def module_source(self):
        summary = "\n".join(
            f"  {i + 1:2d}. {('gemm ' + self._gemm_text(s)) if s[0] == 'gemm' else s[1].name}"
            for i, s in enumerate(self.steps))
        header = _MODULE_HEADER.format(name=self.name, summary="Launch order:\n" + summary,
                                       cache="False" if SIMULATOR else "True")
        return header + "\n\n" + "\n\n".join(k.source() for k in self.kernels)

    def _gemm_text(self, step):
        _, node, operands, bias = step
        parts = [f"{(o.label or 'n%d' % o.id)}{'.T' if t else ''}" for o, t in operands]
        plus = f" + {bias.label or 'n%d' % bias.id}" if bias is not None else ""
        return f"{node.label or 'n%d' % node.id} = {parts[0]} @ {parts[1]}{plus}"


def _ew_grid(total):
    return max(1, min(EW_MAX_GRID, (total + EW_BLOCK - 1) // EW_BLOCK))


# ------------------------------------------------------------------------------------------------
# Running a plan
# ------------------------------------------------------------------------------------------------

# One kernel launch of a plan: the kernel configured for the default stream, its parameters, and
# what configuring it for another stream needs (a CUDA graph records the launches of one stream).
_KernelLaunch = namedtuple("_KernelLaunch", "kind configured params function grid block")


class CompiledPlan:
    """A :class:`Plan` with its kernels imported, device buffers allocated and launches configured.

    ``run(inputs, scalars)`` executes one sweep: ``inputs`` maps parameter names to device arrays,
    ``scalars`` maps float parameters to numbers.  Returns the output buffers (value first); they
    are overwritten by the next run."""

    def __init__(self, plan):
        from numba import cuda
        self.cuda = cuda
        self.plan = plan
        graph = plan.graph
        self.source = plan.module_source()
        key = codegen.cache_key("cuda-arrays", self.source)
        path = codegen.module_path(f"{plan.name}_cuda_arrays", key)
        codegen.write_module(path, self.source)
        self.path = path
        self.module = codegen.import_module(path)
        self.status = cuda.to_device(np.zeros(1, np.int32))
        self.buffers = {}
        for node in graph.nodes:
            if node.id in plan.live and plan.materialized(node):
                self.buffers[node.id] = cuda.device_array(node.shape or (1,), node.dtype)
        self.input_ids = {n.attrs["param"]: n.id for _, n in graph.inputs
                          if n is not None and n.op == "input"}
        self.scalar_ids = {n.attrs["param"]: n.id for _, n in graph.inputs
                           if n is not None and n.op == "scalar"}
        self.scalar_types = {n.id: n.dtype.type for _, n in graph.inputs if n is not None and n.op == "scalar"}
        self.reshapes = [n for n in graph.nodes if n.id in plan.live and n.op == "reshape"]
        self.launches = []
        for step in plan.steps:
            if step[0] == "kernel":
                _, kernel, grid, block = step
                function = getattr(self.module, kernel.name)
                self.launches.append(_KernelLaunch("kernel", function[grid, block], kernel.params,
                                                   function, grid, block))
            else:
                self.launches.append(step)
        self.outputs = [self.buffers[n.id] for n in graph.outputs]
        self._stream_launches = {}

    def _array(self, node_id, arrays):
        return arrays[node_id]

    def _on_stream(self, stream):
        """The launches configured for ``stream`` (a Numba stream; 0 for the default stream)."""
        if not stream:
            return self.launches

        def configure():
            return [launch._replace(configured=launch.function[launch.grid, launch.block, stream])
                    if launch[0] == "kernel" else launch for launch in self.launches]
        if SIMULATOR:       # the simulator reconfigures the kernel object itself: never keep one
            return configure()
        key = int(stream)
        if key not in self._stream_launches:
            self._stream_launches[key] = configure()
        return self._stream_launches[key]

    def run(self, inputs, scalars, stream=0):
        """One sweep; with ``stream`` (a Numba stream) every launch goes to that stream, so the
        sweep can be recorded into a CUDA graph (:mod:`srcgrad.cuda.graphs`)."""
        arrays = dict(self.buffers)
        for name, node_id in self.input_ids.items():
            value = inputs[name]
            arrays[node_id] = value.reshape(1) if value.ndim == 0 else value
        for node in self.reshapes:
            base = arrays[node.args[0].id]
            arrays[node.id] = base.reshape(node.shape or (1,))
        values = {self.scalar_ids[k]: self.scalar_types[self.scalar_ids[k]](v) for k, v in scalars.items()}
        for launch in self._on_stream(stream):
            if launch[0] == "kernel":
                configured, params = launch.configured, launch.params
                args = []
                for _, source in params:
                    if source[0] == "node":
                        args.append(arrays[source[1]])
                    elif source[0] == "scalar":
                        args.append(values[source[1]])
                    else:
                        args.append(self.status)
                configured(*args)
            else:
                _, node, operands, bias = launch
                (a, ta), (b, tb) = operands
                ck.gemm(arrays[a.id], arrays[b.id], arrays[node.id], trans_a=ta, trans_b=tb,
                        bias=None if bias is None else arrays[bias.id].reshape(bias.shape[-1]),
                        stream=stream)
        return self.outputs

    def check(self):
        """Raise ``IndexError`` if a gather or scatter saw an out-of-range index (one device read)."""
        status = self.status.copy_to_host()
        if status[0]:
            self.status.copy_to_device(np.zeros(1, np.int32))
            raise IndexError(f"{self.plan.name} on CUDA: an integer index (e.g. a label) was out of "
                             "range for the array it indexes")


def compile_graph(graph, name):
    return CompiledPlan(Plan(graph, name))


__all__ = ["Plan", "CompiledPlan", "compile_graph", "EW_EXPRESSIONS"]
