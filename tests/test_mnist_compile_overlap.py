"""examples/train_mnist.py compiles its accuracy counter in a thread during epoch 1 (issue 17:
not before epoch 1), which overlaps only because the compiled training loops release the GIL.
The epoch's accuracies must be what the counter computes when compiled the usual way."""
import importlib.util
import sys
import threading
import time
from pathlib import Path

import numpy as np

from srcgrad.training import fused_runs, optim
from srcgrad.training.mlp_eval import accuracy, count_correct

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_mnist_overlap", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_training_loops_release_the_gil():
    for loop in (fused_runs._run_sgd_steps, fused_runs._run_momentum_steps,
                 optim._run_minibatches):
        assert loop.targetoptions.get("nogil") is True, loop


def test_accuracy_counter_compiles_during_epoch_1_and_counts_the_same():
    tm = _load_example()
    rng = np.random.default_rng(0)
    X = rng.random((96, tm.N_IN), dtype=np.float32)
    y = rng.integers(0, tm.N_OUT, 96)
    res = tm.train(arrays=(X, y, X[:32], y[:32]), epochs=1, batch_size=32, hidden=8, quiet=True)
    counter = res["accuracy_compile"]
    assert set(counter) == {"seconds", "waited"} and counter["seconds"] >= counter["waited"] >= 0
    # the counter the thread compiled is the one evaluate used: the same count as a fresh call
    params = res["params"]
    assert res["history"]["train_acc"][0] == accuracy(params, X, y)
    assert res["history"]["test_acc"][0] == accuracy(params, X[:32], y[:32])
    assert len(count_correct.overloads) >= 1


def test_background_compile_waits_and_leaves_a_failure_to_the_call():
    tm = _load_example()
    done = threading.Event()

    class Slow:
        def compile(self, types):
            time.sleep(0.05)
            done.set()

    job = tm._BackgroundCompile(Slow(), ())
    job.finish()
    assert done.is_set() and job.seconds >= 0.05

    class Broken:
        def compile(self, types):
            raise TypeError("no such signature")

    job = tm._BackgroundCompile(Broken(), ())
    assert job.finish() >= 0 and job.seconds is not None     # no exception from the thread
