"""Benchmark programs, written the way a srcgrad user writes them.

Plain Python + NumPy: loops, scalar indexing, ``math.*``.  Nothing here imports numba, jax
or torch, nor srcgrad's machinery (``mlp_loss`` is the project's one MNIST model, plain NumPy
from ``srcgrad.training.mlp``); every peer (see ``peers_*.py`` and ``adjoints.py``) differentiates or
re-implements exactly these functions.

Each program is described by a :class:`Program`: the user function, which positional arguments
are differentiated (``wrt``), the problem sizes, and a ``make_args(size, rng)`` that builds the
positional arguments.  Gradients everywhere in the suite are tuples of float64 NumPy arrays in
``wrt`` order (a scalar argument's gradient is a 0-d array).
"""

import math
from dataclasses import dataclass, field

import numpy as np


# ----------------------------------------------------------------------------------------------
# User functions (loop style)
# ----------------------------------------------------------------------------------------------

def rosenbrock(x):
    s = 0.0
    for i in range(x.shape[0] - 1):
        a = x[i + 1] - x[i] * x[i]
        b = 1.0 - x[i]
        s += 100.0 * a * a + b * b
    return s


def lorenz_rk4(p, u0, dt, nsteps):
    """Lorenz-63 integrated with classical RK4; objective = dt * sum_t |u_t|^2 (trajectory)."""
    sigma = p[0]
    rho = p[1]
    beta = p[2]
    x = u0[0]
    y = u0[1]
    z = u0[2]
    J = 0.0
    for t in range(nsteps):
        k1x = sigma * (y - x)
        k1y = x * (rho - z) - y
        k1z = x * y - beta * z
        x2 = x + 0.5 * dt * k1x
        y2 = y + 0.5 * dt * k1y
        z2 = z + 0.5 * dt * k1z
        k2x = sigma * (y2 - x2)
        k2y = x2 * (rho - z2) - y2
        k2z = x2 * y2 - beta * z2
        x3 = x + 0.5 * dt * k2x
        y3 = y + 0.5 * dt * k2y
        z3 = z + 0.5 * dt * k2z
        k3x = sigma * (y3 - x3)
        k3y = x3 * (rho - z3) - y3
        k3z = x3 * y3 - beta * z3
        x4 = x + dt * k3x
        y4 = y + dt * k3y
        z4 = z + dt * k3z
        k4x = sigma * (y4 - x4)
        k4y = x4 * (rho - z4) - y4
        k4z = x4 * y4 - beta * z4
        x = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
        z = z + dt / 6.0 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
        J += dt * (x * x + y * y + z * z)
    return J


def gmm_objective(alphas, means, icf, x, wishart_gamma, wishart_m):
    """ADBench GMM objective, loop form.

    icf[k, :d] are the log-diagonal of the Cholesky factor Q_k of precision k, icf[k, d:] its
    strictly-lower entries in column-major order (ADBench layout).  The constant terms of the
    log-likelihood and of the Wishart prior (the log multigamma) are omitted: they do not change
    the gradient.
    """
    n = x.shape[0]
    d = x.shape[1]
    K = alphas.shape[0]
    main = np.empty(K)
    slse = 0.0
    for i in range(n):
        mx = -1e300
        for k in range(K):
            sumq = 0.0
            sq = 0.0
            for j in range(d):
                sumq += icf[k, j]
                s = math.exp(icf[k, j]) * (x[i, j] - means[k, j])
                for l in range(j):
                    idx = d + l * (2 * d - l - 1) // 2 + (j - l - 1)
                    s += icf[k, idx] * (x[i, l] - means[k, l])
                sq += s * s
            main[k] = alphas[k] + sumq - 0.5 * sq
            if main[k] > mx:
                mx = main[k]
        se = 0.0
        for k in range(K):
            se += math.exp(main[k] - mx)
        slse += mx + math.log(se)
    amx = -1e300
    for k in range(K):
        if alphas[k] > amx:
            amx = alphas[k]
    ase = 0.0
    for k in range(K):
        ase += math.exp(alphas[k] - amx)
    lse_alphas = amx + math.log(ase)
    prior = 0.0
    for k in range(K):
        fro = 0.0
        sumq = 0.0
        for j in range(d):
            e = math.exp(icf[k, j])
            fro += e * e
            sumq += icf[k, j]
        for j in range(d, icf.shape[1]):
            fro += icf[k, j] * icf[k, j]
        prior += 0.5 * wishart_gamma * wishart_gamma * fro - wishart_m * sumq
    return slse - n * lse_alphas + prior


def gmm_vectorized(alphas, means, icf, x, wishart_gamma, wishart_m, q_rows, q_cols, mu_rows, mu_cols):
    """ADBench GMM objective, vectorized (array NumPy, the same value as ``gmm_objective``).

    The JAX/PyTorch peers build the (K, d, d) Cholesky factors with a scatter and use a batched
    3-d matmul; srcgrad's array subset has no scatter-assignment of differentiated values into an
    array, so the factors are built with a gather and the K products are done as one 2-d matmul
    (one BLAS call), ADBench-style:

    * ``V`` (K, d + d(d-1)/2 + 1): exp of the log-diagonal, the strictly-lower entries and a zero
      column; ``Qall = V[q_rows, q_cols].reshape(K*d, d)`` stacks Q_1 .. Q_K (row k*d + i of
      Qall is row i of Q_k; upper entries gather the zero column);
    * ``S = x @ Qall.T - b`` (n, K*d), ``b[k*d + i] = (Q_k mu_k)_i``, so that block k of row p is
      Q_k (x_p - mu_k); squared norms by reshaping S*S to (n*K, d) and summing rows;
    * log-sum-exp over components (axis 1) with the max subtracted, log-sum-exp of the alphas,
      the Wishart prior (constants omitted, as in the loop version).

    The four integer index arrays come from :func:`gmm_vectorized_index` (the JAX/PyTorch peers
    get their scatter indices from outside the same way). The matmul multiplies the full d x d
    factors (the upper zeros included), as the peers' batched matmuls do.
    """
    n = x.shape[0]
    d = x.shape[1]
    K = alphas.shape[0]
    qs = icf[:, :d]
    ls = icf[:, d:]
    eq = np.exp(qs)
    V = np.concatenate((eq, ls, np.zeros((K, 1))), axis=1)
    Qall = V[q_rows, q_cols].reshape((K * d, d))
    MU = means[mu_rows, mu_cols].reshape((K * d, d))
    b = np.sum(Qall * MU, axis=1)
    S = x @ Qall.T - b
    sq = np.sum((S * S).reshape((n * K, d)), axis=1).reshape((n, K))
    main = alphas - 0.5 * sq + np.sum(qs, axis=1)
    mx = np.max(main, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(main - mx), axis=1)) + mx[:, 0]
    amax = np.max(alphas)
    lse_alphas = np.log(np.sum(np.exp(alphas - amax))) + amax
    prior = 0.5 * wishart_gamma * wishart_gamma * (np.sum(eq * eq) + np.sum(ls * ls)) \
        - wishart_m * np.sum(qs)
    return np.sum(lse) - n * lse_alphas + prior


def gmm_vectorized_index(K, d):
    """Index arrays of :func:`gmm_vectorized`: ``V[q_rows, q_cols]`` and ``means[mu_rows, mu_cols]``,
    flattened in (k, i, j) order (int64, K*d*d each)."""
    zero = d + d * (d - 1) // 2
    col = np.empty((d, d), dtype=np.int64)
    for i in range(d):
        for j in range(d):
            if i == j:
                col[i, j] = i
            elif i > j:
                col[i, j] = d + j * (2 * d - j - 1) // 2 + (i - j - 1)
            else:
                col[i, j] = zero
    k = np.repeat(np.arange(K, dtype=np.int64), d * d)
    q_cols = np.tile(col.ravel(), K)
    mu_cols = np.tile(np.tile(np.arange(d, dtype=np.int64), d), K)
    return k, q_cols, k.copy(), mu_cols


def lstm_loss(W, b, wout, xs, ys):
    """One-layer LSTM over T steps, scalar read-out per step, squared-error loss.

    W is (4H, D+H) (gate order i, f, o, g; input columns first), b is (4H,), wout is (H,).
    """
    T = xs.shape[0]
    D = xs.shape[1]
    H = wout.shape[0]
    h = np.zeros(H)
    c = np.zeros(H)
    hn = np.zeros(H)
    loss = 0.0
    for t in range(T):
        for j in range(H):
            zi = b[j]
            zf = b[H + j]
            zo = b[2 * H + j]
            zg = b[3 * H + j]
            for k in range(D):
                zi += W[j, k] * xs[t, k]
                zf += W[H + j, k] * xs[t, k]
                zo += W[2 * H + j, k] * xs[t, k]
                zg += W[3 * H + j, k] * xs[t, k]
            for k in range(H):
                zi += W[j, D + k] * h[k]
                zf += W[H + j, D + k] * h[k]
                zo += W[2 * H + j, D + k] * h[k]
                zg += W[3 * H + j, D + k] * h[k]
            ig = 1.0 / (1.0 + math.exp(-zi))
            fg = 1.0 / (1.0 + math.exp(-zf))
            og = 1.0 / (1.0 + math.exp(-zo))
            gg = math.tanh(zg)
            c[j] = fg * c[j] + ig * gg
            hn[j] = og * math.tanh(c[j])
        pred = 0.0
        for j in range(H):
            h[j] = hn[j]
            pred += wout[j] * h[j]
        r = pred - ys[t]
        loss += r * r
    return loss


def heat_1d(u0, kappa, nsteps):
    """Explicit 1-D heat equation, Dirichlet ends held fixed; objective = sum of u_final^2."""
    n = u0.shape[0]
    u = u0.copy()
    un = u0.copy()
    for t in range(nsteps):
        for i in range(1, n - 1):
            un[i] = u[i] + kappa * (u[i - 1] - 2.0 * u[i] + u[i + 1])
        for i in range(1, n - 1):
            u[i] = un[i]
    s = 0.0
    for i in range(n):
        s += u[i] * u[i]
    return s


# mlp_loss: the 784-128-10 MLP, ReLU, softmax cross-entropy (array program) -- the project's one
# MNIST model, shared with examples/train_mnist.py and the tests
def ncdf(x):
    """The standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def call_price(S, K, T, r, sigma):
    """A Black-Scholes call price: map-mode scalar code (delta = d/dS, vega = d/dsigma)."""
    sq = sigma * math.sqrt(T)
    d1 = (math.log(S / K) + (r + 0.5 * sigma * sigma) * T) / sq
    d2 = d1 - sq
    return S * ncdf(d1) - K * math.exp(-r * T) * ncdf(d2)


from srcgrad.training.mlp import mlp_loss  # noqa: E402,F401


# --- extra programs of the "core" benchmark ---------------------------------------------------

def newton_sqrt_sum(a):
    """While loop with a data-dependent trip count: Newton square roots, then sum y*sin(y)."""
    s = 0.0
    for i in range(a.shape[0]):
        y = a[i]
        while abs(y * y - a[i]) > 1e-10 * a[i]:
            y = 0.5 * (y + a[i] / y)
        s += y * math.sin(y)
    return s


def inplace_sweeps(x, nsweeps):
    """In-place (Gauss-Seidel-like) nonlinear smoothing sweeps, objective sum of squares."""
    u = x.copy()
    n = u.shape[0]
    for s in range(nsweeps):
        for i in range(1, n - 1):
            u[i] = 0.5 * u[i] + 0.25 * math.tanh(u[i - 1] + u[i + 1])
    tot = 0.0
    for i in range(n):
        tot += u[i] * u[i]
    return tot


def soft_pair(dx, dy):
    r2 = dx * dx + dy * dy + 0.1
    inv = 1.0 / r2
    return inv * inv - inv


def pair_energy(pos):
    """Helper function (soft_pair) called from a double loop over particle pairs."""
    n = pos.shape[0]
    e = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            e += soft_pair(pos[i, 0] - pos[j, 0], pos[i, 1] - pos[j, 1])
    return e


# ----------------------------------------------------------------------------------------------
# Problem descriptions
# ----------------------------------------------------------------------------------------------

@dataclass
class Program:
    name: str
    fn: object
    wrt: tuple
    sizes: dict                 # label -> size parameters (dict)
    make_args: object           # (size dict, rng) -> tuple of positional args
    quick_sizes: tuple = ()     # labels used with --quick
    work: object = None         # size dict -> number proportional to the cost (for budgets)
    doc: str = ""
    dtype_note: str = "float64"
    tiny: dict = field(default_factory=dict)   # size for tests / finite-difference checks
    fd_rtol: float = 1e-5       # tolerance of the reference's finite-difference check
    float32: bool = False       # every tool is timed on float32 copies of the float arguments
                                # (the reference and its finite-difference check stay float64)


def _rosen_args(s, rng):
    return (rng.uniform(-1.0, 1.5, s["n"]),)


def _lorenz_args(s, rng):
    p = np.array([10.0, 28.0, 8.0 / 3.0]) * (1.0 + 0.01 * rng.standard_normal(3))
    u0 = np.array([1.0, 1.0, 20.0]) + 0.1 * rng.standard_normal(3)
    return (p, u0, s.get("dt", 0.001), int(s["nsteps"]))


def _gmm_args(s, rng):
    d, K, n = s["d"], s["K"], s["n"]
    alphas = rng.standard_normal(K)
    means = rng.uniform(0.0, 1.0, (K, d))
    icf = np.concatenate([0.1 * rng.standard_normal((K, d)),
                          0.1 * rng.standard_normal((K, d * (d - 1) // 2))], axis=1)
    x = rng.uniform(0.0, 1.0, (n, d))
    return (alphas, means, icf, x, 1.0, 0)


def _lstm_args(s, rng):
    T, D, H = s["T"], s["D"], s["H"]
    W = 0.3 * rng.standard_normal((4 * H, D + H)) / math.sqrt(D + H) * 3
    b = 0.1 * rng.standard_normal(4 * H)
    wout = rng.standard_normal(H) / math.sqrt(H)
    xs = rng.standard_normal((T, D))
    ys = rng.standard_normal(T)
    return (W, b, wout, xs, ys)


def _heat_args(s, rng):
    n = s["nx"]
    xg = np.linspace(0.0, 1.0, n)
    u0 = np.sin(math.pi * xg) + 0.1 * rng.standard_normal(n)
    u0[0] = 0.0
    u0[-1] = 0.0
    return (u0, 0.25, int(s["nt"]))


def as_float32(args):
    """float32 copies of the float arrays and floats among ``args`` (integers unchanged)."""
    return tuple(a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                 else (np.float32(a) if isinstance(a, float) else a) for a in args)


def _mlp_args(s, rng):
    B = s["batch"]
    W1 = rng.standard_normal((784, 128)) * math.sqrt(2.0 / 784)
    b1 = np.zeros(128)
    W2 = rng.standard_normal((128, 10)) * math.sqrt(1.0 / 128)
    b2 = np.zeros(10)
    X = rng.uniform(0.0, 1.0, (B, 784))
    y = rng.integers(0, 10, B)
    return (W1, b1, W2, b2, X, y)


def _newton_args(s, rng):
    return (rng.uniform(0.5, 2.0, s["n"]),)


def _inplace_args(s, rng):
    return (rng.standard_normal(s["n"]), int(s["sweeps"]))


def _pair_args(s, rng):
    return (rng.uniform(0.0, 10.0, (s["n"], 2)),)


PROGRAMS = {
    "rosenbrock": Program(
        "rosenbrock", rosenbrock, (0,),
        {"n=1e4": {"n": 10_000}, "n=1e6": {"n": 1_000_000}}, _rosen_args,
        quick_sizes=("n=1e4",), work=lambda s: s["n"], tiny={"n": 20},
        doc="Rosenbrock sum as a scalar loop; gradient w.r.t. x."),
    "lorenz": Program(
        "lorenz", lorenz_rk4, (0, 1),
        {"N=1e3": {"nsteps": 1000}, "N=1e4": {"nsteps": 10_000}}, _lorenz_args,
        quick_sizes=("N=1e3",), work=lambda s: s["nsteps"], tiny={"nsteps": 50, "dt": 0.01},
        doc="Lorenz-63, RK4, dt=1e-3, objective dt*sum_t|u_t|^2; gradient w.r.t. "
            "(sigma, rho, beta) packed as an array and the initial state."),
    "gmm": Program(
        "gmm", gmm_objective, (0, 1, 2),
        {"d=10,K=25,n=1000": {"d": 10, "K": 25, "n": 1000},
         "d=64,K=50,n=10000": {"d": 64, "K": 50, "n": 10_000}}, _gmm_args,
        quick_sizes=("d=10,K=25,n=1000",), work=lambda s: s["n"] * s["K"] * s["d"] ** 2,
        tiny={"d": 3, "K": 4, "n": 7},
        doc="ADBench GMM objective with loops (Cholesky-parameterised precisions, Wishart "
            "prior); gradient w.r.t. alphas, means, icf."),
    "lstm": Program(
        "lstm", lstm_loss, (0, 1, 2),
        {"T=100,D=16,H=32": {"T": 100, "D": 16, "H": 32},
         "T=500,D=32,H=64": {"T": 500, "D": 32, "H": 64}}, _lstm_args,
        quick_sizes=("T=100,D=16,H=32",), work=lambda s: s["T"] * s["H"] * (s["D"] + s["H"]),
        tiny={"T": 5, "D": 3, "H": 4},
        doc="One-layer LSTM written with loops over time steps and hidden units; gradient "
            "w.r.t. W, b, wout."),
    "heat": Program(
        "heat", heat_1d, (0, 1),
        {"nx=128,nt=1000": {"nx": 128, "nt": 1000}, "nx=1024,nt=4000": {"nx": 1024, "nt": 4000}},
        _heat_args, quick_sizes=("nx=128,nt=1000",), work=lambda s: s["nx"] * s["nt"],
        tiny={"nx": 10, "nt": 20},
        doc="Explicit 1-D heat stencil, kappa=0.25; gradient w.r.t. the initial condition and "
            "the diffusivity."),
    "mlp": Program(
        "mlp", mlp_loss, (0, 1, 2, 3),
        {"batch=64": {"batch": 64}, "batch=256": {"batch": 256}}, _mlp_args,
        quick_sizes=("batch=64",), work=lambda s: s["batch"], tiny={"batch": 8},
        doc="MLP 784-128-10, softmax cross-entropy, array program (@, np.maximum, np.max "
            "keepdims, gather z[np.arange(n), y], np.mean); gradient w.r.t. W1, b1, W2, b2.",
        dtype_note="float32 for every tool (reference and its finite-difference check in "
                   "float64; float32 gradients agree with it to rel. 1e-4)", float32=True,
        # ReLU kinks: with 256x128 hidden units a random direction crosses some within the
        # finite-difference step, so the float64 check is good to ~3e-5, not 1e-5
        fd_rtol=1e-4),
}

CORE_PROGRAMS = {
    "rosenbrock": PROGRAMS["rosenbrock"],
    "lorenz": PROGRAMS["lorenz"],
    "gmm": PROGRAMS["gmm"],
    "newton_while": Program(
        "newton_while", newton_sqrt_sum, (0,), {"n=1e5": {"n": 100_000}}, _newton_args,
        quick_sizes=("n=1e5",), work=lambda s: s["n"], tiny={"n": 10},
        doc="while loop with data-dependent trip count (Newton sqrt per element)."),
    "inplace": Program(
        "inplace", inplace_sweeps, (0,), {"n=1e4,sweeps=50": {"n": 10_000, "sweeps": 50}},
        _inplace_args, quick_sizes=("n=1e4,sweeps=50",), work=lambda s: s["n"] * s["sweeps"],
        tiny={"n": 8, "sweeps": 3},
        doc="in-place array update inside a loop (nonlinear Gauss-Seidel sweeps)."),
    "helper": Program(
        "helper", pair_energy, (0,), {"n=1000": {"n": 1000}}, _pair_args,
        quick_sizes=("n=1000",), work=lambda s: s["n"] ** 2, tiny={"n": 6},
        doc="helper function soft_pair() called from a double loop."),
}

ALL_PROGRAMS = dict(PROGRAMS)
ALL_PROGRAMS.update(CORE_PROGRAMS)


def make_args(prog, size, seed=0):
    return prog.make_args(size, np.random.default_rng(seed))
