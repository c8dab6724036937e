"""``srcgrad.datasets`` moved to :mod:`srcgrad.training.datasets`; this name stays importable.

The alias is the same module object (not a copy of its names), so attribute reads and
``monkeypatch.setattr(srcgrad.datasets, ...)`` act on the real module.
"""

import sys

from srcgrad.training import datasets as _module

sys.modules[__name__] = _module
