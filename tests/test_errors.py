"""srcgrad's refusals: every unsupported construct, bad arguments, missing sources, recursion.

Also user-registered rules, cache invalidation when the source changes, and concurrency (threads in
one process, processes sharing one SRCGRAD_CACHE_DIR).
"""
import inspect
import math
import os
import subprocess
import sys
import textwrap
import threading

import numba
import numpy as np
import pytest

import srcgrad
from srcgrad import UnsupportedSyntaxError, SrcgradError, d
from conftest import TARGETS, check_grad, user_numba_env

THIS_FILE = os.path.abspath(__file__)


def marker_line(func):
    """The file line number of the line marked `# BAD` in func's source."""
    lines, first = inspect.getsourcelines(func)
    for offset, line in enumerate(lines):
        if "# BAD" in line:
            return first + offset
    raise AssertionError(f"{func.__name__} has no # BAD marker")


# ------------------------------------------------------------------------------------------------
# the catalogue of unsupported constructs (the offending line is marked # BAD)
# ------------------------------------------------------------------------------------------------

def u_try(x):
    y = x * 2.0
    try:  # BAD
        y = y + 1.0
    except ValueError:
        y = 0.0
    return y


def u_with(x):
    y = x * 2.0
    with open("f") as fh:  # BAD
        y = y + 1.0
    return y


def u_listcomp(x):
    y = x * 2.0
    while sum([y * i for i in range(3)]) < 10.0:  # BAD
        y = y * 2.0
    return y


def u_genexp(x):
    return sum(x * i for i in {0: 1, 1: 2})  # BAD


def u_yield(x):
    y = x * 2.0
    yield y  # BAD


def u_global(x):
    global THIS_FILE  # BAD
    return x


def u_nonlocal(x):
    y = x

    def inner():  # BAD
        nonlocal y
        y = y * 2.0
        return y
    return inner()


def u_class(x):
    class Box:  # BAD
        pass
    return x


def u_string(x):
    s = "abc"  # BAD
    return x


def u_string_method(x, n):
    y = x * 2.0
    k = n.upper()  # BAD
    return y


def u_fstring(x):
    y = x * 2.0
    label = f"{y}"  # BAD
    return y


def u_for_list(x):
    s = 0.0
    for v in {1.0, 2.0}:  # BAD
        s = s + v * x
    return s


def u_for_array(a):
    s = 0.0
    for v in a.flat:  # BAD
        s = s + v
    return s


def u_while_else(x):
    y = x
    while y < 10.0:  # BAD
        y = y * 2.0
    else:
        y = 0.0
    return y


def u_for_else(x):
    y = x
    for i in range(3):  # BAD
        y = y * 2.0
    else:
        y = 0.0
    return y


def u_del(x):
    y = x * 2.0
    del y  # BAD
    return x


def u_assert(x):
    assert x > 0.0, f"{x} is negative"  # BAD
    return x * x


def u_raise(x):
    if x < 0.0:
        raise ValueError("negative")  # BAD
    return x * x


def u_import(x):
    import math as m  # BAD
    return m.sin(x)


def u_dict(x):
    table = {str(x): x}  # BAD: a dict built in the function needs constant keys
    return x


def u_list_literal(x):
    values = [x, x] * 2  # BAD
    return x


def u_walrus(x):
    if (y := x * 2.0) > 1.0:  # BAD
        return y
    return x


def u_starred(x, a):
    y = np.zeros(*a.shape)  # BAD
    return x


def u_expression_statement(x):
    y = x * 2.0
    math.sin(y)  # BAD
    return y


def u_varargs(*xs):  # BAD
    return xs[0]


def u_kwonly(x, *, y=1.0):  # BAD
    return x * y


def u_attribute_target(x, a):
    a.shape = (3,)  # BAD
    return x


def u_match(x):
    match x:  # BAD
        case 1.0:
            return x
    return x * 2.0


UNSUPPORTED = [u_try, u_with, u_listcomp, u_genexp, u_yield, u_global, u_nonlocal, u_class,
               u_string, u_fstring, u_for_list, u_for_array, u_while_else, u_for_else,
               u_del, u_assert, u_raise, u_import, u_dict, u_list_literal, u_walrus, u_starred,
               u_expression_statement, u_kwonly, u_attribute_target, u_match]

ARGS = {u_string_method: (1.0, "s"), u_starred: (1.0, np.ones(2)), u_for_array: (np.ones(2),),
        u_attribute_target: (1.0, np.ones(3)), u_varargs: (1.0,)}


@pytest.mark.parametrize("func", UNSUPPORTED, ids=lambda f: f.__name__)
def test_unsupported_construct_names_file_and_line(func):
    args = ARGS.get(func, (1.0,))
    with pytest.raises(UnsupportedSyntaxError) as info:
        srcgrad.grad(func, target="python")(*args)
    message = str(info.value)
    line = marker_line(func)
    assert os.path.basename(THIS_FILE) in message, message
    assert f":{line}" in message, f"expected line {line} in: {message}"
    assert info.value.lineno == line
    assert os.path.basename(info.value.filename) == os.path.basename(THIS_FILE)
    assert isinstance(info.value, SrcgradError)


def test_varargs_refused_when_generating_source():
    # calling would first fail on the kinds of *xs; asking for the source runs the fence directly
    with pytest.raises(UnsupportedSyntaxError) as info:
        srcgrad.grad(u_varargs, target="python").source
    assert f"test_errors.py:{marker_line(u_varargs)}" in str(info.value)


def test_unsupported_reported_on_cpu_target_too():
    with pytest.raises(UnsupportedSyntaxError, match=r"test_errors\.py:\d+"):
        srcgrad.grad(u_try, target="cpu")(1.0)


def test_string_argument_is_a_type_error():
    with pytest.raises((TypeError, UnsupportedSyntaxError)):
        srcgrad.grad(u_string_method, target="python")(1.0, "s")


# ------------------------------------------------------------------------------------------------
# calls without a rule, non-scalar results
# ------------------------------------------------------------------------------------------------

def calls_lgamma(x):
    return math.lgamma(x) * 2.0  # BAD


def calls_np_without_rule(x):
    y = x * 2.0
    z = np.i0(y)  # BAD
    return z


@pytest.mark.parametrize("func", [calls_lgamma, calls_np_without_rule], ids=lambda f: f.__name__)
def test_unknown_function_mentions_register_adjoint(func):
    with pytest.raises(SrcgradError) as info:
        srcgrad.grad(func, target="python")(0.3)
    message = str(info.value)
    assert "register_adjoint" in message, message
    assert f"test_errors.py:{marker_line(func)}" in message, message


def returns_array(a):
    return a * 2.0


def returns_array_elementwise_loop(a):
    b = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        b[i] = a[i] * a[i]
    return b


def returns_tuple(x):
    return x, x * 2.0


@pytest.mark.parametrize("func", [returns_array, returns_array_elementwise_loop, returns_tuple],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("target", TARGETS)
def test_non_scalar_result_is_a_clear_error(func, target, request):
    arg = 1.5 if func is returns_tuple else np.ones(3)
    with pytest.raises((SrcgradError, TypeError, ValueError)) as info:
        srcgrad.grad(func, target=target)(arg)
    message = str(info.value).lower()
    assert "scalar" in message or "float" in message, message
    assert "numba" not in type(info.value).__module__


# ------------------------------------------------------------------------------------------------
# bad wrt and bad arguments
# ------------------------------------------------------------------------------------------------

def two_floats(x, y):
    return x * y


def float_and_int(x, n):
    s = 0.0
    for i in range(n):
        s = s + x
    return s


def test_wrt_out_of_range():
    with pytest.raises(ValueError, match=r"wrt=2.*two_floats.*2 parameter"):
        srcgrad.grad(two_floats, wrt=2)
    with pytest.raises(ValueError, match="wrt=-1"):
        srcgrad.grad(two_floats, wrt=-1)
    with pytest.raises(ValueError):
        srcgrad.grad(two_floats, wrt=(0, 5))


def test_wrt_unknown_name():
    with pytest.raises(ValueError, match=r"no parameter named 'z'.*x, y"):
        srcgrad.grad(two_floats, wrt="z")


def test_wrt_bad_types_and_duplicates():
    with pytest.raises(TypeError, match="wrt entries"):
        srcgrad.grad(two_floats, wrt=1.5)
    with pytest.raises(TypeError):
        srcgrad.grad(two_floats, wrt=True)
    with pytest.raises(ValueError, match="twice"):
        srcgrad.grad(two_floats, wrt=(0, "x"))
    with pytest.raises(ValueError, match="at least one"):
        srcgrad.grad(two_floats, wrt=())


def test_wrt_on_int_argument(target):
    g = srcgrad.grad(float_and_int, wrt="n", target=target)
    with pytest.raises(TypeError, match=r"'n'.*int"):
        g(1.0, 3)
    with pytest.raises(TypeError, match=r"'x'"):
        srcgrad.grad(float_and_int, wrt=0, target=target)(np.array([1, 2]), 3)


def test_wrong_argument_count(target):
    g = srcgrad.grad(two_floats, target=target)
    with pytest.raises(TypeError, match="two_floats"):
        g(1.0)
    with pytest.raises(TypeError, match="two_floats"):
        g(1.0, 2.0, 3.0)
    with pytest.raises(TypeError):
        g(1.0, z=2.0)


def test_unsupported_argument_types():
    g = srcgrad.grad(two_floats, target="python")
    with pytest.raises(TypeError, match="argument 'y'"):
        g(1.0, "a")
    with pytest.raises(TypeError, match="argument 'y'"):
        g(1.0, {1.0, 2.0})
    with pytest.raises(TypeError, match="complex"):
        g(1.0, np.ones(2, dtype=np.complex128))


def test_bad_target_and_call_forms():
    with pytest.raises(ValueError, match="target"):
        srcgrad.grad(two_floats, target="gpu")
    with pytest.raises(TypeError, match="function first"):
        srcgrad.grad(0)
    with pytest.raises(TypeError, match="Python function"):
        srcgrad.grad(print)


# ------------------------------------------------------------------------------------------------
# source unavailable, recursion
# ------------------------------------------------------------------------------------------------

SQUARE_LAMBDA = lambda x: x * x  # noqa: E731


def test_lambda_source_is_found():
    # lambdas are differentiated since static.py (tests/test_closures.py)
    assert srcgrad.grad(SQUARE_LAMBDA, target="python")(3.0) == 6.0


def test_exec_defined_function_is_refused():
    namespace = {}
    exec("def made_by_exec(x):\n    return x * x\n", namespace)
    with pytest.raises(SrcgradError, match="source.*not available"):
        srcgrad.grad(namespace["made_by_exec"], target="python")(1.0)


def recursive(x, n):
    if n == 0:
        return x
    return recursive(x * 2.0, n - 1) + x


def mutual_a(x, n):
    if n <= 0:
        return x
    return mutual_b(x, n - 1) * 2.0


def mutual_b(x, n):
    return mutual_a(x + 1.0, n - 1)


@pytest.mark.parametrize("func", [recursive, mutual_a], ids=lambda f: f.__name__)
def test_recursion_is_refused(func):
    with pytest.raises(SrcgradError, match="recursion"):
        srcgrad.grad(func, target="python")(1.0, 3)


# ------------------------------------------------------------------------------------------------
# user rules
# ------------------------------------------------------------------------------------------------

@srcgrad.register_adjoint(np.cbrt)
def cbrt_adjoint(result, x):
    d[x] += d[result] / (3.0 * result * result)


def uses_cbrt(x, y):
    return np.cbrt(x * y) + x


@numba.njit
def smooth_abs(x):
    return math.sqrt(x * x + 0.01)


@srcgrad.register_adjoint(smooth_abs)
def smooth_abs_adjoint(result, x):
    d[x] += d[result] * x / result


def uses_smooth_abs(a):
    s = 0.0
    for i in range(a.shape[0]):
        s = s + smooth_abs(a[i]) * a[i]
    return s


def test_register_adjoint_for_numpy_function(target):
    check_grad(uses_cbrt, (0.7, 2.5), wrt=(0, 1), target=target)


def test_register_adjoint_for_user_numba_function(target):
    check_grad(uses_smooth_abs, (np.array([0.3, -1.2, 0.05]),), target=target)


def test_bad_template_is_rejected():
    with pytest.raises(SrcgradError, match="template"):
        @srcgrad.register_adjoint(np.cbrt)
        def bad(result, x):
            print(x)


def test_register_adjoint_needs_a_function():
    with pytest.raises(TypeError):
        srcgrad.register_adjoint()


def test_d_outside_template():
    with pytest.raises(SrcgradError):
        d[0]


# ------------------------------------------------------------------------------------------------
# caching, threads, processes
# ------------------------------------------------------------------------------------------------

def _load(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", TARGETS)
def test_redefined_function_gets_new_gradient(tmp_path, target):
    path = tmp_path / f"redef_{target}.py"
    path.write_text("def f(x):\n    return x * x\n")
    m1 = _load(str(path), f"redef_{target}_v1")
    assert srcgrad.grad(m1.f, target=target)(3.0) == 6.0
    path.write_text("def f(x):\n    return x * x * x + 0.0\n")
    os.utime(path, (os.path.getatime(path), os.path.getmtime(path) + 5))
    m2 = _load(str(path), f"redef_{target}_v2")
    assert srcgrad.grad(m2.f, target=target)(3.0) == 27.0


def test_helper_change_changes_cache_key(tmp_path):
    path = tmp_path / "redef_helper.py"
    path.write_text("def h(x):\n    return x * x\n\n\ndef f(x):\n    return h(x) + 1.0\n")
    m1 = _load(str(path), "redef_helper_v1")
    assert srcgrad.grad(m1.f, target="python")(3.0) == 6.0
    path.write_text("def h(x):\n    return x * x * 2.0\n\n\ndef f(x):\n    return h(x) + 1.0\n")
    os.utime(path, (os.path.getatime(path), os.path.getmtime(path) + 5))
    m2 = _load(str(path), "redef_helper_v2")
    assert srcgrad.grad(m2.f, target="python")(3.0) == 12.0


def global_constant_user(x):
    return x * SCALE


SCALE = 2.0


def test_global_constant_change_changes_result():
    assert srcgrad.grad(global_constant_user, target="python")(1.0) == 2.0
    global SCALE
    old = SCALE
    SCALE = 5.0
    try:
        assert srcgrad.grad(global_constant_user, target="python")(1.0) == 5.0
    finally:
        SCALE = old


def threaded_fn(a, w):
    s = 0.0
    for i in range(a.shape[0]):
        s = s + math.tanh(a[i] * w) * a[i]
    return s


@pytest.mark.parametrize("target", TARGETS)
def test_two_threads_on_a_fresh_gradfunction(target):
    g = srcgrad.grad(threaded_fn, wrt=(0, 1), target=target)
    a = np.linspace(-1, 1, 7)
    results = [None] * 4
    errors = []
    barrier = threading.Barrier(4)

    def work(k):
        try:
            barrier.wait()
            results[k] = g(a, 0.7)
        except BaseException as exc:       # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results[1:]:
        np.testing.assert_array_equal(r[0], results[0][0])
        assert r[1] == results[0][1]
    check_grad(threaded_fn, (a, 0.7), wrt=(0, 1), target=target, gradfn=g)


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {moddir!r})
    import numpy as np
    import srcgrad
    import procmod
    g = srcgrad.grad(procmod.f, wrt=(0, 1), target="cpu")
    ga, gw = g(np.linspace(-1.0, 1.0, 5), 0.3)
    print(repr(ga.tolist()), repr(gw))
""")


def test_two_processes_share_one_cache_dir(tmp_path):
    moddir = tmp_path / "mod"
    moddir.mkdir()
    (moddir / "procmod.py").write_text(textwrap.dedent("""
        import math
        def f(a, w):
            s = 0.0
            for i in range(a.shape[0]):
                s = s + math.sin(a[i] * w) * a[i]
            return s
    """))
    cache = tmp_path / "cache"
    # at Numba's default level, as users run: at the suite's NUMBA_OPT=0 Numba may not write its
    # cache files at all, and the processes would not share them (see conftest.py)
    env = dict(user_numba_env(os.environ), SRCGRAD_CACHE_DIR=str(cache))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(srcgrad.__file__)))
    code = CHILD.format(repo=repo, moddir=str(moddir))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[0][0] == outs[1][0]
    assert outs[0][0].strip()
    assert any(name.endswith(".py") for name in os.listdir(cache))
    # a third process reuses the cache
    out, err = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True).communicate(timeout=300)
    assert out == outs[0][0], err


def test_cache_dir_is_private_to_the_test_session(srcgrad_cache_dir):
    assert os.environ["SRCGRAD_CACHE_DIR"] == srcgrad_cache_dir
    from srcgrad import codegen
    assert codegen.cache_dir() == srcgrad_cache_dir
    assert not srcgrad_cache_dir.startswith(os.path.join(os.path.expanduser("~"), ".cache"))
