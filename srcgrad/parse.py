"""Stage 1 — read the user's function: its source, its AST and the names it refers to.

The result is a :class:`FunctionSource`: the ``ast.FunctionDef`` with line numbers pointing at the
original file, plus a resolver that turns a name (``np``, ``math.sin``, ``helper``) into the Python
object it denotes. Later stages never look at ``f.__globals__`` directly.
"""
import ast
import builtins
import copy
import inspect
import linecache
import textwrap
from dataclasses import dataclass, field

from .errors import SrcgradError, UnsupportedSyntaxError


@dataclass
class FunctionSource:
    func: object                 # the Python function object
    name: str
    filename: str
    firstline: int
    tree: ast.FunctionDef
    source: str                  # dedented source text of the function
    source_lines: list = field(default_factory=list)   # original file lines (for comments)
    namespace: dict = field(default_factory=dict)      # globals + closure cells

    def line_text(self, lineno):
        """The original source line ``lineno`` (file numbering), stripped."""
        index = lineno - self.firstline
        lines = self.source.splitlines()
        if 0 <= index < len(lines):
            return lines[index].strip()
        return ""

    def error(self, node, message, construct=None):
        return UnsupportedSyntaxError(message, self.filename, getattr(node, "lineno", None), construct)

    def resolve(self, node):
        """Evaluate a Name/Attribute chain to the object it denotes, or raise KeyError."""
        if isinstance(node, ast.Name):
            if node.id in self.namespace:
                return self.namespace[node.id]
            if hasattr(builtins, node.id):
                return getattr(builtins, node.id)
            raise KeyError(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            try:
                return getattr(base, node.attr)
            except AttributeError:
                raise KeyError(ast.unparse(node)) from None
        raise KeyError(ast.dump(node))


class SourceFunction:
    """A function srcgrad made from source it built itself: a user function rewritten for one
    specialization (static.py), a lifted lambda or nested ``def``, or a one-line wrapper around a
    NumPy function passed directly (``grad(np.tanh)``). The pipeline treats it like a user
    function whose source is ``fsrc``."""

    def __init__(self, fsrc, signature=None):
        self.fsrc = fsrc
        self.__name__ = fsrc.name
        self.__qualname__ = fsrc.name
        self.__module__ = "srcgrad.generated"
        if signature is not None:
            self.__signature__ = signature

    def __deepcopy__(self, memo):      # a function: copied ASTs refer to the same one
        return self

    def __call__(self, *args):
        raise TypeError(f"{self.__name__} is srcgrad's rewritten source; call the original function")

    def __repr__(self):
        return f"<srcgrad source function {self.__name__} from {self.fsrc.filename}>"


def unwrap_function(func):
    """Accept plain functions and Numba dispatchers (their ``py_func``)."""
    if isinstance(func, SourceFunction):
        return func
    py_func = getattr(func, "py_func", None)
    if py_func is not None:
        func = py_func
    if not inspect.isfunction(func):
        raise TypeError(f"srcgrad differentiates Python functions, got {type(func).__name__}: {func!r}")
    return func


def read_function(func) -> FunctionSource:
    """Parse ``func``'s source into an AST whose line numbers match the file."""
    func = unwrap_function(func)
    if isinstance(func, SourceFunction):
        fsrc = func.fsrc
        return FunctionSource(func=func, name=fsrc.name, filename=fsrc.filename,
                              firstline=fsrc.firstline, tree=copy.deepcopy(fsrc.tree),
                              source=fsrc.source, source_lines=fsrc.source_lines,
                              namespace=fsrc.namespace)
    name = func.__name__
    if name == "<lambda>":
        return _read_lambda(func)
    try:
        lines, firstline = inspect.getsourcelines(func)
        filename = inspect.getsourcefile(func) or func.__code__.co_filename
    except (OSError, TypeError) as exc:
        raise SrcgradError(
            f"the source of function {name!r} is not available ({exc}); srcgrad transforms source "
            "code, so the function must be defined in a file (not typed at the interactive prompt "
            "or created with exec)") from None
    source = textwrap.dedent("".join(lines))
    module = ast.parse(source)
    ast.increment_lineno(module, firstline - 1)
    tree = module.body[0]
    if not isinstance(tree, ast.FunctionDef):
        raise SrcgradError(f"expected a function definition for {name!r}")
    namespace = dict(func.__globals__)
    if func.__closure__:
        for var, cell in zip(func.__code__.co_freevars, func.__closure__):
            try:
                namespace[var] = cell.cell_contents
            except ValueError:        # empty cell
                pass
    return FunctionSource(func=func, name=name, filename=filename, firstline=firstline, tree=tree,
                          source=source, source_lines=lines, namespace=namespace)


def _namespace(func):
    namespace = dict(func.__globals__)
    if func.__closure__:
        for var, cell in zip(func.__code__.co_freevars, func.__closure__):
            try:
                namespace[var] = cell.cell_contents
            except ValueError:        # empty cell
                pass
    return namespace


def _read_lambda(func):
    """A lambda's source: the ``lambda`` node on its line of the file, as a one-line function.

    Several lambdas on one line are told apart by their parameters and by the columns of the
    code's instructions (Python 3.11+ records them)."""
    code = func.__code__
    filename = inspect.getsourcefile(func) or code.co_filename
    lines = linecache.getlines(filename, func.__globals__)
    if not lines:
        raise SrcgradError(f"the source of the lambda at {code.co_filename}:{code.co_firstlineno} is "
                           "not available; srcgrad transforms source code, so define it in a file")
    try:
        module = ast.parse("".join(lines))
    except SyntaxError as exc:
        raise SrcgradError(f"cannot parse {filename} to find the lambda at line "
                           f"{code.co_firstlineno}: {exc}") from None
    params = list(code.co_varnames[:code.co_argcount])
    candidates = [node for node in ast.walk(module) if isinstance(node, ast.Lambda)
                  and node.lineno == code.co_firstlineno
                  and [a.arg for a in node.args.args] == params]
    if len(candidates) > 1:
        spots = {(line, col) for line, _, col, _ in code.co_positions()
                 if line is not None and col is not None}
        candidates = [node for node in candidates if any(
            (node.body.lineno, node.body.col_offset) <= spot <=
            (node.body.end_lineno, node.body.end_col_offset) for spot in spots)]
    if len(candidates) != 1:
        raise SrcgradError(f"{filename}:{code.co_firstlineno}: cannot tell which lambda on this line "
                           f"is being differentiated ({len(candidates)} candidates); write it as a "
                           "`def` function")
    node = candidates[0]
    name = f"lambda_{node.lineno}"
    tree = ast.FunctionDef(name=name, args=node.args,
                           body=[ast.copy_location(ast.Return(value=node.body), node.body)],
                           decorator_list=[], returns=None, type_comment=None)
    ast.copy_location(tree, node)
    ast.fix_missing_locations(tree)
    first = node.lineno
    source_lines = lines[first - 1:node.end_lineno]
    return FunctionSource(func=func, name=name, filename=filename, firstline=first, tree=tree,
                          source="".join(source_lines), source_lines=source_lines,
                          namespace=_namespace(func))


def library_wrapper(func):
    """``grad(np.tanh)``: a one-line function calling the NumPy/SciPy function ``func``."""
    import numpy as np
    name = getattr(func, "__name__", None)
    if not name or not name.isidentifier():
        raise TypeError(f"srcgrad cannot differentiate {func!r}: not a Python function")
    module = _public_module(func, name)
    if module is None or module.split(".")[0] not in ("numpy", "scipy", "math"):
        raise TypeError(f"srcgrad cannot differentiate {func!r}: pass a Python function "
                        "(write `lambda x: ...` or a def around it)")
    if isinstance(func, np.ufunc):
        params = ["x", "y", "z"][:func.nin] if func.nin <= 3 else [f"x{k}" for k in range(func.nin)]
    else:
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            raise TypeError(f"srcgrad cannot differentiate {func!r}: its signature is unknown; "
                            "wrap it in a def") from None
        params = [p.name for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    root = module.split(".")[0]
    call = f"{module}.{name}" if module != "numpy" else f"np.{name}"
    text = f"def {name}({', '.join(params)}):\n    return {call}({', '.join(params)})\n"
    tree = ast.parse(text).body[0]
    filename = f"<srcgrad wrapper of {module}.{name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace = {"np": np, root: __import__(root)}
    __import__(module)
    fsrc = FunctionSource(func=None, name=name, filename=filename, firstline=1, tree=tree,
                          source=text, source_lines=text.splitlines(True), namespace=namespace)
    signature = inspect.Signature([inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                   for p in params])
    wrapper = SourceFunction(fsrc, signature)
    fsrc.func = wrapper
    return wrapper


def _public_module(func, name):
    """The shortest module path under which ``func`` is importable by ``name``."""
    import importlib
    import numpy as np
    if getattr(np, name, None) is func:
        return "numpy"
    module = getattr(func, "__module__", None) or ""
    parts = module.split(".")
    for k in range(1, len(parts) + 1):
        path = ".".join(parts[:k])
        try:
            mod = importlib.import_module(path)
        except ImportError:
            continue
        if getattr(mod, name, None) is func:
            return path
    return None
