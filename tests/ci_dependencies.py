"""In CI (`CI=true`), a test skipped for a missing dependency is a failure.

Locally a missing optional test dependency (torch, the reference PolyNet
packages, JAX, tensorflow-datasets, keras-hub, ...) skips the tests that need
it, with the reason. In CI every dependency of the test extra must be there
(`scripts/setup_env.sh test` installs them), so such a skip means a broken
install step, and a green run would hide untested code: it fails instead.

Hooks for pytest; `tests/conftest.py` imports them.
"""

import os

import pytest

# How `pytest.importorskip` and our own dependency skips word their reason.
MISSING_DEPENDENCY_MARKERS = ("could not import", "is not installed")


def running_in_ci():
    """True when the CI environment variable says so (CI=true, as CI sets it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def _fail_if_missing_dependency(report):
    if not (report.skipped and running_in_ci()):
        return
    reason = _skip_reason(report)
    if any(marker in reason for marker in MISSING_DEPENDENCY_MARKERS):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: a test dependency is missing ({reason}). Every dependency of the "
            "test extra must be installed in CI (bash scripts/setup_env.sh test); "
            "locally this test would be skipped.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_missing_dependency(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_missing_dependency(outcome.get_result())
