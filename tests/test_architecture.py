"""The package's structure (issue #16): one table of callee facts, one naming module, the rules
package's public names, no import circle between analyse and rules, modules under 800 lines."""
import ast
import math
from pathlib import Path

import numpy as np
import pytest

import srcgrad
from srcgrad import naming, rules
from srcgrad.rules import callees

PACKAGE = Path(srcgrad.__file__).parent


def test_callee_facts_one_lookup():
    assert callees.facts(np.zeros).creation and callees.facts(np.zeros).result_kind is not None
    assert callees.facts(np.argmax).non_differentiable and callees.facts(np.argmax).value_cutting
    assert callees.facts(len).non_differentiable and not callees.facts(len).value_cutting
    assert callees.facts(np.vstack).sequence_part == "vstack_part"
    assert callees.facts(np.vstack).library_helper == "np_vstack"
    assert callees.facts(np.cumsum).library_helper == "np_cumsum"       # declared beside its template
    assert "python target only" in callees.facts(np.einsum).cpu_refusal
    nothing = callees.facts(np.sin)          # a rule, no other facts
    assert not (nothing.creation or nothing.non_differentiable or nothing.sequence_part)
    assert callees.facts([1, 2]).library_helper is None                 # unhashable: nothing known
    assert callees.facts("astype").result_kind is None


def test_old_tables_are_views_of_the_one_table():
    assert np.eye in rules.CREATION and np.sin not in rules.CREATION
    assert math.isnan in rules.NON_DIFFERENTIABLE
    assert rules.TUPLE_ARGUMENT_RULES.get(np.concatenate) == "concat_part"
    assert rules.TUPLE_ARGUMENT_RULES.get(np.sin) is None
    assert rules.LIBRARY_CALLS.get(np.einsum) == "np_einsum"
    assert set(rules.CPU_REFUSED) == {np.einsum, np.tensordot, np.inner}
    assert rules.library_helper(np.diff) == "np_diff" and rules.cpu_refusal(np.sum) is None
    from srcgrad.check import SEQUENCE_CALLS
    assert SEQUENCE_CALLS == {"concatenate", "stack", "vstack", "hstack"}


def test_declare_checks_the_fact_name():
    with pytest.raises(TypeError, match="unknown callee fact"):
        callees.declare(np.sin, creates=True)


def test_scipy_facts_registered_on_first_use():
    import scipy.special
    assert callees.facts(scipy.special.expit).library_helper == "special_expit"
    assert rules.lookup(scipy.special.expit) is not None


def test_naming():
    assert naming.adjoint_name("x") == "_adj_x"
    assert naming.adjoint_name("_t3", {"_t3"}) == "_adj_t3"
    assert naming.adjoint_name("_t3") == "_adj__t3"      # a user name: injective
    assert naming.tangent_name("x") == "_dot_x"
    assert naming.temporary("trips", 2) == "_trips2" and naming.is_adjoint("_adj_x")
    assert naming.FLOAT_TAPE == ("_ftape", "_fpos", "push_float")


def test_rules_do_not_import_analyse():
    for path in (PACKAGE / "rules").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):     # (kind algebra is in kinds.py)
                assert (node.level, node.module) != (2, "analyse") and node.module != "srcgrad.analyse", path


def test_rules_package_keeps_its_public_names():
    for name in ("register_adjoint", "register_zero_derivative", "register_tangent", "d", "REGISTRY",
                 "EXTERNALS", "lookup", "library_helper", "cpu_refusal", "random_sampling_message",
                 "registry_fingerprint", "external", "external_name", "Rule", "ZeroDerivative",
                 "CREATION", "NON_DIFFERENTIABLE", "TUPLE_ARGUMENT_RULES", "LIBRARY_CALLS", "_REGISTRY_VERSION",
                 "_is_scipy"):
        assert hasattr(rules, name), name
    assert srcgrad.register_adjoint is rules.register_adjoint


def test_rules_and_core_modules_under_800_lines():
    for path in list((PACKAGE / "rules").glob("*.py")) + [PACKAGE / "naming.py", PACKAGE / "kinds.py",
                                                          PACKAGE / "analyse.py", PACKAGE / "program.py"]:
        assert len(path.read_text().splitlines()) <= 800, path


def test_registry_fingerprint_has_no_addresses():
    """Method keys (scipy.stats.norm.logpdf is registered by class and function) are labelled by
    name: the fingerprint (part of every cache key) is the same in every process."""
    import scipy.stats
    rules.lookup(scipy.stats.norm.logpdf)
    labels = [rules._label(key) for key in rules.REGISTRY]
    assert not [label for label in labels if " at 0x" in label]
    assert any(label.startswith("scipy.stats._continuous_distns.norm_gen.") and label.endswith(".logpdf")
               for label in labels)


def _module_level_imports():
    """srcgrad module -> the srcgrad modules it imports when it is imported (top-level statements)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("srcgrad",) + path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                for alias in node.names:
                    targets.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.ImportFrom) and node.module.startswith("srcgrad"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("srcgrad")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle_at_module_level():
    graph = _module_level_imports()
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in graph[name]:
            assert state.get(target) != "open", " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
