"""The package's import graph has no circles (issue #16), and the layers stay in order.

Every ``import`` of a srcgrad module inside ``srcgrad/`` counts, including those inside functions
(a lazy import still ties the two modules together), except imports of the top-level package
``srcgrad`` itself (its ``__init__`` only re-exports).  Read from the source with ``ast``: nothing
is imported, so the test is cheap and needs no GPU.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "srcgrad"

def module_names():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        names[".".join(parts)] = (path, is_package)
    return names


def import_graph():
    """module -> the srcgrad modules it imports."""
    names = module_names()
    graph = {}
    for name, (path, is_package) in names.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:      # `from . import codegen` imports a module
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in names else module)
        graph[name] = {t for t in targets if t in names and t not in (name, "srcgrad")}
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "srcgrad.arguments" in graph["srcgrad.api"]
    assert "srcgrad.program" in graph["srcgrad.cuda.map_mode"]
    assert "srcgrad.cuda.array_plan" in graph["srcgrad.cuda.array_mode"]      # a lazy import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import circles: {found}"


def test_the_api_layers_are_in_order():
    """arguments below the front doors; api, program and the CUDA package never import the
    debugging module, which sits on top."""
    graph = import_graph()
    assert graph["srcgrad.arguments"] <= {"srcgrad.kinds"}
    for name, imports in graph.items():
        if name != "srcgrad.__init__" and name != "srcgrad":
            assert "srcgrad.debugging" not in imports, name
    for name in ("srcgrad.cuda.map_mode", "srcgrad.cuda.array_mode", "srcgrad.program"):
        assert "srcgrad.api" not in graph[name], name


def test_api_and_cuda_modules_fit_in_800_lines():
    names = ["api.py", "arguments.py", "debugging.py", "program.py"]
    paths = [PACKAGE / n for n in names] + sorted((PACKAGE / "cuda").glob("*.py"))
    long = {p.name: n for p in paths if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800}
    assert not long, long


def test_no_module_in_the_package_is_over_800_lines():
    """Issue #16's limit, for every module (a stage that grows past it is split along its seams)."""
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800}
    assert not long, long
