"""Debugging a wrong gradient: the function as each pipeline stage sees it.

``srcgrad.inspect_stage(f, "normalize")`` prints what a stage produced.  This module sits on top
of the API (it builds a :class:`~srcgrad.api.GradFunction` to find the argument kinds), so that
nothing below the API imports back into it.
"""
import ast
import copy

from . import codegen
from .analyse import analyse
from .api import GradFunction
from .arguments import precision_of
from .program import FunctionUnit, ModuleBuilder, build_module

STAGES = ("parse", "normalize", "analyse", "codegen")


def inspect_stage(func, stage, *args, wrt=0):
    """The function as a given pipeline stage sees it, as text: for debugging a wrong gradient.

    ``parse`` the source srcgrad read; ``normalize`` one operation per line (jumps and augmented
    assignments desugared); ``analyse`` each variable's kind, activity and whether the reverse
    sweep may need its old value (needs ``*args`` for the kinds); ``codegen`` the generated module.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    gradfn = GradFunction(func, wrt=wrt, target="python")
    if args:        # pytrees, module data, lambdas: the function static.py rewrote for them
        spec = gradfn.specialize(*args)
        if getattr(spec, "plan", None) is not None:
            func = spec.plan.root
    unit = FunctionUnit(func, lower_products=False)    # as the python target normalizes it
    if stage == "parse":
        return ast.unparse(unit.fsrc.tree) + "\n"
    if stage == "normalize":
        return codegen.function_source(unit.func.__name__, unit.params, copy.deepcopy(unit.body),
                                       decorator=None)
    if args:
        if stage == "codegen":
            return spec.source
        if getattr(spec, "plan", None) is not None:
            kinds, wrt_names = spec.key[0], list(spec.key[3])
        else:
            kinds, wrt_names = spec.key[0], gradfn.wrt_names
    else:
        kinds, wrt_names = gradfn._guess_kinds(), gradfn.wrt_names
        if stage == "codegen":
            return build_module(func, kinds, gradfn.wrt_names, "python", gradfn.single,
                                precision_of(args))[0]
    builder = ModuleBuilder("python")
    analysis = analyse(unit.fsrc, unit.params, unit.body, kinds, wrt_names,
                       builder.helper_kind(unit))
    lines = [f"{'name':<16} {'kind':<10} {'active':<7} {'overwritten'}"]
    for name in sorted(analysis.kinds, key=_user_names_first):
        lines.append(f"{name:<16} {str(analysis.kinds[name]):<10} {str(name in analysis.active):<7} "
                     f"{analysis.overwritten(name)}")
    return "\n".join(lines) + "\n"


def _user_names_first(name):
    return (name.startswith("_"), name)
