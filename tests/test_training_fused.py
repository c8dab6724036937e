"""Plain SGD fused into the generated adjoint (``srcgrad.training.fused_sgd``): MinibatchLoop with
the SGD optimizer runs one compiled step per batch whose weight updates are the weight-gradient
GEMMs (``W = -lr * X.T @ G + W``). It must train exactly what the unfused loop (gradient, then
``p -= lr * g``) trains, to rounding, and fuse only where the product reads the same values at the
end of the step."""
import numpy as np
import pytest

from srcgrad.training import fused_sgd, optim
from srcgrad.training.mlp import init_params, mlp_loss
from conftest import mlp_sgd_reference


def _mlp_problem(dtype, n=45, n_in=12, hidden=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    y = rng.integers(0, 10, n)
    params = tuple(p.astype(dtype) for p in init_params(hidden, seed=1, n_in=n_in))
    return X, y, params, rng.permutation(n).astype(np.int64)


def _train(params, X, y, order, B, fused, monkeypatch):
    import srcgrad
    monkeypatch.setenv("SRCGRAD_FUSED_SGD", "1" if fused else "0")
    trained = tuple(p.copy() for p in params)
    loop = optim.MinibatchLoop(srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)),
                               optim.SGD(lr=0.1))
    total = loop(trained, X, y, order, B, 0, 2)         # batches 0, 1; then the rest
    total += loop(trained, X, y, order, B, first=2)
    return trained, total, loop.fused


@pytest.mark.parametrize("dtype, tol", [
    (np.float32, 2e-5),
    # float64 through the fused step: test_optim's SGD MinibatchLoop test (default); -m slow here
    pytest.param(np.float64, 1e-12, marks=pytest.mark.slow)])
def test_fused_sgd_matches_unfused_and_the_float64_reference(dtype, tol, monkeypatch):
    X, y, params, order = _mlp_problem(dtype)
    fused, fused_total, names = _train(params, X, y, order, 10, True, monkeypatch)
    plain, plain_total, none = _train(params, X, y, order, 10, False, monkeypatch)
    assert names == ("W1", "W2") and none == ()
    np.testing.assert_allclose(fused_total, plain_total, rtol=tol)
    reference = mlp_sgd_reference(params, X, y, order, 10, 0.1)
    for f, p, r in zip(fused, plain, reference):
        assert f.dtype == dtype
        scale = np.max(np.abs(r))
        assert np.max(np.abs(f - p)) <= tol * scale
        assert np.max(np.abs(f - r)) <= 2 * tol * scale


# -- the rewrite (no compile) ---------------------------------------------------------------------

def _adjoint_module(body):
    """A module holding an adjoint of the generated form: parameters W, b, data X."""
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"@jit\ndef f_adjoint(W, b, X, _seed):\n    \"\"\"doc\"\"\"\n{lines}\n"


def test_step_source_fuses_the_mlp_weights_and_updates_at_the_end():
    import srcgrad
    X, y, params, _ = _mlp_problem(np.float32)
    spec = srcgrad.value_and_grad(mlp_loss, wrt=(0, 1, 2, 3)).specialize(*params, X[:5], y[:5])
    text, fused = fused_sgd.sgd_step_source(spec.source, "mlp_loss_adjoint", 4)
    assert fused == ["W1", "W2"]
    assert "def mlp_loss_adjoint_sgd_step(W1, b1, W2, b2, X, y, _seed, _lr):" in text
    assert "_adj_W1 = sgd_pending_right(_adj_t1, X, W1)" in text
    tail = text[text.index("_adj_W1 = sgd_pending_right"):]     # the last statement before them
    assert "for " not in tail and "if " not in tail                  # every update after every loop
    # the gradients come back scaled by the seed at the end (transform.SEED_AT_END): the step
    # updates with _lr * _seed
    assert "sgd_apply_right(_adj_W1, _adj_t1, X, W1, _lr * _seed)" in tail
    assert "sgd_apply(b1, _adj_b1, _lr * _seed)" in tail and tail.rstrip().endswith("return _value")


GOOD = """
_t1 = matmul(X, W)
_adj_t1 = np.ones_like(_t1)
_adj_W = matmul_grad_right(_adj_t1, X, W)
_adj_b = np.zeros_like(b)
_value = 1.0
return _value, (_adj_W, _adj_b)
"""


@pytest.mark.parametrize("before, after, fused", [
    ("", "", ["W"]),
    # the product's operand written after it: computed at the end it would read new values
    ("", "_adj_t1[0, 0] = 2.0", []),
    ("", "_adj_t1 += 1.0", []),
    ("", "scatter_add2(_adj_t1, _i, _j, _v)", []),
    ("", "np.exp(_t1, out=_adj_t1)", []),
    # ... or rebound after it
    ("", "_adj_t1 = np.zeros_like(_t1)", []),
    # ... or an array it may be a view of written after it (a view of one that is not: fused)
    ("_base = np.ones_like(_t1)\n_adj_t1 = unbroadcast(_base, _t1)", "_base[0, 0] = 1.0", []),
    ("_base = np.ones_like(_t1)\n_adj_t1 = unbroadcast(_base, _t1)", "", ["W"]),
    # an operand that may be a view of a parameter (updated before the product would read it)
    ("_adj_t1 = W.T", "", []),
])
def test_step_source_fuses_only_products_that_read_the_same_values_at_the_end(before, after,
                                                                               fused):
    product = "_adj_W = matmul_grad_right(_adj_t1, X, W)"
    body = GOOD.replace(product, "\n".join(filter(None, [before, product, after])))
    text, got = fused_sgd.sgd_step_source(_adjoint_module(body), "f_adjoint", 2)
    assert got == fused
    assert ("sgd_apply_right(_adj_W, _adj_t1, X, W, _lr)" in text) == bool(fused)
    assert ("sgd_apply(W, _adj_W, _lr)" in text) == (not fused)


SEEDED = ("_seeded1 = _adj_W if _seed == 1.0 else _adj_W * _adj_W.dtype.type(_seed)\n"
          "_seeded2 = _adj_b if _seed == np.float32(1.0) else _adj_b * np.float32(_seed)\n"
          "return _value, (_seeded1, _seeded2)")


@pytest.mark.parametrize("ret, fused, updates", [
    # the seed at the end: the product still fused, both updates scaled by the seed, the scaled
    # gradients not made
    (SEEDED, ["W"], ["sgd_apply_right(_adj_W, _adj_t1, X, W, _lr * _seed)",
                     "sgd_apply(b, _adj_b, _lr * _seed)"]),
    # not the seed's scaling (another factor, another name, another test): returned as it is
    (SEEDED.replace("_adj_W.dtype.type(_seed)", "2.0"), [], ["sgd_apply(W, _seeded1, _lr)"]),
    (SEEDED.replace("_adj_W * _adj_W", "_adj_b * _adj_W"), [], ["sgd_apply(W, _seeded1, _lr)"]),
    (SEEDED.replace("_adj_W if _seed == 1.0", "_adj_W if _seed == 2.0"), [],
     ["sgd_apply(W, _seeded1, _lr)"]),
])
def test_step_source_reads_gradients_scaled_by_the_seed(ret, fused, updates):
    body = GOOD.replace("return _value, (_adj_W, _adj_b)", ret)
    text, got = fused_sgd.sgd_step_source(_adjoint_module(body), "f_adjoint", 2)
    assert got == fused
    for update in updates:
        assert update in text
    assert "sgd_apply(b, _adj_b, _lr * _seed)" in text and "_seeded2" not in text
    assert ("_seeded1 =" in text) == (not fused)


def test_step_source_refuses_other_forms():
    # a gradient that is not the product's result, an early return, fewer gradients
    assert fused_sgd.sgd_step_source(_adjoint_module(GOOD.replace("return _value, (_adj_W, _adj_b)",
                                                                  "return _value, (_adj_W,)")),
                                     "f_adjoint", 2) is None
    early = GOOD.replace("_value = 1.0", "if _seed == 0:\n    return 0.0, (_adj_W, _adj_b)\n_value = 1.0")
    assert fused_sgd.sgd_step_source(_adjoint_module(early), "f_adjoint", 2) is None


def test_left_and_right_helpers_match_numpy_and_refuse_overlap():
    import numba
    rng = np.random.default_rng(0)
    G = rng.standard_normal((5, 3))
    A = rng.standard_normal((5, 4))
    P = rng.standard_normal((4, 3))
    B = rng.standard_normal((2, 3))
    Q = rng.standard_normal((5, 2))

    @numba.njit
    def right(G, A, P, lr):
        n = fused_sgd.sgd_pending_right(G, A, P)
        pending = n.size == 0
        fused_sgd.sgd_apply_right(n, G, A, P, lr)
        return pending

    @numba.njit
    def left(G, Q, B, lr):
        n = fused_sgd.sgd_pending_left(G, Q, B)
        pending = n.size == 0
        fused_sgd.sgd_apply_left(n, G, Q, B, lr)
        return pending

    want = P - 0.1 * (A.T @ G)
    assert right(G, A, P, 0.1)
    np.testing.assert_allclose(P, want, rtol=1e-13)
    want = Q - 0.1 * (G @ B.T)
    assert left(G, Q, B, 0.1)
    np.testing.assert_allclose(Q, want, rtol=1e-13)
    # an operand sharing the parameter's memory: the gradient first, then the update
    S = rng.standard_normal((4, 4))
    want = S - 0.1 * (S.T @ S)
    assert not right(S, S, S, 0.1)
    np.testing.assert_allclose(S, want, rtol=1e-13)
