"""Training pieces: optimizers, data sets, the MNIST MLP model and the hand-written GPU trainer.

* :mod:`srcgrad.training.optim` — compiled optimizer updates and ``MinibatchLoop``
  (also importable as ``srcgrad.optim``);
* :mod:`srcgrad.training.compile_ahead` — from empty caches, ``MinibatchLoop``'s pieces compiled
  in a helper process (opt-in; on Linux a fork of this one) while the gradient compiles;
* :mod:`srcgrad.training.datasets` — the MNIST loader (also ``srcgrad.datasets``);
* :mod:`srcgrad.training.mlp` — the 784-H-10 MLP: its one ``mlp_loss``, initialisation and
  per-epoch batch order, shared by ``examples/train_mnist.py``, the benchmarks and the tests;
* :mod:`srcgrad.training.mlp_eval` — its accuracy (a compiled forward pass, cached on disk);
* :mod:`srcgrad.training.cuda_mlp` — the hand-written GPU trainer (CUDA kernels are built on
  first use, not at import).

Nothing is imported here, so ``import srcgrad.training.mlp`` does not load Numba's CUDA target.
"""
