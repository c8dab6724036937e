"""The runtime-helper registry: every helper generated code may call, declared once.

A runtime helper is a function generated code calls by name (``unbroadcast(g, b)``,
``reduce_max(z, 1, True)``, ``np_cumsum(x, 0)``): NumPy work Numba cannot compile as written,
adjoints of rules, tapes. Each is declared here with the facts the stages read:

* ``fresh`` — the result is a new array, never one of the arguments (loop fusion may keep it);
* ``in_place`` — writes into its first argument and returns nothing (``scatter_add1``);
* ``int_args`` — positions of arguments that are integers (axes, counts, bounds) or flags:
  float32 precision casting (:func:`srcgrad.lower.cast_float_literals`) leaves them alone;
* ``library`` — NumPy/SciPy coverage (called for a NumPy/SciPy function, ``rules.LIBRARY_CALLS``);
* ``service`` — a backend entry point (``jit``, ``external``) rather than a helper: it has no
  NumPy reference;
* ``backends`` — the backends that have it (None: all; the cpu target refuses the np.einsum,
  np.tensordot and np.inner calls that normalize does not lower to `@`, ``rules.CPU_REFUSED``, so
  their helpers are python-only).

Its NumPy reference is the function of the same name in :mod:`srcgrad.helper_reference`.

Each backend registers the module holding its implementations (:func:`register_backend`; the
python backend takes :mod:`srcgrad.runtime`'s, the cpu backend compiles them with Numba in
``backends/cpu/``). A backend may claim a subset (``claims``): CUDA map mode registers the helpers
it runs on one thread's scalars (:mod:`srcgrad.cuda.map_runtime`). ``tests/test_helper_registry.py``
runs every helper on python and cpu against its reference, ``tests/cuda/test_helper_conformance.py``
each cuda claim in the simulator, and both check that every backend has every helper it claims.

Adding a helper: declare it below, write its python version in :mod:`srcgrad.runtime` (or
``runtime_library``), its reference in :mod:`srcgrad.helper_reference`, a compiled version in
``backends/cpu/`` when Numba cannot compile the python one as it is, a device function in
``cuda/map_runtime.py`` (and its name in ``CLAIMS``) when map mode can run it on scalars, and a
sample call in the conformance test(s).
"""
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Helper:
    name: str
    fresh: bool = False
    in_place: bool = False
    int_args: tuple = ()
    library: bool = False
    service: bool = False
    backends: tuple = None

    @property
    def reference(self):
        """The NumPy reference implementation (None for a service)."""
        if self.service:
            return None
        from . import helper_reference
        return getattr(helper_reference, self.name)


HELPERS = {}        # name -> Helper, in declaration order (the order generated imports list them)


def declare(name, **facts):
    if name in HELPERS:
        raise ValueError(f"runtime helper {name!r} declared twice")
    HELPERS[name] = Helper(name, **facts)


def names(library=None, service=None):
    """Declared names in declaration order, optionally only (not) library ones / services."""
    return tuple(h.name for h in HELPERS.values()
                 if (library is None or h.library == library) and (service is None or h.service == service))


def fresh_names():
    return {h.name for h in HELPERS.values() if h.fresh}


def in_place_names():
    return {h.name for h in HELPERS.values() if h.in_place}


def int_args(name):
    """The integer-argument positions of helper ``name`` (None: not a helper)."""
    helper = HELPERS.get(name)
    return None if helper is None else helper.int_args


# -- backends ----------------------------------------------------------------------------------
# backend name -> (module name holding its implementations, the helper names it claims or None
# for all). Generated modules of that target import their helpers from that module.
_BACKENDS = {"python": ("srcgrad.backends.python", None), "cpu": ("srcgrad.backends.cpu", None)}


def register_backend(name, module, claims=None):
    """Register backend ``name`` whose implementations are attributes of module ``module`` (a
    dotted name, imported on first use); ``claims``: the helper names it implements (None: all)."""
    _BACKENDS[name] = (module, None if claims is None else tuple(claims))


def backends():
    return tuple(_BACKENDS)


def claimed(backend):
    """The helper names ``backend`` claims to implement (those declared for it, or the subset it
    registered with)."""
    _, claims = _BACKENDS[backend]
    return tuple(h.name for h in HELPERS.values()
                 if (h.backends is None or backend in h.backends) and (claims is None or h.name in claims))


def implementation(backend, name):
    """Backend ``backend``'s implementation of helper ``name`` (None when it has none)."""
    module, _ = _BACKENDS[backend]
    return getattr(importlib.import_module(module), name, None)


def missing(backend):
    """Helpers ``backend`` claims but does not implement (should be empty)."""
    return [n for n in claimed(backend) if implementation(backend, n) is None]


# -- the declarations --------------------------------------------------------------------------
_REDUCE = dict(fresh=True, int_args=(1, 2))          # reduce_*(x, axis, keepdims)
_REDUCE_ADJOINT = dict(fresh=True, int_args=(2, 3))  # *_adjoint(gradient, x, axis, keepdims)

declare("jit", service=True)
declare("push_float", fresh=True)
declare("push_int", fresh=True)
declare("range_length", fresh=True, int_args=(0, 1, 2))
declare("_range_continues", int_args=(0, 1, 2))
declare("unbroadcast")
declare("new_float_tape")
declare("new_int_tape")
declare("reduce_sum", **_REDUCE)
declare("reduce_mean", **_REDUCE)
declare("reduce_max", **_REDUCE)
declare("reduce_min", **_REDUCE)
declare("reduce_prod", **_REDUCE)
declare("expand_reduced", **_REDUCE_ADJOINT)
declare("reduced_count", fresh=True, int_args=(1,))
declare("max_adjoint", **_REDUCE_ADJOINT)
declare("min_adjoint", **_REDUCE_ADJOINT)
declare("prod_adjoint", **_REDUCE_ADJOINT)
declare("matmul_grad_left", fresh=True)
declare("matmul_grad_right", fresh=True)
declare("gather2", fresh=True)
declare("scatter_add2", in_place=True)
declare("scatter_add1", in_place=True)
declare("external", service=True)
# raised by a cpu fused loop whose size guard fails (the call reruns with the fallback specialization)
declare("FusionGuardFailed", service=True, backends=("cpu",))
# the loops of cpu fused loop nests: range(n) with less code (backends/cpu/counting_loops.py)
declare("loop_range", service=True, backends=("cpu",))
declare("clip_scalar", fresh=True)
declare("new_float32_tape")
declare("reshape_any")
declare("push_slice")
declare("tape_slice")
declare("concat_part")
declare("stack_part")
declare("matmul", fresh=True)
declare("huge_pages")
declare("array_op", fresh=True)
# ``target += value`` / ``-=`` of whole arrays (the cpu lowering writes the adjoints' updates so)
declare("update_array", in_place=True)
declare("count_snapshot")
declare("pop_snapshot")
declare("snapshot_buffer", int_args=(1,))      # (array, count)
declare("reserve_tape", int_args=(1, 2))      # (tape, top, count): positions and counts
declare("push_snapshot")
declare("snapshot_at")
declare("first_snapshot_row")

# the helpers of the calls the cpu target refuses (rules.CPU_REFUSED)
_PYTHON_ONLY = {"np_einsum", "einsum_adjoint", "np_tensordot", "tensordot_adjoint", "np_inner", "inner_adjoint"}

# NumPy and SciPy coverage: primal calls generated code makes through a helper and the adjoints
# of the rules in rules.py's coverage sections (runtime.LIBRARY_HELPERS is this list)
for _name in (
        # reductions
        "np_cumsum", "np_cumprod", "np_diff", "np_var", "np_std", "cumsum_adjoint", "cumprod_adjoint",
        "diff_adjoint", "var_adjoint", "trace_adjoint",
        # shape work
        "np_diagonal", "diag_adjoint", "np_roll", "roll_adjoint", "np_flip", "np_rot90", "np_repeat",
        "np_moveaxis", "np_swapaxes", "np_triu", "np_tril",
        "repeat_adjoint", "np_tile", "tile_adjoint", "np_squeeze", "np_pad", "pad_adjoint",
        "append_part", "np_vstack", "vstack_part", "hstack_part", "sort_adjoint", "cumprod_tangent", "prod_second", "np_meshgrid",
        "meshgrid_adjoint", "np_split", "np_array_split", "np_hsplit", "split_adjoint", "np_sort",
        "sort_tangent",
        # products
        "np_einsum", "einsum_adjoint", "np_tensordot", "tensordot_adjoint", "np_inner", "inner_adjoint",
        "np_kron", "kron_adjoint",
        # linear algebra
        "np_norm", "norm_adjoint", "slogdet_adjoint", "cholesky_adjoint", "eigh_adjoint",
        # scipy.special and scipy.stats
        "special_logsumexp", "logsumexp_adjoint", "special_expit", "special_logit", "special_erf",
        "special_erfc", "special_gammaln", "special_digamma", "special_polygamma1",
        "special_polygamma2", "special_betaln",
        "stats_norm_logpdf", "stats_norm_pdf", "stats_norm_cdf", "stats_t_logpdf", "stats_t_logpdf_adjoint",
        "stats_mvn_logpdf", "stats_mvn_logpdf_adjoint"):
    declare(_name, library=True, backends=("python",) if _name in _PYTHON_ONLY else None)
del _name
