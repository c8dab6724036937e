"""The ``python`` target: the generated code runs as plain Python (for reading and debugging)."""
from ..runtime import (push_float, push_int, range_length, _range_continues, unbroadcast,  # noqa: F401
                       new_float_tape, new_int_tape)


def jit(function):
    return function
from ..runtime import (reduce_sum, reduce_mean, reduce_max, reduce_min, expand_reduced,  # noqa: F401,E402
                       reduced_count, max_adjoint, min_adjoint, matmul_grad_left, matmul_grad_right,
                       gather2, scatter_add2, scatter_add1)
from ..runtime import clip_scalar  # noqa: F401,E402
from ..rules import external as _lookup  # noqa: E402


def external(qualified_name):
    function = _lookup(qualified_name)
    return getattr(function, "py_func", function)
from ..runtime import new_float32_tape  # noqa: F401,E402
from ..runtime import reshape_any  # noqa: F401,E402
from ..runtime import push_slice, tape_slice  # noqa: F401,E402
from ..runtime import concat_part, stack_part  # noqa: F401,E402
