"""Stage 7 — code generation: turn function ASTs into a readable module on disk and import it.

The module is written as a real ``.py`` file in the cache directory (``~/.cache/srcgrad`` or
``$SRCGRAD_CACHE_DIR``), named by a hash of everything that determines its content, so that
tracebacks and debuggers point into readable code, Numba's ``cache=True`` works across processes,
and a second process imports the file instead of transforming again. Writes are atomic.
"""
import ast
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import astor

from . import __version__
from .fileio import write_atomic
from .transform import _Comment

COMMENT_MARK = "__srcgrad_comment__:"

# Names every generated module imports from its backend (the runtime helpers).
RUNTIME_NAMES = ["jit", "push_float", "push_int", "range_length", "_range_continues", "unbroadcast",
                 "new_float_tape", "new_int_tape", "reduce_sum", "reduce_mean", "reduce_max",
                 "reduce_min", "expand_reduced", "reduced_count", "max_adjoint", "min_adjoint",
                 "matmul_grad_left", "matmul_grad_right", "gather2", "scatter_add2", "scatter_add1", "external", "clip_scalar", "new_float32_tape", "reshape_any",
                 "push_slice", "tape_slice", "concat_part", "stack_part"]


def cache_dir():
    path = os.environ.get("SRCGRAD_CACHE_DIR") or os.path.join(Path.home(), ".cache", "srcgrad")
    os.makedirs(path, exist_ok=True)
    return path


_IMPLEMENTATION_HASH = None


def implementation_hash():
    """A hash of srcgrad's own source files: a changed transformer never reuses stale modules."""
    global _IMPLEMENTATION_HASH
    if _IMPLEMENTATION_HASH is None:
        digest = hashlib.sha256()
        package = Path(__file__).parent
        for path in sorted(package.rglob("*.py")):
            digest.update(path.read_bytes())
        _IMPLEMENTATION_HASH = digest.hexdigest()
    return _IMPLEMENTATION_HASH


def cache_key(*parts):
    digest = hashlib.sha256()
    digest.update(__version__.encode())
    digest.update(implementation_hash().encode())
    for part in parts:
        digest.update(b"\0" + str(part).encode())
    return digest.hexdigest()[:20]


def module_path(stem, key):
    return os.path.join(cache_dir(), f"srcgrad_{stem}_{key}.py")


def _comments_to_markers(stmts):
    out = []
    last = None
    for stmt in stmts:
        if isinstance(stmt, _Comment):
            text = f"{COMMENT_MARK}line {stmt.lineno_src}: {stmt.text}"
            if text != last:        # one comment per source line, not per operation
                out.append(ast.Expr(value=ast.Constant(text)))
            last = text
            continue
        for field in ("body", "orelse"):
            if hasattr(stmt, field) and isinstance(getattr(stmt, field), list):
                setattr(stmt, field, _comments_to_markers(getattr(stmt, field)))
        out.append(stmt)
    return out


def function_source(name, params, body, decorator="jit", docstring=None):
    body = _comments_to_markers(body)
    if docstring:
        body.insert(0, ast.Expr(value=ast.Constant(docstring)))
    fn = ast.FunctionDef(name=name, args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params],
                                                       vararg=None, kwonlyargs=[], kw_defaults=[],
                                                       kwarg=None, defaults=[]),
                         body=body, decorator_list=[ast.Name(id=decorator, ctx=ast.Load())] if decorator else [],
                         returns=None, type_params=[])
    module = ast.Module(body=[fn], type_ignores=[])
    ast.fix_missing_locations(module)
    text = astor.to_source(module)
    return _markers_to_comments(text)


def _markers_to_comments(text):
    pattern = re.compile(r"^(\s*)(\"\"\"|'|\")" + re.escape(COMMENT_MARK) + r"(.*)\2\s*$")
    lines = []
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            lines.append(f"{match.group(1)}# {_unescape(match.group(3))}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _unescape(text):
    try:
        return ast.literal_eval("'" + text.replace("'", "\\'") + "'")
    except (ValueError, SyntaxError):
        return text


def module_source(header, target, functions, externals=()):
    backend = {"python": "srcgrad.backends.python", "cpu": "srcgrad.backends.cpu",
               "cuda": "srcgrad.backends.cuda"}[target]
    lines = [f'"""{header}"""', "import math", "import numpy as np",
             ""]
    body = "\n".join(functions) + "\n".join(externals)
    used = [name for name in RUNTIME_NAMES if re.search(rf"\b{re.escape(name)}\b", body)]
    lines[-1:-1] = [f"from {backend} import {', '.join(used)}"]
    if externals:
        lines += ["# user functions with registered derivative rules"] + list(externals)
    lines += ["", ""]
    return "\n".join(lines) + "\n\n".join(functions)


def write_module(path, source):
    """Write ``source`` to ``path`` atomically (two processes may race; both write the same text)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as existing:
            if existing.read() == source:
                return
    write_atomic(path, lambda handle: handle.write(source), mode="w")


def import_module(path):
    name = Path(path).stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == path:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
