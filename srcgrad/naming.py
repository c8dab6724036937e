"""The names srcgrad gives to what it generates: one place for every convention.

Generated code must never clash with the user's names, and later stages recognise earlier stages'
variables by their names (the cpu lowering treats tape positions and loop trip counts specially;
the CUDA backend finds adjoints and the seed). So the spellings live here, and every stage asks
this module instead of writing ``"_adj_"`` or ``"_fpos"`` itself.

All generated names start with ``_``: the normalizer's temporaries are ``_<stem><n>`` (``_t3``,
``_trips2``, ``_i1``), and a temporary ``_t3`` is only made when the user has no ``t3``, so that
prefixing (``_adj_`` + ``t3`` vs ``_adj`` + ``_t3``) stays injective.
"""

# --- derivative variables ---------------------------------------------------------------------
ADJOINT_PREFIX = "_adj"          # x -> _adj_x (reverse mode)
TANGENT_PREFIX = "_dot"          # x -> _dot_x (forward mode)


def adjoint_name(name, generated=frozenset()):
    """The adjoint's variable name: ``x`` -> ``_adj_x``; srcgrad's temporary ``_t3`` -> ``_adj_t3``.

    Injective: a user name that starts with ``_`` gets ``_adj__`` (the name maker never creates a
    temporary ``_t3`` when the user has a ``t3``)."""
    return _derived(ADJOINT_PREFIX, name, generated)


def tangent_name(name, generated=frozenset()):
    """The tangent's variable name: ``x`` -> ``_dot_x``; srcgrad's temporary ``_t3`` -> ``_dot_t3``."""
    return _derived(TANGENT_PREFIX, name, generated)


def _derived(prefix, name, generated):
    if name in generated:
        return prefix + name
    return prefix + "_" + name


def is_adjoint(name):
    """Whether ``name`` is an adjoint variable (``_adj_x``, ``_adj_t3``)."""
    return name.startswith(ADJOINT_PREFIX + "_")


# --- temporaries ------------------------------------------------------------------------------

def temporary(stem, count):
    """The ``count``-th temporary made from ``stem``: ``_t3``, ``_trips1``."""
    return f"_{stem}{count}"


def unused(stem, taken):
    """``stem``, or ``stem2``, ``stem3``, ... : the first that is not in ``taken`` (a name a pass
    introduces into code that may already use the plain one)."""
    name, count = stem, 1
    while name in taken:
        count += 1
        name = f"{stem}{count}"
    return name


SWAP_INDEX = "_kswap"            # the index of adjoint_swaps' loops over the slots a copy skipped
TRIPS_STEM = "trips"             # _trips1: how often a while loop ran (the reverse sweep replays it)
TRIPS_PREFIX = "_" + TRIPS_STEM

# --- the tapes (values the reverse sweep pops back) -------------------------------------------
FLOAT_TAPE_NAME = "_ftape"
FLOAT_POSITION = "_fpos"
INT_TAPE_NAME = "_itape"
INT_POSITION = "_ipos"
FLOAT_TAPE = (FLOAT_TAPE_NAME, FLOAT_POSITION, "push_float")     # (tape, position, push helper)
INT_TAPE = (INT_TAPE_NAME, INT_POSITION, "push_int")
TAPE_COUNTERS = (FLOAT_POSITION, INT_POSITION, TRIPS_PREFIX)    # counters the reverse sweep reads back
# the stacks a function's split helper calls record on and pop from (split_calls.py); the
# positions start like _fpos/_ipos, so they count as tape counters (integers)
HELPER_FLOAT_STACK = ("_ftape_h", "_fpos_h")
HELPER_INT_STACK = ("_itape_h", "_ipos_h")
SNAPSHOT_BYTES = "_snapshot_bytes"   # bytes of array snapshots taken so far (tape size limit)

# --- the adjoint function's interface ---------------------------------------------------------
SEED = "_seed"                   # the last parameter: the result's adjoint (1.0 for a gradient)
VALUE = "_value"                 # the primal result, returned with the gradients
GRADS = "_grads"                 # the tuple of gradients (in the grad/value_and_grad wrappers)
RANGE_CONTINUES = "_range_continues"     # runtime helper of normalized `for ... in range` loops


def seed_scaled(grad, array, float32=False):
    """A returned gradient under the seed at the end (transform.SEED_AT_END), as source text:
    ``grad`` itself when the seed is 1.0, else ``grad`` times the seed, in ``grad``'s own dtype for
    an array (a float32 gradient of a float64-precision function stays float32: Numba unifies the
    two branches), in float32 for a scalar of a float32 function. program.py binds it to a new
    name, not to ``grad`` again: the cpu fuser accumulates in place only into arrays bound once;
    the fused SGD step (training/fused_sgd.py) reads it back."""
    if array:
        return f"{grad} if {SEED} == 1.0 else {grad} * {grad}.dtype.type({SEED})"
    seed = f"np.float32({SEED})" if float32 else SEED
    return f"{grad} if {SEED} == 1.0 else {grad} * {seed}"

# --- comments in generated code ---------------------------------------------------------------
# a comment is a string statement starting with this mark until code generation writes it as a
# ``# ...`` line (codegen; the cpu fuser makes its own comment lines with it)
COMMENT_MARK = "__srcgrad_comment__:"

# --- module attributes of generated modules ---------------------------------------------------
MODULE_ENTRY = "_srcgrad_adjoint"            # what Python calls: (value, gradients) = entry(*args, seed)
MODULE_LINES = "_srcgrad_lines"              # generated line -> (user line, sweep)
MODULE_SOURCES = "_srcgrad_sources"          # file -> user source lines quoted in errors
TANGENT_MODULE_FLAG = "_srcgrad_tangent_module"   # set in generated tangent code (hvp differentiates it)
MODULE_GRADIENT_ONLY = "_srcgrad_gradient_only"    # the adjoint without the value (hvp, forward_api)
MODULE_HESSIAN_COLUMNS = "_srcgrad_hessian_columns"    # hessian(f): every hvp sweep in one call
MODULE_JACOBIAN_COLUMNS = "_srcgrad_jacobian_columns"  # jacobian(f) in forward mode: every jvp sweep

# --- CUDA map mode ----------------------------------------------------------------------------
DEVICE_STATUS = "_status"        # the last parameter of every device function: the thread's error bits
