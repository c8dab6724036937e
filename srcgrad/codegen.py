"""Stage 7 — code generation: turn function ASTs into a readable module on disk and import it.

The module is written as a real ``.py`` file in the cache directory (``~/.cache/srcgrad`` or
``$SRCGRAD_CACHE_DIR``), named by a hash of everything that determines its content, so that
tracebacks and debuggers point into readable code, Numba's ``cache=True`` works across processes,
and a second process imports the file instead of transforming again. Writes are atomic.

Every module also carries a **line table** (``_srcgrad_lines`` at its end): generated line →
(user function, line in the user's file, forward or reverse sweep), plus the text of those user
lines (``_srcgrad_sources``). Error messages use it to name the user's line when generated code
fails (:class:`srcgrad.ShapeError`).
"""
import ast
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import astor
import numpy as np

from .fileio import write_atomic
from . import helpers
from ._version import __version__
from .naming import COMMENT_MARK, MODULE_LINES, MODULE_SOURCES  # codegen.COMMENT_MARK, as before
from .transform import _Comment

LINE_MARK = "__srcgrad_line__:"     # "line:sweep" before a statement; removed, kept in the line table

# Names a generated module may import from its backend: the declared runtime helpers (srcgrad.helpers)
RUNTIME_NAMES = list(helpers.names())


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


def _numba_version():
    if "numba" in sys.modules:      # imported already (the cpu target): no package metadata to read
        return sys.modules["numba"].__version__
    try:
        from importlib.metadata import version
        return version("numba")
    except Exception:           # noqa: BLE001  (not installed: only the python target runs)
        return "none"


def codegen_options():
    """Everything outside the user's code and the call's kinds that decides a generated module:
    srcgrad's version and own source, every registered derivative rule, the NumPy/Numba versions,
    and every backend's options (``Backend.options``: for the cpu target the BLAS choice, loop
    fusion and fast math)."""
    from . import rules
    from .backends import BACKENDS
    options = tuple(f"{name}:{option}" for name, b in sorted(BACKENDS.items()) for option in b.options())
    return (__version__, implementation_hash(), rules.registry_fingerprint(), np.__version__,
            _numba_version()) + options


def cache_key(*parts):
    """The hash naming a generated module: ``parts`` (target, kinds, precision, user and helper
    sources, ...) plus :func:`codegen_options`."""
    digest = hashlib.sha256()
    for part in codegen_options():
        digest.update(str(part).encode() + b"\0")
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
    return function_source_and_lines(name, params, body, decorator, docstring)[0]


def function_source_and_lines(name, params, body, decorator="jit", docstring=None, user_lines=None,
                              reverse=None):
    """The function's source text and its line table.

    ``user_lines`` is the ``(first, last)`` range of line numbers a statement of the user's function
    can have (statements srcgrad made up carry other numbers, or none); ``reverse`` the
    ``(start, stop)`` indices of the top-level statements that form the reverse sweep. The table
    maps a 0-based line index of the returned text to ``(user line, "forward" | "reverse")``.
    """
    if user_lines is not None:
        body = _line_markers(body, user_lines, reverse)
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


def _line_markers(stmts, user_lines, reverse=None, context=None, sweep="forward"):
    """Put a line marker before every statement: its own user line, else the block's latest
    ``# line N`` comment (reverse sweep), else 0 (no user line)."""
    first, last = user_lines
    out = []
    for index, stmt in enumerate(stmts):
        if reverse is not None:
            sweep = "reverse" if reverse[0] <= index < reverse[1] else "forward"
            if index in reverse:       # the sweep's comments say nothing about other statements
                context = None
        if isinstance(stmt, _Comment):
            if first <= stmt.lineno_src <= last:
                context = stmt.lineno_src
            out.append(stmt)
            continue
        lineno = getattr(stmt, "lineno", None)
        line = lineno if isinstance(lineno, int) and first <= lineno <= last else context
        out.append(ast.Expr(value=ast.Constant(f"{LINE_MARK}{line or 0}:{sweep}")))
        for field in ("body", "orelse"):
            if hasattr(stmt, field) and isinstance(getattr(stmt, field), list):
                setattr(stmt, field, _line_markers(getattr(stmt, field), user_lines, None, line, sweep))
        out.append(stmt)
    return out


def _markers_to_comments(text):
    pattern = re.compile(r"^(\s*)(\"\"\"|'|\")" + re.escape(COMMENT_MARK) + r"(.*)\2\s*$")
    line_pattern = re.compile(r"^\s*(\"\"\"|'|\")" + re.escape(LINE_MARK) + r"(\d+):(\w+)\1\s*$")
    lines = []
    table = {}
    current = None
    for line in text.splitlines():
        match = line_pattern.match(line)
        if match:
            current = (int(match.group(2)), match.group(3)) if int(match.group(2)) else None
            continue
        match = pattern.match(line)
        if match:
            lines.append(f"{match.group(1)}# {_unescape(match.group(3))}")
            continue
        if current is not None:
            table[len(lines)] = current
        lines.append(line)
    return "\n".join(lines) + "\n", table


def _unescape(text):
    try:
        return ast.literal_eval("'" + text.replace("'", "\\'") + "'")
    except (ValueError, SyntaxError):
        return text


def module_source(header, target, functions, externals=(), line_tables=None, user_sources=None):
    """The module text. ``line_tables[i]`` (or None) is ``(user function, table)`` of
    ``functions[i]`` (see :func:`function_source_and_lines`); ``user_sources`` maps a user function
    to ``(file name, {line: text})``. Both end up in the module's line table."""
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
    prefix = "\n".join(lines)
    text = prefix + "\n\n".join(functions)
    if line_tables is None:
        return text
    table = {}
    start = prefix.count("\n") + 1            # 1-based number of each function's first line
    for function, entry in zip(functions, line_tables):
        if entry is not None:
            owner, relative = entry
            for index, (user_line, sweep) in sorted(relative.items()):
                table[start + index] = (owner, user_line, sweep)
        start += function.count("\n") + 2
    return (text + "\n\n# Line table for error messages: generated line -> (user function, line in "
            "its file, sweep);\n# user function -> (file, {line: source text}).\n"
            f"{MODULE_LINES} = {table!r}\n{MODULE_SOURCES} = {dict(user_sources or {})!r}\n")


def line_table(module):
    """The line table of a generated module: ``(lines, sources)`` (empty when it has none)."""
    return getattr(module, MODULE_LINES, {}), getattr(module, MODULE_SOURCES, {})


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
