"""srcgrad.backends.cpu.pipeline: generated functions compile without Numba's closure-inlining
search when they have nothing for it to inline (issue 17), with the same results."""
import functools

import numpy as np

import srcgrad
from conftest import check_grad
from srcgrad.backends.cpu.pipeline import GeneratedCodeCompiler, pipeline_for


def _plain(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


def _with_comprehension(x):
    return sum([x[i] for i in range(3)])


def _with_closure(x):
    def twice(v):
        return 2.0 * v
    return twice(x)


def _with_reduce(x):
    return functools.reduce(lambda a, b: a + b, x)


def _with_block(x):
    with open(x) as f:
        return f.read()


def test_pipeline_only_where_nothing_is_inlined():
    assert pipeline_for(_plain) is GeneratedCodeCompiler
    for function in (_with_comprehension, _with_closure, _with_reduce, _with_block):
        assert pipeline_for(function) is None, function.__name__


def test_pipeline_has_no_closure_search_and_compiles_the_same():
    import numba
    from numba.core.untyped_passes import InlineClosureLikes

    compiler = GeneratedCodeCompiler.__new__(GeneratedCodeCompiler)
    compiler.state = type("State", (), {"func_ir": None, "flags": numba.core.compiler.Flags()})()
    passes = [cls for cls, _ in compiler.define_pipelines()[0].passes]
    assert InlineClosureLikes not in passes
    trimmed = numba.njit(pipeline_class=GeneratedCodeCompiler)(_plain)
    x = np.arange(5.0)
    assert trimmed(x) == numba.njit(_plain)(x) == 30.0


def _loss(W, x):
    h = np.tanh(W @ x)
    t = 0.0
    for i in range(h.shape[0]):
        t += h[i] * h[i] * (i + 1.0)
    return t + np.sum(np.sin(W) * W)


def test_generated_adjoint_uses_it_and_matches_finite_differences():
    rng = np.random.default_rng(3)
    W, x = rng.standard_normal((4, 3)), rng.standard_normal(3)
    g = srcgrad.grad(_loss, wrt=0, target="cpu")
    check_grad(_loss, [W, x], wrt=0, target="cpu", gradfn=g, rtol=1e-6, atol=1e-8)
    assert g.specialize(W, x).adjoint._compiler.pipeline_class is GeneratedCodeCompiler
