"""MNIST training's compiled pieces load from the on-disk caches in a new process (issue 17).

The accuracy counter (``srcgrad.training.mlp_eval.count_correct``) used to be defined in
``examples/train_mnist.py``, whose cache entries name the script's module (``__main__``, or the
name a test loaded it under), which a later process cannot import: it was compiled again in every
process. These tests run two fresh processes on the same cache directories and assert that the
second one compiles nothing and reports cache hits.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import user_numba_env

from srcgrad.training.mlp_eval import accuracy, count_correct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COUNT_CHILD = '''
import json
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
from srcgrad.training.mlp import init_params
from srcgrad.training.mlp_eval import count_correct
rng = np.random.default_rng(1)
params = init_params(16, seed=3, n_in=20)
X = rng.standard_normal((37, 20)).astype(np.float32)
y = rng.integers(0, 10, 37)
n = count_correct(*params, X, y, 8)
print(json.dumps({"compiled": compiled, "correct": int(n),
                  "hits": sum(count_correct.stats.cache_hits.values())}))
'''

TRAIN_CHILD = '''
import json, sys
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
sys.path.insert(0, "examples")
import train_mnist as tm
rng = np.random.default_rng(0)
arrays = (rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200),
          rng.random((50, 784), dtype=np.float32), rng.integers(0, 10, 50))
r = tm.train(epochs=1, arrays=arrays, quiet=True, hidden=32, batch_size=64)
print(json.dumps({"compiled": compiled, "history": r["history"]["train_loss"] +
                  r["history"]["train_acc"] + r["history"]["test_acc"]}))
'''


def _child(tmp_path, script):
    env = dict(os.environ, SRCGRAD_CACHE_DIR=str(tmp_path / "srcgrad"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"), SRCGRAD_QUIET="1")
    env = user_numba_env(env)       # Numba's default level, as a user's process
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference_correct(W1, b1, W2, b2, X, y):
    h = np.maximum(X.astype(np.float64) @ W1 + b1, 0.0)
    return int(np.sum(np.argmax(h @ W2 + b2, axis=1) == y))


@pytest.mark.parametrize("n, chunk", [(37, 8), (37, 37), (37, 100), (1, 4)])
def test_count_correct_matches_numpy(n, chunk):
    from srcgrad.training.mlp import init_params
    rng = np.random.default_rng(n + chunk)
    params = init_params(16, seed=3, n_in=20, dtype=np.float64)
    X = rng.standard_normal((n, 20))
    y = rng.integers(0, 10, n)
    assert count_correct(*params, X, y, chunk) == _reference_correct(*params, X, y)
    assert accuracy(params, X, y, chunk) == _reference_correct(*params, X, y) / n
    assert np.isnan(accuracy(params, X[:0], y[:0]))


def test_count_correct_loads_from_the_cache_in_a_new_process(tmp_path):
    cold = _child(tmp_path, COUNT_CHILD)
    assert "count_correct" in cold["compiled"] and cold["hits"] == 0, cold
    warm = _child(tmp_path, COUNT_CHILD)
    assert warm["compiled"] == [] and warm["hits"] == 1, warm
    assert warm["correct"] == cold["correct"]


@pytest.mark.slow
def test_train_mnist_warm_process_compiles_nothing(tmp_path):
    """examples/train_mnist.py's compile before epoch 1 (gradient, training loop with momentum,
    accuracy counter) in a process, then in a new one: the second compiles no function."""
    cold = _child(tmp_path, TRAIN_CHILD)
    # (Momentum, the default: the fused step and its batch loop, not _run_minibatches)
    assert "count_correct" in cold["compiled"] and "_run_momentum_steps" in cold["compiled"], cold
    warm = _child(tmp_path, TRAIN_CHILD)
    assert warm["compiled"] == [], warm
    assert warm["history"] == cold["history"]
