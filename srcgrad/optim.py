"""``srcgrad.optim`` moved to :mod:`srcgrad.training.optim`; this name stays importable.

The alias is the same module object (not a copy of its names), so attribute reads and
``monkeypatch.setattr(srcgrad.optim, ...)`` act on the real module.
"""

import sys

from srcgrad.training import optim as _module

sys.modules[__name__] = _module
