"""Calling srcgrad gradients from inside the user's own ``@numba.njit`` code.

``GradFunction.njit`` is a plain function with a Numba overload: when Numba types a call to it,
the overload turns the argument types into srcgrad kinds, specializes (transforms and compiles the
generated module if needed) and inlines a call to the compiled gradient. Outside Numba it simply
calls the GradFunction.
"""
from numba.extending import overload

from ..arguments import numba_precision
from ..kinds import kind_of_numba_type


def make_entry(gradfn):
    def entry(*args):
        return gradfn(*args)

    entry.__name__ = f"{gradfn.func.__name__}_{gradfn.mode}_njit"

    @overload(entry, prefer_literal=False)
    def _typed_entry(*args):
        types = args[0].types if len(args) == 1 and hasattr(args[0], "types") and \
            type(args[0]).__name__ == "StarArgTuple" else args
        kinds = tuple(kind_of_numba_type(t) for t in types)
        spec = gradfn._specialization(gradfn._check_kinds(kinds), numba_precision(types))
        plan = getattr(spec, "plan", None)
        if plan is not None and plan.captures:
            from ..errors import SrcgradError
            names = ", ".join(sorted({c.name for c in plan.captures}))
            raise SrcgradError(f"{gradfn.func.__name__} reads module data or closure variables "
                               f"({names}); compiled code calling .njit cannot read them at each "
                               "call: pass them as arguments")
        target = spec.grad if gradfn.mode == "grad" else spec.value_and_grad

        def impl(*args):
            return target(*args)
        return impl

    return entry

