"""Missing prerequisites of mission features: a skip on a developer's machine, a failure in CI.

A test that cannot run because real MNIST, NVVM (PTX compilation) or loop fusion is missing would,
as a plain skip, let CI pass while a feature the project promises went untested. Under ``CI=true``
(set by CI services and by ``.ci/run``'s callers) these skips fail instead, with the same reason.

* ``needs(available, reason)``: a mark (on a test, or as a module's ``pytestmark``); the check runs
  in tests/conftest.py's ``pytest_runtest_setup``.
* ``missing(reason)``: call inside a test that finds out at run time.
"""
import os

import pytest

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason):
    """Skip the running test, or fail it under CI=true."""
    if CI:
        pytest.fail(f"{reason} [CI=true: a missing mission feature fails instead of skipping]",
                    pytrace=False)
    pytest.skip(reason)


def needs(available, reason):
    """Mark: the test needs ``available`` to be true (else ``missing(reason)``)."""
    return pytest.mark.needs(bool(available), reason)
