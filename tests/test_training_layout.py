"""srcgrad.training: the old import paths are the same modules; one MNIST model everywhere;
the GPU trainer loads nothing of CUDA at import."""

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_old_import_paths_are_the_moved_modules():
    import srcgrad.backends.cuda_mlp as old_cuda_mlp
    import srcgrad.datasets as old_datasets
    import srcgrad.optim as old_optim
    from srcgrad.training import cuda_mlp, datasets, optim
    assert old_optim is optim and old_datasets is datasets and old_cuda_mlp is cuda_mlp
    from srcgrad.optim import MinibatchLoop, make_optimizer  # noqa: F401  (public names)
    from srcgrad.datasets import DatasetError, load_mnist  # noqa: F401


def test_one_mlp_model_shared_by_example_gpu_trainer_and_benchmarks():
    import importlib.util

    from srcgrad.training import cuda_mlp, mlp
    spec = importlib.util.spec_from_file_location("train_mnist_layout", ROOT / "examples" /
                                                  "train_mnist.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sys.path.insert(0, str(ROOT))
    from benchmarks.lib import mnist_trainers, programs
    assert example.mlp_loss is mlp.mlp_loss is programs.mlp_loss is mnist_trainers.mlp_loss
    assert example.init_params is mlp.init_params
    assert example.epoch_permutation is mlp.epoch_permutation is cuda_mlp.epoch_permutation
    d = cuda_mlp.init_params(16, seed=3)
    for k, a in zip(mlp.PARAM_NAMES, mlp.init_params(16, seed=3)):
        np.testing.assert_array_equal(d[k], a)


def test_training_imports_no_cuda():
    code = ("import sys, srcgrad.training.cuda_mlp, srcgrad.training.mlp, srcgrad.optim; "
            "print(any(m.startswith('numba.cuda') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
