"""Numba CUDA kernels for dense array programs (float32 and float64).

What is here:

* ``gemm``: tiled shared-memory matrix product ``C = op(A) @ op(B)`` for the four transpose
  combinations (``A@B``, ``A.T@B``, ``A@B.T``, ``A.T@B.T``).  Transposes are done by indexing when
  a tile is loaded into shared memory (threads swap roles so global reads stay coalesced); no
  transposed copy is ever made.  An optional fused epilogue adds a bias row vector, applies ReLU,
  or multiplies by a ReLU mask ``(M > 0)`` (the ReLU backward fused into the ``dH`` product).
  Products with few output tiles and a long K are split along K (``split_k``): partial products
  by more blocks, then one kernel that sums them in order and applies the epilogue.
* Fused elementwise kernels: ``relu_backward`` (``dX = dY * (Y > 0)``), ``gather_batch`` (minibatch
  rows through a permutation, labels in the same launch).
* Row reductions, one block per row with a shared-memory tree (no atomics): ``row_max``,
  ``row_logsumexp`` and ``softmax_xent`` (forward loss per row, argmax-correct flag per row and the
  gradient ``(softmax - onehot) * scale`` fused in one kernel, integer labels).
* ``col_sum``: column sums (bias gradients), one block per tile of 32 columns, threads of the
  block stride over rows and combine through a shared-memory tree.
* ``vec_sum_into``: one-block sum of a vector added into an accumulator slot (per-epoch loss /
  accuracy kept on the device, no host sync per step).
* ``sgd_momentum``: ``v = mu*v + (g + wd*p); p -= lr*v`` (PyTorch's SGD convention).

Launch helpers (the lower-case functions without a leading underscore) accept device arrays,
pick the kernel specialisation and reuse configured launchers (``kernel[grid, block]`` objects are
cached per configuration).  ``KERNELS`` lists every kernel's Python function and the signatures the
real target must compile, for ``numba.cuda.compile_ptx`` checks.

Set ``NUMBA_ENABLE_CUDASIM=1`` before numba is imported to run everything in Numba's simulator.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import cuda, types

from .device import SIMULATOR

__all__ = [
    "TILE",
    "KERNELS",
    "gemm",
    "split_k",
    "relu_backward",
    "gather_batch",
    "row_max",
    "row_logsumexp",
    "softmax_xent",
    "col_sum",
    "vec_sum_into",
    "sgd_momentum",
    "get_kernel",
    "kernel_signatures",
]

TILE = 16  # GEMM tile edge: blocks of TILE x TILE threads, one output each
ROW_BLOCK = 32  # threads per row in the row reductions (power of two)
COL_TX = 32  # columns per block in col_sum
COL_TY = 8  # row lanes per block in col_sum (power of two)
VEC_BLOCK = 256  # threads in vec_sum_into (power of two)
EW_BLOCK = 256  # threads per block for elementwise kernels
EW_MAX_GRID = 4096  # elementwise kernels are grid-stride beyond this many blocks
# Split-K GEMM (see split_k): a product with fewer output tiles than this many blocks and a long
# K is computed in K chunks by more blocks, then summed; each chunk keeps at least this many
# TILE-wide steps.  At batch 64 the first layer's product has 32 tiles and 49 steps: split 7 ways.
SPLIT_K_BLOCKS = 256
SPLIT_K_MIN_STEPS = 4

if SIMULATOR and os.environ.get("SRCGRAD_CUDA_SIM_TILES", "small") != "full":
    # The simulator runs every thread as a Python thread, so the same kernels are exercised
    # with small blocks (which also puts tiny test sizes across several tiles).  Set
    # SRCGRAD_CUDA_SIM_TILES=full to simulate the real block sizes.
    TILE, ROW_BLOCK, COL_TX, COL_TY, VEC_BLOCK, EW_BLOCK = 4, 4, 4, 2, 8, 32

# GEMM epilogues
EPI_NONE, EPI_BIAS, EPI_BIAS_RELU, EPI_RELU, EPI_MASK = 0, 1, 2, 3, 4
_EPI_NAMES = {EPI_NONE: "none", EPI_BIAS: "bias", EPI_BIAS_RELU: "bias_relu", EPI_RELU: "relu",
              EPI_MASK: "relu_mask"}

_DTYPES = (np.float32, np.float64)
_NB = {np.float32: types.float32, np.float64: types.float64}


def _key(dtype):
    dt = np.dtype(dtype)
    if dt == np.float32:
        return np.float32
    if dt == np.float64:
        return np.float64
    raise TypeError(f"cuda kernels support float32 and float64, got {dt}")


# ----------------------------------------------------------------------------------------------
# Kernel factories (Python functions; the closure constants are frozen at compile time)
# ----------------------------------------------------------------------------------------------


def _make_tile_product(trans_a, trans_b, dt):
    """Device function: one thread's ``sum_k op(A)[row0+ty, k] * op(B)[k, col0+tx]`` over
    ``k_begin <= k < k_end``, tile by tile through the block's shared arrays ``sA``/``sB``."""
    T = TILE
    zero = dt(0)

    def tile_product(A, B, sA, sB, row0, col0, k_begin, k_end, M, N):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        acc = zero
        for k0 in range(k_begin, k_end, T):
            if trans_a:  # A is (K, M): consecutive tx read consecutive addresses of a row of A
                kk = k0 + ty
                rr = row0 + tx
                if kk < k_end and rr < M:
                    sA[tx, ty] = A[kk, rr]
                else:
                    sA[tx, ty] = zero
            else:  # A is (M, K)
                rr = row0 + ty
                kk = k0 + tx
                if rr < M and kk < k_end:
                    sA[ty, tx] = A[rr, kk]
                else:
                    sA[ty, tx] = zero
            if trans_b:  # B is (N, K)
                cc = col0 + ty
                kk = k0 + tx
                if cc < N and kk < k_end:
                    sB[tx, ty] = B[cc, kk]
                else:
                    sB[tx, ty] = zero
            else:  # B is (K, N)
                kk = k0 + ty
                cc = col0 + tx
                if kk < k_end and cc < N:
                    sB[ty, tx] = B[kk, cc]
                else:
                    sB[ty, tx] = zero
            cuda.syncthreads()
            for k in range(T):
                acc += sA[ty, k] * sB[k, tx]
            cuda.syncthreads()
        return acc

    return cuda.jit(device=True)(tile_product)


def _make_epilogue(epilogue, dt):
    """Device function: the GEMM epilogue applied to one output value."""
    zero = dt(0)
    has_bias = epilogue in (EPI_BIAS, EPI_BIAS_RELU)
    do_relu = epilogue in (EPI_BIAS_RELU, EPI_RELU)
    do_mask = epilogue == EPI_MASK

    def finish(acc, r, c, bias, mask):
        if has_bias:
            acc += bias[c]
        if do_relu:
            if acc < zero:
                acc = zero
        if do_mask:
            if not (mask[r, c] > zero):
                acc = zero
        return acc

    return cuda.jit(device=True)(finish)


def _gemm_name(kind, trans_a, trans_b, epilogue, dt):
    return (f"{kind}_{'t' if trans_a else 'n'}{'t' if trans_b else 'n'}"
            f"{'' if epilogue is None else '_' + _EPI_NAMES[epilogue]}_{np.dtype(dt).name}")


def _make_gemm(trans_a, trans_b, epilogue, dt):
    T = TILE
    TP = TILE + 1  # padded row: conflict-free transposed stores
    tile_product = _make_tile_product(trans_a, trans_b, dt)
    finish = _make_epilogue(epilogue, dt)

    def gemm_kernel(A, B, C, bias, mask):
        sA = cuda.shared.array((T, TP), dt)  # sA[r, k] = op(A)[row0 + r, k0 + k]
        sB = cuda.shared.array((T, TP), dt)  # sB[k, c] = op(B)[k0 + k, col0 + c]
        row0 = cuda.blockIdx.y * T
        col0 = cuda.blockIdx.x * T
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if trans_a else A.shape[1]
        acc = tile_product(A, B, sA, sB, row0, col0, 0, K, M, N)
        r = row0 + cuda.threadIdx.y
        c = col0 + cuda.threadIdx.x
        if r < M and c < N:
            C[r, c] = finish(acc, r, c, bias, mask)

    gemm_kernel.__name__ = _gemm_name("gemm", trans_a, trans_b, epilogue, dt)
    return gemm_kernel


def _make_gemm_partial(trans_a, trans_b, dt):
    """Split-K, stage 1: block ``z`` of the grid multiplies the ``z``-th chunk of ``kchunk``
    columns of op(A) (rows of op(B)) into ``W[z]``.  For a product with few output tiles and a
    long K (a minibatch times the 784 inputs: 32 blocks, 49 serial tile steps each) this puts
    more blocks to work on fewer steps each."""
    T = TILE
    TP = TILE + 1
    tile_product = _make_tile_product(trans_a, trans_b, dt)

    def gemm_partial_kernel(A, B, W, kchunk):
        sA = cuda.shared.array((T, TP), dt)
        sB = cuda.shared.array((T, TP), dt)
        row0 = cuda.blockIdx.y * T
        col0 = cuda.blockIdx.x * T
        z = cuda.blockIdx.z
        M = W.shape[1]
        N = W.shape[2]
        K = A.shape[0] if trans_a else A.shape[1]
        k_begin = z * kchunk
        acc = tile_product(A, B, sA, sB, row0, col0, k_begin, min(K, k_begin + kchunk), M, N)
        r = row0 + cuda.threadIdx.y
        c = col0 + cuda.threadIdx.x
        if r < M and c < N:
            W[z, r, c] = acc

    gemm_partial_kernel.__name__ = _gemm_name("gemm_partial", trans_a, trans_b, None, dt)
    return gemm_partial_kernel


def _make_gemm_reduce(epilogue, dt):
    """Split-K, stage 2: ``C = epilogue(sum_z W[z])``, the chunks added in order (the result is
    the same run to run)."""
    finish = _make_epilogue(epilogue, dt)

    def gemm_reduce_kernel(W, C, bias, mask):
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        M = C.shape[0]
        N = C.shape[1]
        for i in range(start, M * N, stride):
            r = i // N
            c = i - r * N
            acc = W[0, r, c]
            for z in range(1, W.shape[0]):
                acc += W[z, r, c]
            C[r, c] = finish(acc, r, c, bias, mask)

    gemm_reduce_kernel.__name__ = f"gemm_reduce_{_EPI_NAMES[epilogue]}_{np.dtype(dt).name}"
    return gemm_reduce_kernel


def _make_relu_backward(dt):
    zero = dt(0)

    def relu_backward_kernel(dY, Y, dX):
        n_cols = dY.shape[1]
        total = dY.shape[0] * n_cols
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, total, stride):
            r = i // n_cols
            c = i - r * n_cols
            if Y[r, c] > zero:
                dX[r, c] = dY[r, c]
            else:
                dX[r, c] = zero

    return relu_backward_kernel


def _make_gather(dt):
    def gather_batch_kernel(X, y, perm, start, Xb, yb):
        # Xb[i, :] = X[perm[start + i], :], yb[i] = y[perm[start + i]] for i < Xb.shape[0]
        n_cols = Xb.shape[1]
        total = Xb.shape[0] * n_cols
        s = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(s, total, stride):
            r = i // n_cols
            c = i - r * n_cols
            src = perm[start + r]
            Xb[r, c] = X[src, c]
            if c == 0:
                yb[r] = y[src]

    return gather_batch_kernel


def _make_row_max(dt):
    RB = ROW_BLOCK
    neg_inf = dt(-np.inf)

    def row_max_kernel(Z, out):
        sm = cuda.shared.array(RB, dt)
        tid = cuda.threadIdx.x
        n = Z.shape[1]
        for r in range(cuda.blockIdx.x, Z.shape[0], cuda.gridDim.x):
            m = neg_inf
            for j in range(tid, n, RB):
                v = Z[r, j]
                if v > m:
                    m = v
            sm[tid] = m
            cuda.syncthreads()
            step = RB // 2
            while step > 0:
                if tid < step:
                    if sm[tid + step] > sm[tid]:
                        sm[tid] = sm[tid + step]
                cuda.syncthreads()
                step //= 2
            if tid == 0:
                out[r] = sm[0]
            cuda.syncthreads()

    return row_max_kernel


def _make_row_lse(dt):
    RB = ROW_BLOCK
    neg_inf = dt(-np.inf)
    zero = dt(0)

    def row_logsumexp_kernel(Z, out):
        sm = cuda.shared.array(RB, dt)
        tid = cuda.threadIdx.x
        n = Z.shape[1]
        for r in range(cuda.blockIdx.x, Z.shape[0], cuda.gridDim.x):
            m = neg_inf
            for j in range(tid, n, RB):
                v = Z[r, j]
                if v > m:
                    m = v
            sm[tid] = m
            cuda.syncthreads()
            step = RB // 2
            while step > 0:
                if tid < step:
                    if sm[tid + step] > sm[tid]:
                        sm[tid] = sm[tid + step]
                cuda.syncthreads()
                step //= 2
            m = sm[0]
            cuda.syncthreads()
            s = zero
            for j in range(tid, n, RB):
                s += math.exp(Z[r, j] - m)
            sm[tid] = s
            cuda.syncthreads()
            step = RB // 2
            while step > 0:
                if tid < step:
                    sm[tid] += sm[tid + step]
                cuda.syncthreads()
                step //= 2
            if tid == 0:
                out[r] = m + math.log(sm[0])
            cuda.syncthreads()

    return row_logsumexp_kernel


def _make_softmax_xent(dt):
    RB = ROW_BLOCK
    neg_inf = dt(-np.inf)
    zero = dt(0)
    one = dt(1)

    def softmax_xent_kernel(Z, labels, loss, correct, dZ, scale, want_grad):
        """Per row r: loss[r] = logsumexp(Z[r]) - Z[r, y]; correct[r] = argmax(Z[r]) == y
        (first maximum, as NumPy); if want_grad: dZ[r] = (softmax(Z[r]) - onehot(y)) * scale."""
        sm = cuda.shared.array(RB, dt)
        tid = cuda.threadIdx.x
        n = Z.shape[1]
        for r in range(cuda.blockIdx.x, Z.shape[0], cuda.gridDim.x):
            lab = labels[r]
            m = neg_inf
            for j in range(tid, n, RB):
                v = Z[r, j]
                if v > m:
                    m = v
            sm[tid] = m
            cuda.syncthreads()
            step = RB // 2
            while step > 0:
                if tid < step:
                    if sm[tid + step] > sm[tid]:
                        sm[tid] = sm[tid + step]
                cuda.syncthreads()
                step //= 2
            m = sm[0]
            cuda.syncthreads()
            s = zero
            for j in range(tid, n, RB):
                s += math.exp(Z[r, j] - m)
            sm[tid] = s
            cuda.syncthreads()
            step = RB // 2
            while step > 0:
                if tid < step:
                    sm[tid] += sm[tid + step]
                cuda.syncthreads()
                step //= 2
            lse = m + math.log(sm[0])
            cuda.syncthreads()
            if tid == 0:
                zl = Z[r, lab]
                loss[r] = lse - zl
                ok = 1 if zl >= m else 0
                for j in range(lab):  # an earlier column holding the maximum wins the argmax
                    if Z[r, j] >= m:
                        ok = 0
                correct[r] = ok
            if want_grad != 0:
                for j in range(tid, n, RB):
                    p = math.exp(Z[r, j] - lse)
                    if j == lab:
                        p -= one
                    dZ[r, j] = p * scale

    return softmax_xent_kernel


def _make_col_sum(dt):
    TX = COL_TX
    TY = COL_TY
    zero = dt(0)

    def col_sum_kernel(X, out):
        sm = cuda.shared.array((TY, TX), dt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        c = cuda.blockIdx.x * TX + tx
        acc = zero
        if c < X.shape[1]:
            for r in range(ty, X.shape[0], TY):
                acc += X[r, c]
        sm[ty, tx] = acc
        cuda.syncthreads()
        step = TY // 2
        while step > 0:
            if ty < step:
                sm[ty, tx] += sm[ty + step, tx]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and c < X.shape[1]:
            out[c] = sm[0, tx]

    return col_sum_kernel


def _make_vec_sum_into(dt, in_dt):
    VB = VEC_BLOCK
    zero = dt(0)

    def vec_sum_into_kernel(x, acc, slot):
        """acc[slot] += sum(x); one block."""
        sm = cuda.shared.array(VB, dt)
        tid = cuda.threadIdx.x
        s = zero
        for i in range(tid, x.shape[0], VB):
            s += dt(x[i])
        sm[tid] = s
        cuda.syncthreads()
        step = VB // 2
        while step > 0:
            if tid < step:
                sm[tid] += sm[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            acc[slot] += sm[0]

    return vec_sum_into_kernel


def _make_sgd(dt, lr_on_device=False):
    """``v = mu*v + (g + wd*p); p -= lr*v``.  ``lr_on_device``: the kernel reads the learning rate
    from device memory (``lr[0]``), since a recorded CUDA graph replays its launches with fixed
    arguments: a schedule then changes the value, not the launch."""
    if lr_on_device:
        def read_rate(lr):
            return lr[0]
    else:
        def read_rate(lr):
            return lr
    rate_of = cuda.jit(device=True)(read_rate)

    def sgd_momentum_kernel(p, g, v, lr, mu, wd):
        s = cuda.grid(1)
        stride = cuda.gridsize(1)
        rate = rate_of(lr)
        for i in range(s, p.shape[0], stride):
            gi = g[i] + wd * p[i]
            vi = mu * v[i] + gi
            v[i] = vi
            p[i] -= rate * vi

    return sgd_momentum_kernel


# ----------------------------------------------------------------------------------------------
# Registry: python function + signatures of every kernel, and lazily jitted dispatchers
# ----------------------------------------------------------------------------------------------


def _arr(dt, ndim):
    return types.Array(_NB[dt], ndim, "C")


def _build_registry():
    reg = {}
    for dt in _DTYPES:
        nb = _NB[dt]
        a1, a2 = _arr(dt, 1), _arr(dt, 2)
        i64_1 = types.Array(types.int64, 1, "C")
        i32_1 = types.Array(types.int32, 1, "C")
        for ta in (False, True):
            for tb in (False, True):
                for epi in _EPI_NAMES:
                    fn = _make_gemm(ta, tb, epi, dt)
                    reg[("gemm", ta, tb, epi, dt)] = (fn, [(a2, a2, a2, a1, a2)])
                reg[("gemm_partial", ta, tb, dt)] = (_make_gemm_partial(ta, tb, dt),
                                                     [(a2, a2, _arr(dt, 3), types.int64)])
        for epi in _EPI_NAMES:
            reg[("gemm_reduce", epi, dt)] = (_make_gemm_reduce(epi, dt),
                                             [(_arr(dt, 3), a2, a1, a2)])
        reg[("relu_backward", dt)] = (_make_relu_backward(dt), [(a2, a2, a2)])
        reg[("gather_batch", dt)] = (
            _make_gather(dt), [(a2, i64_1, i64_1, types.int64, a2, i64_1)])
        reg[("row_max", dt)] = (_make_row_max(dt), [(a2, a1)])
        reg[("row_logsumexp", dt)] = (_make_row_lse(dt), [(a2, a1)])
        reg[("softmax_xent", dt)] = (
            _make_softmax_xent(dt), [(a2, i64_1, a1, i32_1, a2, nb, types.int64)])
        reg[("col_sum", dt)] = (_make_col_sum(dt), [(a2, a1)])
        reg[("vec_sum_into", dt)] = (
            _make_vec_sum_into(dt, dt), [(a1, a1, types.int64), (i32_1, a1, types.int64)])
        reg[("sgd_momentum", dt)] = (_make_sgd(dt), [(a1, a1, a1, nb, nb, nb)])
        reg[("sgd_momentum_at", dt)] = (_make_sgd(dt, lr_on_device=True), [(a1, a1, a1, a1, nb, nb)])
    return reg


KERNELS = _build_registry()
_JITTED: dict = {}
_LAUNCHERS: dict = {}
_DUMMIES: dict = {}
_WORKSPACES: dict = {}


def kernel_signatures():
    """[(name, python function, [signatures])] for every kernel (compile_ptx checks)."""
    out = []
    for key, (fn, sigs) in KERNELS.items():
        name = "_".join(str(getattr(k, "__name__", k)) for k in key)
        out.append((name, fn, sigs))
    return out


def get_kernel(*key):
    """The jitted dispatcher of a registry key, e.g. ``get_kernel('col_sum', np.float32)``."""
    k = _JITTED.get(key)
    if k is None:
        fn, _ = KERNELS[key]
        k = cuda.jit(fn)
        _JITTED[key] = k
    return k


def _launch(key, grid, block, stream=0):
    if SIMULATOR:
        # the simulator's kernel[grid, block] reconfigures and returns the kernel itself, so a
        # cached launcher would silently take the last configuration: configure every time
        kern = get_kernel(*key)
        return kern[grid, block, stream] if stream else kern[grid, block]
    lk = _LAUNCHERS.get((key, grid, block, stream))
    if lk is None:
        kern = get_kernel(*key)
        lk = kern[grid, block, stream] if stream else kern[grid, block]
        _LAUNCHERS[(key, grid, block, stream)] = lk
    return lk


def _dummy(dt, ndim):
    d = _DUMMIES.get((dt, ndim))
    if d is None:
        d = cuda.device_array((1,) * ndim, dtype=dt)
        _DUMMIES[(dt, ndim)] = d
    return d


def _ew_grid(total):
    return max(1, min(EW_MAX_GRID, (total + EW_BLOCK - 1) // EW_BLOCK))


# ----------------------------------------------------------------------------------------------
# Launch helpers (device arrays in, results written into preallocated device arrays)
# ----------------------------------------------------------------------------------------------


def gemm(A, B, C, trans_a=False, trans_b=False, bias=None, relu=False, mask=None, stream=0):
    """``C[:] = op(A) @ op(B)`` then the epilogue: ``+ bias`` (row vector of length N), ReLU, or
    ``* (mask > 0)``.  ``op(X)`` is ``X.T`` where the flag is set (by indexing, no copy)."""
    dt = _key(C.dtype)
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    Ma = A.shape[1] if trans_a else A.shape[0]
    Kb, Nb = (B.shape[1], B.shape[0]) if trans_b else (B.shape[0], B.shape[1])
    if Ma != M or Nb != N or Kb != K:
        raise ValueError(
            f"gemm shape mismatch: op(A) {Ma}x{K}, op(B) {Kb}x{Nb}, C {M}x{N}")
    if mask is not None:
        if bias is not None or relu:
            raise ValueError("gemm: mask epilogue cannot be combined with bias/relu")
        epi = EPI_MASK
    elif bias is not None:
        epi = EPI_BIAS_RELU if relu else EPI_BIAS
    else:
        epi = EPI_RELU if relu else EPI_NONE
    grid = ((N + TILE - 1) // TILE, (M + TILE - 1) // TILE)
    bias = bias if bias is not None else _dummy(dt, 1)
    mask = mask if mask is not None else _dummy(dt, 2)
    splits, kchunk = split_k(M, N, K)
    if splits > 1:
        work = _split_workspace(dt, splits, M, N, stream)
        _launch(("gemm_partial", bool(trans_a), bool(trans_b), dt), grid + (splits,), (TILE, TILE),
                stream)(A, B, work, np.int64(kchunk))
        _launch(("gemm_reduce", epi, dt), _ew_grid(M * N), EW_BLOCK, stream)(work, C, bias, mask)
        return C
    _launch(("gemm", bool(trans_a), bool(trans_b), epi, dt), grid, (TILE, TILE), stream)(
        A, B, C, bias, mask)
    return C


def split_k(M, N, K):
    """``(splits, kchunk)`` for an M x N x K product: split K when the output has few tiles
    (fewer blocks than SPLIT_K_BLOCKS) and K is long enough that each of at least two chunks
    keeps SPLIT_K_MIN_STEPS tile steps, and K has at least 4 such chunks; ``(1, K)`` otherwise."""
    blocks = -(-M // TILE) * -(-N // TILE)
    steps = -(-K // TILE)
    if blocks >= SPLIT_K_BLOCKS or steps < 4 * SPLIT_K_MIN_STEPS:
        return 1, K
    splits = min(steps // SPLIT_K_MIN_STEPS, -(-SPLIT_K_BLOCKS // blocks))
    chunk_steps = -(-steps // splits)
    return -(-steps // chunk_steps), chunk_steps * TILE


def _split_workspace(dt, splits, M, N, stream):
    """The partial products' buffer, allocated once per shape and stream (so a recorded CUDA
    graph, which must not allocate, finds it there after its eager warm-up)."""
    key = (dt, splits, M, N, 0 if not stream else id(stream))
    work = _WORKSPACES.get(key)
    if work is None:
        work = _WORKSPACES[key] = cuda.device_array((splits, M, N), dtype=dt)
    return work


def relu_backward(dY, Y, dX, stream=0):
    """``dX = dY * (Y > 0)`` (elementwise, 2-D)."""
    dt = _key(dY.dtype)
    total = dY.shape[0] * dY.shape[1]
    _launch(("relu_backward", dt), _ew_grid(total), EW_BLOCK, stream)(dY, Y, dX)
    return dX


def gather_batch(X, y, perm, start, Xb, yb, stream=0):
    """``Xb[i] = X[perm[start+i]]``, ``yb[i] = y[perm[start+i]]`` for ``i < len(Xb)``."""
    dt = _key(X.dtype)
    total = Xb.shape[0] * Xb.shape[1]
    _launch(("gather_batch", dt), _ew_grid(total), EW_BLOCK, stream)(
        X, y, perm, np.int64(start), Xb, yb)
    return Xb, yb


def _row_grid(rows):
    return max(1, min(rows, 65535))


def row_max(Z, out, stream=0):
    dt = _key(Z.dtype)
    _launch(("row_max", dt), _row_grid(Z.shape[0]), ROW_BLOCK, stream)(Z, out)
    return out


def row_logsumexp(Z, out, stream=0):
    dt = _key(Z.dtype)
    _launch(("row_logsumexp", dt), _row_grid(Z.shape[0]), ROW_BLOCK, stream)(Z, out)
    return out


def softmax_xent(Z, labels, loss, correct, dZ=None, scale=1.0, stream=0):
    """Fused softmax cross-entropy with int64 labels: per-row loss and argmax-correct flags; the
    gradient ``(softmax - onehot) * scale`` into ``dZ`` when ``dZ`` is given."""
    dt = _key(Z.dtype)
    want = 0 if dZ is None else 1
    _launch(("softmax_xent", dt), _row_grid(Z.shape[0]), ROW_BLOCK, stream)(
        Z, labels, loss, correct, dZ if dZ is not None else _dummy(dt, 2), dt(scale),
        np.int64(want))
    return loss


def col_sum(X, out, stream=0):
    """``out[c] = sum_r X[r, c]`` (bias gradients)."""
    dt = _key(X.dtype)
    grid = max(1, (X.shape[1] + COL_TX - 1) // COL_TX)
    _launch(("col_sum", dt), grid, (COL_TX, COL_TY), stream)(X, out)
    return out


def vec_sum_into(x, acc, slot, stream=0):
    """``acc[slot] += sum(x)`` in one block (x float or int32, acc float)."""
    dt = _key(acc.dtype)
    _launch(("vec_sum_into", dt), 1, VEC_BLOCK, stream)(x, acc, np.int64(slot))
    return acc


def sgd_momentum(p, g, v, lr, momentum=0.0, weight_decay=0.0, stream=0):
    """In place on 1-D device arrays: ``v = mu*v + (g + wd*p); p -= lr*v``.  ``lr`` is a number,
    or a 1-element device array read when the kernel runs (for replayed CUDA graphs)."""
    dt = _key(p.dtype)
    if hasattr(lr, "shape"):
        _launch(("sgd_momentum_at", dt), _ew_grid(p.shape[0]), EW_BLOCK, stream)(
            p, g, v, lr, dt(momentum), dt(weight_decay))
        return p
    _launch(("sgd_momentum", dt), _ew_grid(p.shape[0]), EW_BLOCK, stream)(
        p, g, v, dt(lr), dt(momentum), dt(weight_decay))
    return p
