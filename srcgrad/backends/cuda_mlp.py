"""``srcgrad.backends.cuda_mlp`` moved to :mod:`srcgrad.training.cuda_mlp` (an application of
the CUDA kernels, not a backend); this name stays importable as the same module object."""

import sys

from srcgrad.training import cuda_mlp as _module

sys.modules[__name__] = _module
