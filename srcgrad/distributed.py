"""Data-parallel training over MPI: the same model on N processes (on one or several machines).

Every rank holds the whole model. Each global minibatch of ``B`` samples is split into ``N``
disjoint contiguous shards (rank ``r`` takes samples ``B*r//N .. B*(r+1)//N`` of it), each rank
computes the gradient of the loss on its shard, and one MPI allreduce over a single fused buffer
combines them, each shard's gradient weighted by its share of the batch. Every rank then applies
the same optimizer update, so the parameters stay identical on all ranks, and N ranks with global
batch ``B`` follow the 1-process run with batch ``B`` (up to the order of float summation)::

    mpiexec -n 2 python examples/train_mnist.py --distributed

Building blocks (all take an optional mpi4py communicator, default ``MPI.COMM_WORLD``)::

    rank(), size()
    params = broadcast(params)           # any tuple/list/dict tree of arrays, from rank 0
    allreduce_average(grads)             # in place, one fused contiguous buffer
    ShardSampler(batch_size, rank, size).batches(order)    # this rank's part of each batch
    loop = DataParallelLoop(value_and_grad(loss, wrt=(0, 1, 2, 3)), optimizer)
    total = loop(params, X, y, order, batch_size)          # like srcgrad.optim.MinibatchLoop

MPI comes from the ``[distributed]`` extra (``pip install 'srcgrad[distributed]'``: mpi4py and
the MPICH wheel, so no system MPI is needed); this module imports mpi4py only when a function
needs it.
"""

from __future__ import annotations

import time
import zlib

import numba
import numpy as np

from .errors import SrcgradError
from .optim import (
    Optimizer,
    _as_param_dtype,
    _as_tuple,
    _check_lengths,
    _compiled_signature,
    _gather_rows,
    _unrolled,
)

__all__ = [
    "DistributedError",
    "mpi",
    "world",
    "rank",
    "size",
    "node_leader_first",
    "on_root",
    "broadcast",
    "FusedBuffer",
    "allreduce_average",
    "shard_bounds",
    "ShardSampler",
    "DataParallelLoop",
]


class DistributedError(SrcgradError):
    """MPI is missing, or the ranks disagree (different parameter shapes, ...)."""


def mpi():
    """The ``mpi4py.MPI`` module (importing it initialises MPI), or a clear error."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            "srcgrad.distributed needs mpi4py and an MPI library: pip install "
            f"'srcgrad[distributed]' (mpi4py and the mpich wheel) ({exc})") from None
    return MPI


def world():
    """``MPI.COMM_WORLD``."""
    return mpi().COMM_WORLD


def _comm(comm):
    return world() if comm is None else comm


def rank(comm=None):
    """This process's rank (0 .. size-1)."""
    return _comm(comm).Get_rank()


def size(comm=None):
    """The number of ranks."""
    return _comm(comm).Get_size()


_node_comms: dict = {}


def node_leader_first(fn, comm=None):
    """``fn()`` on every rank, but on each machine its first rank runs it before the others start.

    For compiling: srcgrad's generated modules and Numba's machine code are cached in files, so
    the other ranks of a machine then load what its first rank compiled instead of all compiling
    the same code at once on the same cores. (Machines do not wait for each other.) An error on
    the first rank is raised there after the others were released; they run ``fn`` themselves.
    ``fn`` must not make collective calls on ``comm`` (the other ranks are not there yet)."""
    global _leading
    MPI = mpi()
    comm = _comm(comm)
    if _leading:        # nested: the outer call already orders the ranks
        return fn()
    local = _node_comms.get(id(comm))
    if local is None:
        local = _node_comms[id(comm)] = (comm, comm.Split_type(MPI.COMM_TYPE_SHARED))
    local = local[1]
    if local.Get_size() == 1:
        return fn()
    _leading = True
    try:
        if local.Get_rank() == 0:
            try:
                return fn()
            finally:
                _sleepy_barrier(local)
        _sleepy_barrier(local)
        return fn()
    finally:
        _leading = False


_leading = False


def on_root(fn, root=0, comm=None):
    """``fn()`` run on rank ``root`` only; every rank gets its result, or raises its exception
    (so that an error there, e.g. a checkpoint that cannot be read, stops every rank instead of
    leaving them waiting). The result and the exception travel pickled."""
    comm = _comm(comm)
    outcome = None
    if comm.Get_rank() == root:
        try:
            outcome = (True, fn())
        except Exception as exc:  # sent to the other ranks, then raised everywhere
            outcome = (False, exc)
    ok, value = comm.bcast(outcome, root=root)
    if not ok:
        raise value
    return value


def _sleepy_barrier(comm, interval=0.005):
    """A barrier that sleeps while it waits: MPI_Barrier busy-polls, which would take a core
    from the rank that is compiling for us."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# Trees of arrays
# ------------------------------------------------------------------------------------------------


def _flatten(tree, path="params"):
    """``[(path, leaf)]`` of a tuple/list/dict tree, dict keys in sorted order (so that every rank
    walks its tree in the same order whatever the insertion order of its dicts)."""
    if isinstance(tree, (tuple, list)):
        out = []
        for i, sub in enumerate(tree):
            out.extend(_flatten(sub, f"{path}[{i}]"))
        return out
    if isinstance(tree, dict):
        out = []
        for k in sorted(tree, key=repr):
            out.extend(_flatten(tree[k], f"{path}[{k!r}]"))
        return out
    return [(path, tree)]


def _rebuild(tree, leaves):
    """``tree`` with its leaves replaced, in :func:`_flatten`'s order, from the iterator."""
    if isinstance(tree, (tuple, list)):
        items = [_rebuild(sub, leaves) for sub in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, dict):
        new = {}
        for k in sorted(tree, key=repr):
            new[k] = _rebuild(tree[k], leaves)
        return {k: new[k] for k in tree}      # the caller's key order
    return next(leaves)


def _describe(leaf):
    if isinstance(leaf, np.ndarray):
        return ("array", leaf.shape, leaf.dtype.str)
    if isinstance(leaf, (bool, int, float, complex, np.number, np.bool_)):
        return ("scalar",)
    raise TypeError(f"broadcast: leaves must be NumPy arrays or numbers, got "
                    f"{type(leaf).__name__}")


def _agree(comm, ok, why):
    """Raise on every rank when ``ok`` is false on any rank (an error raised on one rank only
    would leave the others waiting forever in the next collective call)."""
    MPI = mpi()
    if comm.allreduce(1 if ok else 0, op=MPI.MIN) == 1:
        return
    bad = comm.allgather(None if ok else why)
    lines = [f"rank {r}: {w}" for r, w in enumerate(bad) if w is not None]
    raise DistributedError("the ranks disagree:\n  " + "\n  ".join(lines))


def broadcast(tree, root=0, comm=None):
    """Give every rank ``root``'s values of a tree (tuple/list/dict, nested) of arrays.

    Arrays are overwritten in place (every rank must pass arrays of the same shapes and dtypes, in
    the same structure, and they must be writable); numbers are replaced by root's in the returned
    tree. Returns the tree. A mismatch raises :class:`DistributedError` on every rank."""
    comm = _comm(comm)
    leaves = _flatten(tree)
    try:
        spec = [(path, _describe(leaf)) for path, leaf in leaves]
        why = None
    except TypeError as exc:
        spec, why = None, str(exc)
    root_spec = comm.bcast(spec, root=root)
    if why is None and spec != root_spec:
        diff = [f"{a[0]}: {a[1]} here, {b[1]} on rank {root}"
                for a, b in zip(spec, root_spec or []) if a != b]
        if root_spec is None:
            why = f"rank {root} passed an invalid tree"
        elif len(spec) != len(root_spec):
            why = f"{len(spec)} leaves here, {len(root_spec)} on rank {root}"
        else:
            why = "; ".join(diff[:3])
    if why is None:
        ro = [path for path, leaf in leaves
              if isinstance(leaf, np.ndarray) and not leaf.flags.writeable]
        if ro:
            why = f"read-only arrays cannot be overwritten: {', '.join(ro[:3])}"
    _agree(comm, why is None, why)
    scalars = [leaf for _, leaf in leaves if not isinstance(leaf, np.ndarray)]
    scalars = iter(comm.bcast(scalars, root=root))
    out = []
    for _, leaf in leaves:
        if isinstance(leaf, np.ndarray):
            if leaf.flags.c_contiguous:
                comm.Bcast(leaf.reshape(-1).view(np.uint8), root=root)
            else:
                tmp = np.ascontiguousarray(leaf)
                comm.Bcast(tmp.reshape(-1).view(np.uint8), root=root)
                leaf[...] = tmp
            out.append(leaf)
        else:
            out.append(next(scalars))
    return _rebuild(tree, iter(out))


# ------------------------------------------------------------------------------------------------
# One fused buffer for many arrays
# ------------------------------------------------------------------------------------------------


class FusedBuffer:
    """One contiguous 1-d array ``flat`` with C-contiguous views ``views`` of the given shapes,
    and ``extra`` trailing elements (``tail``), so that one MPI call moves all of them.

    All arrays share one dtype (a mixed float32/float64 model would need one buffer per dtype)."""

    def __init__(self, shapes, dtype, extra=0):
        self.dtype = np.dtype(dtype)
        self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.size = sum(sizes)
        self.flat = np.zeros(self.size + int(extra), self.dtype)
        views, offset = [], 0
        for s, k in zip(self.shapes, sizes):
            views.append(self.flat[offset:offset + k].reshape(s))
            offset += k
        self.views = tuple(views)
        self.tail = self.flat[self.size:]

    @classmethod
    def like(cls, arrays, extra=0):
        arrays = [np.asarray(a) for a in arrays]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise TypeError(f"one fused buffer needs arrays of one dtype, got "
                            f"{sorted(str(d) for d in dtypes)}")
        return cls([a.shape for a in arrays], dtypes.pop(), extra)

    def matches(self, arrays):
        return (len(arrays) == len(self.shapes)
                and all(a.shape == s and a.dtype == self.dtype
                        for a, s in zip(arrays, self.shapes)))

    def pack(self, arrays):
        for v, a in zip(self.views, arrays):
            v[...] = a

    def unpack(self, arrays):
        for v, a in zip(self.views, arrays):
            a[...] = v

    @property
    def nbytes(self):
        return self.flat.nbytes


_buffers: dict = {}


def allreduce_average(grads, comm=None, buffer=None):
    """Replace every array of ``grads`` (a tuple/list/dict tree of writable arrays of one dtype)
    by its average over the ranks, in place, through one fused contiguous buffer (one MPI call
    however many arrays). Returns ``grads``. ``buffer`` may give the :class:`FusedBuffer` to use
    (else one is kept per shapes and dtype)."""
    MPI = mpi()
    comm = _comm(comm)
    leaves = _flatten(grads)
    arrays = []
    for path, a in leaves:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"allreduce_average: {path} is a {type(a).__name__}, not an array "
                            f"(averaged in place, so numbers are not supported)")
        if not a.flags.writeable:
            raise TypeError(f"allreduce_average: {path} is read-only")
        arrays.append(a)
    if buffer is None:
        key = (tuple(a.shape for a in arrays), tuple(a.dtype.str for a in arrays))
        buffer = _buffers.get(key)
        if buffer is None:
            buffer = _buffers[key] = FusedBuffer.like(arrays)
    elif not buffer.matches(arrays):
        raise ValueError("allreduce_average: the buffer does not match the arrays")
    buffer.pack(arrays)
    comm.Allreduce(MPI.IN_PLACE, buffer.flat, op=MPI.SUM)
    buffer.flat *= buffer.dtype.type(1.0 / comm.Get_size())
    buffer.unpack(arrays)
    return grads


# ------------------------------------------------------------------------------------------------
# Sharding each global minibatch
# ------------------------------------------------------------------------------------------------


def shard_bounds(count, rank, size):
    """``(lo, hi)``: rank ``rank``'s part ``lo <= i < hi`` of ``count`` consecutive samples. The
    parts are contiguous, disjoint, in rank order, cover all samples, and differ in length by at
    most one (a rank gets none when ``count < size``)."""
    return count * rank // size, count * (rank + 1) // size


class ShardSampler:
    """This rank's samples of every global minibatch.

    Global batch ``b`` is ``order[b*B : (b+1)*B]`` exactly as one process would take it; rank ``r``
    of ``N`` takes the contiguous part :func:`shard_bounds` gives it."""

    def __init__(self, batch_size, rank, size):
        if batch_size < 1 or size < 1 or not 0 <= rank < size:
            raise ValueError(f"bad sampler: batch_size={batch_size}, rank={rank}, size={size}")
        self.batch_size, self.rank, self.size = int(batch_size), int(rank), int(size)

    def n_batches(self, n):
        return -(-n // self.batch_size)

    def bounds(self, n, batch):
        """``(lo, hi, count)``: positions ``lo:hi`` in the order of this rank's samples of global
        batch ``batch`` and the global batch's size ``count``."""
        start = batch * self.batch_size
        count = min(self.batch_size, n - start)
        lo, hi = shard_bounds(count, self.rank, self.size)
        return start + lo, start + hi, count

    def batches(self, order, first=0, stop=None):
        """Yield this rank's sample indices (a slice of ``order``) for each global batch."""
        n = len(order)
        stop = self.n_batches(n) if stop is None else min(stop, self.n_batches(n))
        for b in range(first, stop):
            lo, hi, _ = self.bounds(n, b)
            yield order[lo:hi]


# ------------------------------------------------------------------------------------------------
# Compiled pieces of a data-parallel step
# ------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _scaled_copy_array(dst, src, w):
    """``dst = w * src`` elementwise (``dst`` C-contiguous), ``w`` rounded to ``dst``'s dtype."""
    if src.shape != dst.shape:
        raise ValueError("srcgrad.distributed: gradient shape does not match its parameter")
    s = np.ascontiguousarray(src).reshape(src.size)
    d = dst.reshape(dst.size)
    wt = _as_param_dtype(w, dst)
    for i in range(d.size):
        d[i] = wt * s[i]


def _scaled_copy(dst, src, w):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@numba.extending.overload(_scaled_copy)
def _ov_scaled_copy(dst, src, w):
    n = _check_lengths("DataParallelLoop", dst, src)
    return _unrolled(_scaled_copy_array, ("dst", "src"), ("w",), n)


@numba.njit(cache=True)
def _zero_array(dst, w):
    d = dst.reshape(dst.size)
    for i in range(d.size):
        d[i] = 0


def _zero_all(dst, w):  # pragma: no cover
    raise NotImplementedError


@numba.extending.overload(_zero_all)
def _ov_zero_all(dst, w):
    n = _check_lengths("DataParallelLoop", dst)
    return _unrolled(_zero_array, ("dst",), ("w",), n)


@numba.njit(cache=True)
def _shard_gradient(adjoint, params, X, y, order, lo, hi, Xb, yb, seed, out, weight):
    """The gradient of the loss on samples ``order[lo:hi]`` times ``weight`` (this shard's share of
    the global batch), written into the arrays ``out``; returns the loss times the shard's sample
    count. An empty shard (a batch smaller than the number of ranks) contributes zeros: the loss,
    a mean over no samples, is not evaluated."""
    count = hi - lo
    if count == 0:
        _zero_all(out, 0.0)
        return 0.0
    if count == Xb.shape[0]:
        Xc = Xb
        yc = yb
    else:
        Xc = np.empty((count,) + Xb.shape[1:], Xb.dtype)
        yc = np.empty((count,) + yb.shape[1:], yb.dtype)
    _gather_rows(Xc, X, order, lo)
    _gather_rows(yc, y, order, lo)
    loss, grads = adjoint(*params, Xc, yc, seed)
    _scaled_copy(out, grads, weight)
    return loss * count


# ------------------------------------------------------------------------------------------------
# The data-parallel training loop
# ------------------------------------------------------------------------------------------------


class DataParallelLoop:
    """:class:`srcgrad.optim.MinibatchLoop` over MPI ranks: call it on every rank with the same
    arguments (the same ``order``, e.g. a permutation drawn from a seed they share)::

        total = loop(params, X, y, order, batch_size, first=0, stop=None)

    For each global minibatch ``b`` (``order[b*batch_size:(b+1)*batch_size]``, as one process
    takes it), this rank gathers its shard (:class:`ShardSampler`) and computes the loss and the
    gradients with srcgrad's compiled adjoint, weighted by the shard's share of the batch, into
    one fused buffer (and the loss times the shard's size in its last element); one
    ``MPI_Allreduce`` sums the buffer over the ranks, giving every rank the gradient of the mean
    loss over the whole global batch; then each rank applies the same compiled optimizer update to
    its copy of the parameters. Returns the sum over the global batches of the batch loss times
    the batch size, on every rank.

    The loss must be a mean over the batch's samples (as ``MinibatchLoop`` assumes), so that the
    weighted sum of the shards' gradients equals the batch's. Parameters must share one dtype.
    Start from the same parameters on every rank (:func:`broadcast`) and with the same optimizer
    state; the ranks then stay identical, since they apply the same update to the same numbers.

    ``bytes_per_step`` is what one rank sends (and receives) per allreduce, before the MPI
    library's own algorithm multiplies it (see benchmarks/results/distributed.md). With
    ``profile=True`` the loop also adds up, in ``seconds``, the time this rank spent computing
    its shard's gradient (``"gradient"``), in the allreduce, waiting for the others included
    (``"allreduce"``), and in the update (``"update"``).
    """

    def __init__(self, loss_and_grads, optimizer, comm=None, profile=False):
        if not hasattr(loss_and_grads, "specialize"):
            raise TypeError("DataParallelLoop needs a srcgrad value_and_grad(...) object, got "
                            f"{type(loss_and_grads).__name__}")
        if getattr(loss_and_grads, "mode", "value_and_grad") != "value_and_grad":
            raise TypeError("DataParallelLoop needs value_and_grad(...) (the loss and the "
                            f"gradients), got {loss_and_grads!r}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a srcgrad.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        self.loss_and_grads = loss_and_grads
        self.optimizer = optimizer
        self.comm = _comm(comm)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._plans = {}
        self.bytes_per_step = None
        self.profile = bool(profile)
        self.seconds = {"gradient": 0.0, "allreduce": 0.0, "update": 0.0}

    def _plan(self, params, X, y, order, batch_size):
        """Buffers and compiled entry points for these argument types (built once)."""
        lo, hi = shard_bounds(batch_size, self.rank, self.size)
        Xb = np.empty((hi - lo,) + X.shape[1:], X.dtype)
        yb = np.empty((hi - lo,) + y.shape[1:], y.dtype)
        # the gradient's types do not depend on the number of rows
        probe = max(hi - lo, 1)
        spec = self.loss_and_grads.specialize(*params, X[:probe], y[:probe])
        gradient, seed = spec.adjoint, spec.one
        grad_sig = _compiled_signature(
            gradient, tuple(numba.typeof(a) for a in (*params, Xb, yb, seed)))
        grads_type = grad_sig.return_type.types[1]
        if not isinstance(grads_type, numba.types.BaseTuple) or len(grads_type) != len(params):
            raise TypeError(f"{self.loss_and_grads!r} must differentiate with respect to all "
                            f"{len(params)} parameters (wrt=(0, ..., {len(params) - 1}))")
        fused = FusedBuffer.like(params, extra=1)
        step_types = (numba.types.FunctionType(grad_sig),) + tuple(
            numba.typeof(a) for a in (params, X, y, order, 0, 0, Xb, yb, seed, fused.views, 0.5))
        _shard_gradient.compile(step_types)
        step = _shard_gradient.overloads[step_types].entry_point
        kernel = type(self.optimizer).kernel
        state, hyper = self.optimizer.state_tuple(), self.optimizer.hyper_tuple()
        update_types = tuple(numba.typeof(a) for a in (params, fused.views, state, hyper))
        kernel.compile(update_types)
        update = kernel.overloads[update_types].entry_point
        self.bytes_per_step = fused.nbytes
        return Xb, yb, gradient, seed, fused, step, update

    def __call__(self, params, X, y, order, batch_size, first=0, stop=None):
        MPI = mpi()
        params = _as_tuple(params, "params")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        if len({p.dtype for p in params}) != 1:
            raise TypeError("DataParallelLoop: the parameters must share one dtype (they are "
                            "reduced through one buffer)")
        order = np.ascontiguousarray(order, dtype=np.int64)
        X = np.ascontiguousarray(X)
        y = np.ascontiguousarray(y)
        n = order.shape[0]
        sampler = ShardSampler(batch_size, self.rank, self.size)
        stop = sampler.n_batches(n) if stop is None else min(int(stop), sampler.n_batches(n))
        first = int(first)
        used = order[first * batch_size:stop * batch_size]
        if used.size and (used.min() < 0 or used.max() >= X.shape[0]):
            raise ValueError(f"order holds sample indices outside 0..{X.shape[0] - 1}")
        # Ranks called with different batches would silently train on a mix (or wait forever):
        # compare what decides the batches, the order included, before anything else.
        mine = (n, batch_size, first, stop, X.shape[1:], str(X.dtype), y.shape[1:],
                zlib.crc32(order), tuple((p.shape, str(p.dtype)) for p in params))
        theirs = self.comm.bcast(mine, root=0)
        _agree(self.comm, mine == theirs,
               f"called with different batches or parameters than rank 0 ({mine} vs {theirs})")
        self.optimizer._ensure(params)
        key = (batch_size, tuple(numba.typeof(a) for a in (params, X, y)),
               type(self.optimizer).kernel, numba.typeof(self.optimizer.state_tuple()))
        if key not in self._plans:
            self._plans[key] = node_leader_first(
                lambda: self._plan(params, X, y, order, batch_size), self.comm)
        Xb, yb, gradient, seed, fused, step, update = self._plans[key]
        state, hyper = self.optimizer.state_tuple(), self.optimizer.hyper_tuple()
        views, flat, tail = fused.views, fused.flat, fused.tail
        comm, op, in_place = self.comm, MPI.SUM, MPI.IN_PLACE
        total = 0.0
        if self.profile:
            return self._profiled(first, stop, sampler, n, step, update, gradient, params, X, y,
                                  order, Xb, yb, seed, fused, state, hyper)
        for batch in range(first, stop):
            lo, hi, count = sampler.bounds(n, batch)
            tail[0] = step(gradient, params, X, y, order, lo, hi, Xb, yb, seed, views,
                           (hi - lo) / count)
            comm.Allreduce(in_place, flat, op=op)
            update(params, views, state, hyper)
            total += float(tail[0])
        return total

    def _profiled(self, first, stop, sampler, n, step, update, gradient, params, X, y, order,
                  Xb, yb, seed, fused, state, hyper):
        """The loop of ``__call__`` with each part of a step timed."""
        MPI = mpi()
        clock, sec = time.perf_counter, self.seconds
        total = 0.0
        for batch in range(first, stop):
            lo, hi, count = sampler.bounds(n, batch)
            t0 = clock()
            fused.tail[0] = step(gradient, params, X, y, order, lo, hi, Xb, yb, seed,
                                 fused.views, (hi - lo) / count)
            t1 = clock()
            self.comm.Allreduce(MPI.IN_PLACE, fused.flat, op=MPI.SUM)
            t2 = clock()
            update(params, fused.views, state, hyper)
            t3 = clock()
            total += float(fused.tail[0])
            sec["gradient"] += t1 - t0
            sec["allreduce"] += t2 - t1
            sec["update"] += t3 - t2
        return total
