"""Warm start (issue 17): a new process with the caches present loads everything from them.

srcgrad's own derivative templates are parsed on first use, not when ``srcgrad`` is imported, and
their fingerprint in the cache key is their name (their source is in the key already, through
``codegen.implementation_hash``). A process whose gradients all come from the cache reads no
template and compiles nothing.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import user_numba_env

import srcgrad
from srcgrad import codegen, rules
from srcgrad.rules import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = '''
import numpy as np

def loss(x, w):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.sin(x[i] * w[i]) + np.exp(-x[i] * x[i])
    return s + np.sum(np.tanh(w))
'''

CHILD = '''
import json, os
from numba.core import event
compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        dispatcher = ev.data.get("dispatcher") if ev.data else None
        compiled.append(getattr(getattr(dispatcher, "py_func", None), "__qualname__", "?"))

    def on_end(self, ev):
        pass

event.register("numba:compile", Count())
import numpy as np
import srcgrad
from srcgrad import api, rules
from srcgrad.rules import table
built = []
original = api.build_module
api.build_module = lambda *a, **k: built.append(1) or original(*a, **k)
from srcgrad import forward_api
forward_build = forward_api.build_forward_module
forward_api.build_forward_module = lambda *a, **k: built.append(1) or forward_build(*a, **k)
import warmprog
x = np.linspace(-1.0, 1.0, 7)
w = np.linspace(0.5, 1.5, 7)
g = srcgrad.grad(warmprog.loss, wrt=(0, 1), target="cpu")(x, w)
value = tangent = 0.0
if os.environ.get("WARM_TEST_JVP") == "1":
    value, tangent = srcgrad.jvp(warmprog.loss, wrt=(0, 1), target="cpu")(x, w, (np.ones(7), w))
rules_in_use = [r for r in table.REGISTRY.values() if isinstance(r, table.Rule)]
rules_in_use += [r.tangent for r in rules_in_use if r.tangent is not None]
parsed = sorted(r.name for r in rules_in_use if table._in_srcgrad(r.template) and r._body is not None)
print(json.dumps({"compiled": compiled, "built": len(built), "parsed": parsed,
                  "grad": [list(map(float, a)) for a in g], "more": [float(value), float(tangent)]}))
'''


def _child(tmp_path, jvp=False):
    (tmp_path / "warmprog.py").write_text(PROGRAM)
    env = dict(os.environ, SRCGRAD_CACHE_DIR=str(tmp_path / "srcgrad"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), SRCGRAD_QUIET="1")
    # at Numba's default optimization level, as a user's process: at the suite's NUMBA_OPT=0
    # Numba cannot cache a function that reaches the tape pool's object-mode block (a gradient
    # with tapes: "uses dynamic globals") nor the jvp module (see conftest.py)
    env = user_numba_env(env)
    if jvp:
        env["WARM_TEST_JVP"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, str(tmp_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("jvp", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_warm_process_compiles_nothing_and_reads_no_template(tmp_path, jvp):
    """grad (and, slow: jvp at Numba's default level, ~11 s) in a process, then in a new one."""
    cold = _child(tmp_path, jvp)
    assert cold["built"] == 1 + jvp and cold["compiled"], cold          # the transform and Numba ran
    assert cold["parsed"], cold                                   # the templates it used, on first use
    warm = _child(tmp_path, jvp)
    assert warm["compiled"] == [], warm                           # Numba loaded everything from its cache
    assert warm["built"] == 0 and warm["parsed"] == [], warm      # no transform, no template read
    assert warm["grad"] == cold["grad"] and warm["more"] == cold["more"]


def test_import_reads_no_builtin_template():
    script = ("import srcgrad\nfrom srcgrad.rules import table\n"
              "print(sum(1 for r in table.REGISTRY.values() if isinstance(r, table.Rule) "
              "and r._body is not None and table._in_srcgrad(r.template)))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0"]


def test_every_builtin_template_parses():
    """Parsing is deferred, so a broken built-in template would show only when used: parse all."""
    count = 0
    for rule in list(table.REGISTRY.values()):
        for r in (rule, getattr(rule, "tangent", None)):
            if isinstance(r, (table.Rule, table.TangentRule)):
                assert isinstance(r.body, list) and r.body, r.name
                count += 1
    assert count > 100


def test_builtin_template_sources_are_in_the_cache_key():
    """The fingerprint names srcgrad's own templates and kind functions instead of holding their
    source: every file that defines one must be hashed by ``implementation_hash``."""
    package = Path(codegen.__file__).parent
    hashed = {str(p.resolve()) for p in package.rglob("*.py")}
    files = set()
    for rule in table.REGISTRY.values():
        for f in (getattr(rule, "template", None), getattr(rule, "kind", None),
                  getattr(getattr(rule, "tangent", None), "template", None)):
            if f is not None and table._in_srcgrad(f):
                files.add(str(Path(f.__code__.co_filename).resolve()))
                assert table._source_or_name(f).startswith(f.__module__ + "."), f
    assert files and files <= hashed, files - hashed


def _bad_template(result, x):
    print(x)


def test_user_template_errors_at_registration():
    def mine(x):
        return x

    before = rules.registry_fingerprint()
    with pytest.raises(srcgrad.SrcgradError, match="_bad_template"):
        srcgrad.register_adjoint(mine)(_bad_template)
    assert mine not in table.REGISTRY and rules.registry_fingerprint() == before


def _twice(x):
    return 2.0 * x


def _twice_adjoint(result, x):
    d[x] += 2.0 * d[result]       # noqa: F821  (d: the template's adjoint marker)


def _twice_adjoint_wrong(result, x):
    d[x] += 3.0 * d[result]       # noqa: F821


def test_user_template_source_stays_in_the_fingerprint():
    try:
        srcgrad.register_adjoint(_twice)(_twice_adjoint)
        right = rules.registry_fingerprint()
        srcgrad.register_adjoint(_twice)(_twice_adjoint_wrong)
        assert rules.registry_fingerprint() != right
        assert "3.0" in table.REGISTRY[_twice].fingerprint
    finally:
        table.REGISTRY.pop(_twice, None)
        table._REGISTRY_VERSION[0] += 1
