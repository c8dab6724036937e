"""Stage 1 — read the user's function: its source, its AST and the names it refers to.

The result is a :class:`FunctionSource`: the ``ast.FunctionDef`` with line numbers pointing at the
original file, plus a resolver that turns a name (``np``, ``math.sin``, ``helper``) into the Python
object it denotes. Later stages never look at ``f.__globals__`` directly.
"""
import ast
import builtins
import inspect
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


def unwrap_function(func):
    """Accept plain functions and Numba dispatchers (their ``py_func``)."""
    py_func = getattr(func, "py_func", None)
    if py_func is not None:
        func = py_func
    if not inspect.isfunction(func):
        raise TypeError(f"srcgrad differentiates Python functions, got {type(func).__name__}: {func!r}")
    return func


def read_function(func) -> FunctionSource:
    """Parse ``func``'s source into an AST whose line numbers match the file."""
    func = unwrap_function(func)
    name = func.__name__
    if name == "<lambda>":
        raise SrcgradError(
            "srcgrad cannot differentiate a lambda: its source is not a separate statement. "
            "Write it as a `def` function in a file.")
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
