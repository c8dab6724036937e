"""The runtime-helper registry (srcgrad/helpers.py): every declared helper runs on every backend
and agrees with its NumPy reference (srcgrad/helper_reference.py) on random inputs.

The cpu implementations are called from compiled code (many are Numba overloads whose Python
body is only a stand-in), a group of helpers per compiled function to keep the compiles few;
arguments that are not arrays are written into that function as constants, as generated code
writes axes and flags.
"""
import numpy as np
import pytest

from srcgrad import codegen, helpers, helper_reference, runtime

RNG = np.random.default_rng(1)


def u(*shape, lo=-1.5, hi=1.5):
    return RNG.uniform(lo, hi, shape)


def spd(n):
    m = u(n, n)
    return m @ m.T + n * np.eye(n)


class Case:
    """A sample call: ``args``; ``view`` projects a result onto what it defines (a tape's used
    part); ``shape_only`` for fresh uninitialized arrays; ``group`` the compiled function the cpu
    test puts it in."""

    def __init__(self, *args, view=None, shape_only=False, group="arrays"):
        self.args, self.view, self.shape_only, self.group = args, view, shape_only, group


def _tape(result):
    tape, top = result
    return np.asarray(tape)[:top], top


_X = u(3, 4)
_V = RNG.permutation(12).reshape(3, 4) / 4.0 - 1.0        # distinct values: max/min/sort are smooth
_Q, _ = np.linalg.qr(u(3, 3))
_W = np.array([0.5, 1.5, 3.0])

CASES = {
    "push_float": Case(np.zeros(4), 4, 1.5, view=_tape, group="tapes"),
    "push_int": Case(np.zeros(4, np.int64), 2, 7, view=_tape, group="tapes"),
    "range_length": Case(7, 1, -2, group="tapes"),
    "_range_continues": Case(3, 9, 2, group="tapes"),
    "new_float_tape": Case(shape_only=True, group="tapes"),
    "new_int_tape": Case(shape_only=True, group="tapes"),
    "new_float32_tape": Case(shape_only=True, group="tapes"),
    "push_slice": Case(np.zeros(5), 3, u(2, 2), view=_tape, group="tapes"),
    "tape_slice": Case(u(8), 2, u(2, 3), group="tapes"),
    "count_snapshot": Case(16, [u(2, 3)], u(2, 3), False, group="tapes"),
    "pop_snapshot": Case([u(2, 3), u(2, 3)], u(2, 3), False, group="tapes"),
    "snapshot_buffer": Case(u(2, 3), 4, shape_only=True, group="tapes"),
    "reserve_tape": Case(u(4), 3, 6, view=lambda tape: np.asarray(tape)[:3], group="tapes"),
    "push_snapshot": Case(np.zeros((3, 2, 2)), 1, u(2, 2), group="tapes"),
    "snapshot_at": Case(u(3, 2, 2), 2, u(2, 2), group="tapes"),
    "first_snapshot_row": Case(np.zeros((3, 2, 2)), u(2, 2), group="tapes"),
    "huge_pages": Case(u(3, 4), group="tapes"),
    "array_op": Case("/", u(3, 1), u(4) + 2.0),
    "update_array": Case(u(3, 4), "-", u(4)),
    "unbroadcast": Case(u(2, 3, 4), u(3, 1)),
    "reduce_sum": Case(_X, 1, True),
    "reduce_mean": Case(_X, 0, False),
    "reduce_max": Case(_V, 1, False),
    "reduce_min": Case(_V, 0, True),
    "reduce_prod": Case(_X, 1, False),
    "expand_reduced": Case(u(3), _X, 1, False),
    "reduced_count": Case(_X, 1),
    "max_adjoint": Case(u(3), _V, 1, False),
    "min_adjoint": Case(u(1, 4), _V, 0, True),
    "prod_adjoint": Case(u(4), _X, 0, False),
    "matmul_grad_left": Case(u(3, 2), _X, u(4, 2)),
    "matmul_grad_right": Case(u(3, 2), _X, u(4, 2)),
    "gather2": Case(_X, np.array([0, 2, 2]), np.array([1, 3, 1])),
    "scatter_add2": Case(u(3, 4), np.array([0, 2, 2]), np.array([1, 3, 3]), u(3)),
    "scatter_add1": Case(u(5), np.array([0, 4, 0]), u(3)),
    "clip_scalar": Case(2.5, -1.0, 1.0),
    "reshape_any": Case(_X.T, (2, 6)),
    "concat_part": Case(u(3, 7), 1, (u(3, 4), u(3, 3)), 1),
    "stack_part": Case(u(3, 2, 4), 1, 1),
    "matmul": Case(_X, u(4, 2)),
    # NumPy and SciPy coverage
    "np_cumsum": Case(_X, 1, group="reductions"),
    "np_cumprod": Case(_X, 0, group="reductions"),
    "np_diff": Case(_X, 1, 1, group="reductions"),
    "np_var": Case(_X, 1, 1, False, group="reductions"),
    "np_std": Case(_X, 0, 0, True, group="reductions"),
    "cumsum_adjoint": Case(u(3, 4), _X, 1, group="reductions"),
    "cumprod_adjoint": Case(u(3, 4), _X, 0, group="reductions"),
    "cumprod_tangent": Case(u(3, 4), _X, 1, group="reductions"),
    "prod_second": Case(u(3, 4), _X, 1, group="reductions"),
    "diff_adjoint": Case(u(3, 3), 1, 1, group="reductions"),
    "var_adjoint": Case(u(3), _X, 1, 1, False, group="reductions"),
    "trace_adjoint": Case(0.7, _X, 1, group="reductions"),
    "np_diagonal": Case(_X, 1, group="shapes"),
    "diag_adjoint": Case(u(3), _X, 1, group="shapes"),
    "np_roll": Case(_X, 2, 1, group="shapes"),
    "roll_adjoint": Case(u(3, 4), 2, 1, group="shapes"),
    "np_flip": Case(_X, 0, group="shapes"),
    "np_rot90": Case(_X, 1, (0, 1), group="shapes"),
    "np_moveaxis": Case(u(2, 3, 4), 0, -1, group="shapes"),
    "np_swapaxes": Case(_X, 0, 1, group="shapes"),
    "np_triu": Case(_X, 1, group="shapes"),
    "np_tril": Case(_X, -1, group="shapes"),
    "np_repeat": Case(_X, 2, 1, group="shapes"),
    "repeat_adjoint": Case(u(3, 8), _X, 2, 1, group="shapes"),
    "np_tile": Case(_X, (2, 1), group="shapes"),
    "tile_adjoint": Case(u(6, 4), _X, (2, 1), group="shapes"),
    "np_squeeze": Case(u(3, 1, 4), 1, group="shapes"),
    "np_pad": Case(_X, ((1, 0), (2, 1)), "constant", 0.0, group="shapes"),
    "pad_adjoint": Case(u(4, 7), _X, ((1, 0), (2, 1)), group="shapes"),
    "append_part": Case(u(5, 4), _X, u(2, 4), 0, 1, group="stacks"),
    "np_vstack": Case((u(2, 3), u(3)), group="stacks"),
    "vstack_part": Case(u(3, 3), 1, (u(2, 3), u(3)), 0, group="stacks"),
    "hstack_part": Case(u(3, 5), 0, (u(3, 2), u(3, 3)), 1, group="stacks"),
    "sort_adjoint": Case(u(3, 4), _V, 1, group="stacks"),
    "np_meshgrid": Case(u(3), u(2), "xy", group="stacks"),
    "meshgrid_adjoint": Case((u(2, 3), u(2, 3)), 1, "xy", group="stacks"),
    "np_split": Case(u(6, 2), 3, 0, group="stacks"),
    "np_array_split": Case(u(7, 2), 3, 0, group="stacks"),
    "np_hsplit": Case(u(2, 6), 2, group="stacks"),
    "split_adjoint": Case((u(2, 2), u(4, 2)), u(6, 2), 0, group="stacks"),
    "np_sort": Case(_V, 0, group="stacks"),
    "sort_tangent": Case(u(3, 4), _V, 1, group="stacks"),
    "np_einsum": Case("ij,jk->ik", _X, u(4, 2), group="products"),
    "einsum_adjoint": Case(u(3, 2), "ij,jk->ik", 1, _X, u(4, 2), group="products"),
    "np_tensordot": Case(u(2, 3, 4), u(3, 4, 2), 2, group="products"),
    "tensordot_adjoint": Case(u(2, 2), u(2, 3, 4), u(3, 4, 2), 2, 0, group="products"),
    "np_inner": Case(_X, u(2, 4), group="products"),
    "inner_adjoint": Case(u(3, 2), _X, u(2, 4), 1, group="products"),
    "np_kron": Case(u(2, 2), u(2, 3), group="products"),
    "kron_adjoint": Case(u(4, 6), u(2, 2), u(2, 3), 0, group="products"),
    "np_norm": Case(_X, None, 1, False, group="linalg"),
    "norm_adjoint": Case(u(3), _X, np.linalg.norm(_X, axis=1), 1, False, group="linalg"),
    "slogdet_adjoint": Case((0.0, 0.8), spd(3), group="linalg"),
    "cholesky_adjoint": Case(u(3, 3), np.linalg.cholesky(spd(3)), group="linalg"),
    "eigh_adjoint": Case((u(3), u(3, 3)), _W, _Q, group="linalg"),
    "special_logsumexp": Case(_X, 1, False, group="special"),
    "logsumexp_adjoint": Case(u(3), _X, helper_reference.special_logsumexp(_X, 1), 1, False,
                              group="special"),
    "special_expit": Case(_X, group="special"),
    "special_logit": Case(u(5, lo=0.05, hi=0.95), group="special"),
    "special_erf": Case(_X, group="special"),
    "special_erfc": Case(_X, group="special"),
    "special_gammaln": Case(u(5, lo=0.2, hi=6.0), group="special"),
    "special_digamma": Case(u(5, lo=0.2, hi=6.0), group="special"),
    "special_polygamma2": Case(u(5, lo=0.2, hi=6.0), group="special"),
    "special_polygamma1": Case(u(5, lo=0.2, hi=6.0), group="special"),
    "special_betaln": Case(u(5, lo=0.2, hi=4.0), u(5, lo=0.2, hi=4.0), group="special"),
    "stats_norm_logpdf": Case(u(5), 0.3, 1.7, group="stats"),
    "stats_norm_pdf": Case(u(5), 0.3, 1.7, group="stats"),
    "stats_norm_cdf": Case(u(5), 0.3, 1.7, group="stats"),
    "stats_t_logpdf": Case(u(5), 4.5, 0.2, 1.3, group="stats"),
    "stats_t_logpdf_adjoint": Case(u(5), u(5), 4.5, 0.2, 1.3, 1, group="stats"),
    "stats_mvn_logpdf": Case(u(4, 3), u(3), spd(3), group="stats"),
    "stats_mvn_logpdf_adjoint": Case(u(4), u(4, 3), u(3), spd(3), 2, group="stats"),
}

HELPERS = helpers.names(service=False)


def copied(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(copied(v) for v in value)
    return value


def run(function, case):
    """(result projected by the case's view, the array arguments after the call)."""
    args = copied(case.args)
    result = function(*args)
    if case.view is not None:
        result = case.view(result)
    return result, [a for a in args if isinstance(a, np.ndarray)]


def assert_close(got, want, name, shape_only=False):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), (name, got, want)
        for g, w in zip(got, want):
            assert_close(g, w, name, shape_only)
        return
    if want is None:
        assert got is None, (name, got)
        return
    assert np.shape(got) == np.shape(want), (name, np.shape(got), np.shape(want))
    if shape_only:
        assert np.asarray(got).dtype == np.asarray(want).dtype, name
        return
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=1e-6, atol=1e-7, err_msg=name)


def test_every_helper_is_declared_once_with_a_reference_and_a_case():
    assert len(set(HELPERS)) == len(HELPERS)
    for name in HELPERS:
        assert callable(helpers.HELPERS[name].reference), name
    assert sorted(CASES) == sorted(HELPERS)
    # code generation imports exactly the declared names; runtime's list is the library ones
    assert codegen.RUNTIME_NAMES == list(helpers.names())
    assert runtime.LIBRARY_HELPERS == helpers.names(library=True)
    assert helpers.in_place_names() == {"scatter_add1", "scatter_add2", "update_array"}


@pytest.mark.parametrize("backend", helpers.backends())
def test_every_backend_has_every_helper_it_claims(backend):
    assert helpers.missing(backend) == []
    if backend == "python":
        assert set(helpers.claimed(backend)) >= set(HELPERS)
    if backend == "cpu":      # all but the helpers of the calls the cpu target refuses
        from srcgrad import rules
        refused = {rules.library_helper(f) for f in rules.CPU_REFUSED} - {None}
        assert refused == {"np_einsum", "np_tensordot", "np_inner"}
        assert set(HELPERS) - set(helpers.claimed(backend)) == \
            refused | {"einsum_adjoint", "tensordot_adjoint", "inner_adjoint"}


@pytest.mark.parametrize("name", HELPERS)
def test_python_helper_matches_reference(name):
    case = CASES[name]
    got = run(helpers.implementation("python", name), case)
    want = run(helpers.HELPERS[name].reference, case)
    assert_close(got, want, name, case.shape_only)


def _literal(value):
    if isinstance(value, (bool, int, str, type(None))) and not isinstance(value, np.generic):
        return True
    return isinstance(value, tuple) and all(_literal(v) for v in value) and \
        not any(isinstance(v, np.ndarray) for v in value)


def _compiled_group(names):
    """One compiled function calling every helper in ``names`` on its case's arguments: arrays,
    floats and containers of arrays as parameters, the rest as constants in the code."""
    import numba
    params, lines, values = [], [], []
    namespace = {name: helpers.implementation("cpu", name) for name in names}
    for i, name in enumerate(names):
        parts = []
        for value in CASES[name].args:
            if _literal(value):
                parts.append(repr(value))
            else:
                params.append(f"a{len(params)}")
                values.append(value)
                parts.append(params[-1])
        lines.append(f"    r{i} = {name}({', '.join(parts)})")
    results = ", ".join(f"r{i}" for i in range(len(names)))
    source = f"def group({', '.join(params)}):\n" + "\n".join(lines) + f"\n    return ({results},)\n"
    exec(source, namespace)
    return numba.njit(namespace["group"]), values


def _arrays_of(case_values):
    return [v for v in case_values if isinstance(v, np.ndarray)]


@pytest.mark.parametrize("group", sorted({case.group for case in CASES.values()}))
def test_cpu_helpers_match_reference(group):
    """Compiled: each group of helpers in one function (its array arguments are checked after the
    call too: in-place helpers)."""
    pytest.importorskip("numba")
    names = [n for n in helpers.claimed("cpu") if n in CASES and CASES[n].group == group]
    function, values = _compiled_group(names)
    args = copied(values)
    results = function(*args)
    after = iter(args)
    for name, result in zip(names, results):
        case = CASES[name]
        want_result, want_arrays = run(helpers.HELPERS[name].reference, case)
        got = case.view(result) if case.view is not None else result
        got_arrays = [next(after) for v in case.args if not _literal(v)]
        assert_close(got, want_result, name, case.shape_only)
        assert_close([a for a in got_arrays if isinstance(a, np.ndarray)], want_arrays, name)
