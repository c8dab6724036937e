"""Regression tests for issue 14 (hardening), items 1-9: each failed before its fix.

Cross-process tests run small scripts in fresh interpreters that share one SRCGRAD_CACHE_DIR, the
way a user's successive runs share ~/.cache/srcgrad.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import srcgrad
from conftest import check_grad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(tmp_path, name, text, cache_dir, env=None):
    """Run ``text`` as module ``name`` in a fresh interpreter (srcgrad from this checkout); its stdout."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    environ = dict(os.environ, SRCGRAD_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    environ.pop("SRCGRAD_MAX_TAPE_BYTES", None)
    environ.update(env or {})
    done = subprocess.run([sys.executable, str(path)], cwd=str(tmp_path), env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


# -- 1. the cache key covers every registered rule and the codegen options -----------------------

RULE_SCRIPT = """
import srcgrad
from srcgrad import d

def scale(x):
    return 2.0 * x

@srcgrad.register_adjoint(scale)
def scale_rule(result, x):
    d[x] += d[result] * {factor}

def loss(x):
    return scale(x) * 1.0

print(srcgrad.grad(loss, target="{target}")(1.5))
"""


@pytest.mark.parametrize("target", ["python", "cpu"])
def test_rule_change_is_not_served_from_cache(tmp_path, target):
    cache = tmp_path / "cache"
    first = run_script(tmp_path, "rule_user", RULE_SCRIPT.format(factor="2.0", target=target), cache)
    assert float(first) == 2.0
    second = run_script(tmp_path, "rule_user", RULE_SCRIPT.format(factor="3.0", target=target), cache)
    assert float(second) == 3.0


def test_cache_key_covers_codegen_options(monkeypatch):
    from srcgrad import codegen, lower
    base = codegen.cache_key("cpu", "kinds")
    monkeypatch.setattr(lower, "FUSE", not lower.FUSE)
    assert codegen.cache_key("cpu", "kinds") != base
    monkeypatch.undo()
    monkeypatch.setenv("SRCGRAD_NUMPY_BLAS", "0")
    assert codegen.cache_key("cpu", "kinds") != base
    monkeypatch.undo()
    assert codegen.cache_key("cpu", "kinds") == base
    assert codegen.cache_key("python", "kinds") != base

    def unrelated(x):
        return x

    @srcgrad.register_adjoint(unrelated)
    def unrelated_rule(result, x):
        d[x] += d[result]      # noqa: F821
    assert codegen.cache_key("cpu", "kinds") != base
