""".ci/run and its dependency audit, checked without network or a second virtual environment.

``.ci/run`` is run in a copy of its directory layout with a fake ``python3`` whose venv's pytest
exits as told, and a fake ``.ci/audit``: the tests' exit status must be the build's, and the audit
runs only after tests that passed. The report summary is fed pip-audit reports as they look in
each case (vulnerable, clean, service unreachable, packages unknown to the service).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev,export]' && .venv/bin/pytest"


def test_ci_runs_the_readme_test_command_unchanged():
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text()
    assert TEST_COMMAND in (REPO / "README.md").read_text()


def _fake_ci(tmp_path: Path, pytest_status: int, audit_status: int) -> subprocess.CompletedProcess:
    root = tmp_path / "checkout"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", root / ".ci" / "run")
    audit = root / ".ci" / "audit"
    audit.write_text(f"#!/usr/bin/env bash\necho audit-ran \"$@\"\nexit {audit_status}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # `python3 -m venv .venv` makes a venv whose pytest exits as told
    python3.write_text(
        "#!/usr/bin/env bash\nmkdir -p .venv/bin\n"
        "printf '#!/usr/bin/env bash\\nexit 0\\n' > .venv/bin/pip\n"
        f"printf '#!/usr/bin/env bash\\necho pytest-ran\\nexit {pytest_status}\\n' > .venv/bin/pytest\n"
        "chmod +x .venv/bin/pip .venv/bin/pytest\n")
    for script in (python3, audit, root / ".ci" / "run"):
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(root / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("status", [1, 2, 5])
def test_failing_tests_fail_the_build_with_their_status_and_skip_the_audit(tmp_path, status):
    done = _fake_ci(tmp_path, pytest_status=status, audit_status=0)
    assert done.returncode == status and "pytest-ran" in done.stdout and "audit-ran" not in done.stdout


@pytest.mark.parametrize("audit_status", [0, 1])
def test_the_audit_runs_after_passing_tests_and_decides_the_build(tmp_path, audit_status):
    done = _fake_ci(tmp_path, pytest_status=0, audit_status=audit_status)
    assert done.returncode == audit_status and "audit-ran .venv" in done.stdout


def _summary(tmp_path: Path, report: dict | None, status: int, log: str = "") -> subprocess.CompletedProcess:
    path = tmp_path / "report.json"
    if report is not None:
        path.write_text(json.dumps(report))
    (tmp_path / "audit.log").write_text(log)
    return subprocess.run([sys.executable, str(REPO / ".ci" / "audit_report.py"), str(path), str(status),
                           str(tmp_path / "audit.log")], capture_output=True, text=True, timeout=60, check=False)


def test_a_known_vulnerability_fails_the_build_and_is_named(tmp_path):
    report = {"dependencies": [
        {"name": "requests", "version": "2.19.0", "vulns": [
            {"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": ["CVE-2018-18074"]}]},
        {"name": "numpy", "version": "2.1.0", "vulns": []},
    ], "fixes": []}
    done = _summary(tmp_path, report, status=1)
    assert done.returncode == 1
    assert "VULNERABLE requests 2.19.0: PYSEC-2018-28 (CVE-2018-18074), fixed in 2.20.0" in done.stdout
    assert "2 of 2 packages audited, 1 known vulnerability" in done.stdout


def test_a_clean_audit_passes(tmp_path):
    done = _summary(tmp_path, {"dependencies": [{"name": "numpy", "version": "2.1.0", "vulns": []}]}, status=0)
    assert done.returncode == 0 and "1 of 1 packages audited, 0 known vulnerabilities" in done.stdout


def test_an_unreachable_advisory_service_is_reported_and_does_not_fail(tmp_path):
    log = "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries"
    done = _summary(tmp_path, None, status=1, log=log)
    assert done.returncode == 0
    assert "could not be reached; dependencies NOT audited" in done.stderr and "pypi.org" in done.stderr


def test_packages_the_service_does_not_know_are_not_counted_as_audited(tmp_path):
    report = {"dependencies": [{"name": "numpy", "skip_reason": "Dependency not found on PyPI and could not be "
                                                               "audited: numpy (2.1.0)"}]}
    done = _summary(tmp_path, report, status=0)
    assert done.returncode == 0
    assert "0 of 1 packages audited" in done.stdout and "1 packages NOT audited" in done.stderr
