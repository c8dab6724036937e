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


# -- NopythonRewrites only where a rewrite besides a one-operation array expression applies ---------

def _one_operation(a, b):
    c = a * b
    return c - a


def _chained(a, b):
    return a * b + np.exp(a - b)


def _list_of_constants(a):
    return a * np.array([1.0, 2.0, 3.0])


_RECORD = np.dtype([("x", np.float64), ("y", np.float64)])


def _record_field(r):
    # a constant key: Numba's rewrites before type inference make these static item reads, which
    # the string-literal rewrite after inference leaves alone
    return r[0]["x"] * 2.0 + r[1]["y"]


def test_rewrites_run_only_where_they_change_the_code(monkeypatch):
    import numba
    from numba.core.typed_passes import NopythonRewrites
    from srcgrad.backends.cpu import pipeline

    ran = []

    class Recording(NopythonRewrites):
        def run_pass(self, state):
            ran.append(state.func_id.func_name)
            return super().run_pass(state)

    monkeypatch.setattr(pipeline, "NopythonRewrites", Recording)
    a, b = np.linspace(0.5, 1.5, 3), np.linspace(-1.0, 1.0, 3)
    records = np.zeros(2, dtype=_RECORD)
    records["x"], records["y"] = (1.5, 2.5), (3.0, 4.0)
    cases = [(_one_operation, (a, b), False), (_chained, (a, b), True),
             (_list_of_constants, (a,), True), (_record_field, (records,), False)]
    for function, args, rewritten in cases:
        ran.clear()
        trimmed = numba.njit(pipeline_class=GeneratedCodeCompiler)(function)
        np.testing.assert_array_equal(trimmed(*args), numba.njit(function)(*args))
        assert ran == ([function.__name__] if rewritten else []), function.__name__


def test_an_unknown_rewrite_keeps_the_pass(monkeypatch):
    from numba.core.rewrites import rewrite_registry
    from srcgrad.backends.cpu import pipeline

    class SomeoneElsesRewrite:
        pass
    registered = rewrite_registry.rewrites["after-inference"] + [SomeoneElsesRewrite]
    monkeypatch.setitem(rewrite_registry.rewrites, "after-inference", registered)
    assert pipeline._needs_rewrites(state=None)
