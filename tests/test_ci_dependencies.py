"""A missing test dependency skips locally and fails under CI=true."""

import os
import pathlib
import subprocess
import sys

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]

_TESTS = '''
import pytest

missing = pytest.importorskip("polynet_tf_no_such_module")


def test_needs_the_missing_module():
    assert missing
'''

_IN_TEST = '''
import pytest


def test_present():
    assert True


def test_needs_a_reference_package():
    pytest.importorskip("polynet_tf_no_such_reference")


def test_skipped_for_another_reason():
    pytest.skip("not relevant on this platform")
'''


def _run_pytest(tmp_path, source, ci):
    test_file = tmp_path / "test_sample.py"
    test_file.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.ci_dependencies", "-p", "no:cacheprovider",
         "-q", "-rs", "--rootdir", str(tmp_path), "-c", os.devnull, str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("source", [_TESTS, _IN_TEST], ids=["module_level", "in_test"])
def test_missing_dependency_skips_locally(tmp_path, source):
    code, output = _run_pytest(tmp_path, source, ci=False)
    # 5: pytest ran no test (the module-level skip left none), not a failure.
    assert code in (0, 5), output
    assert "skipped" in output and "failed" not in output, output


def test_missing_dependency_fails_in_ci_at_collection(tmp_path):
    code, output = _run_pytest(tmp_path, _TESTS, ci=True)
    assert code != 0, output
    assert "CI=true: a test dependency is missing" in output, output
    assert "polynet_tf_no_such_module" in output


def test_missing_dependency_fails_in_ci_inside_a_test_other_skips_stay(tmp_path):
    code, output = _run_pytest(tmp_path, _IN_TEST, ci=True)
    assert code == 1, output
    assert "1 failed, 1 passed, 1 skipped" in output, output
    assert "polynet_tf_no_such_reference" in output
