"""The ``cpu`` target: generated functions are compiled with Numba (see :mod:`.helpers`)."""
from . import helpers as _helpers

globals().update({_name: _value for _name, _value in vars(_helpers).items()
                  if not _name.startswith("__") and _name != "_helpers"})


def __getattr__(name):
    """The library ufuncs are built on first use (library._LAZY)."""
    value = globals()[name] = getattr(_helpers, name)
    return value
