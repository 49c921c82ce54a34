"""Summarise a pip-audit JSON report for CI: ``audit_report.py REPORT PIP_AUDIT_STATUS LOG``.

Exit status 1 when the report lists a known vulnerability, 0 otherwise. Why not pip-audit's own
exit status: it is 1 both for "vulnerable" and for "could not reach the advisory service", and a
CI without internet must still build; and pip-audit says "No known vulnerabilities found" when
the service knew none of the packages, which must read as "not audited" instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []


def main(argv: list[str]) -> int:
    report, status, log = Path(argv[1]), int(argv[2]), Path(argv[3])
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        print(f"pip-audit: no report (exit {status}), its advisory service could not be reached; "
              "dependencies NOT audited:", file=sys.stderr)
        for line in _tail(log):
            print(f"  {line}", file=sys.stderr)
        return 0
    dependencies = data.get("dependencies", [])
    vulnerable = [(dep, vuln) for dep in dependencies for vuln in dep.get("vulns") or []]
    skipped = [dep for dep in dependencies if dep.get("skip_reason")]
    for dep, vuln in vulnerable:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
        aliases = f" ({', '.join(vuln['aliases'])})" if vuln.get("aliases") else ""
        print(f"VULNERABLE {dep['name']} {dep.get('version', '?')}: {vuln.get('id')}{aliases}, fixed in {fixes}")
    audited = len(dependencies) - len(skipped)
    print(f"pip-audit: {audited} of {len(dependencies)} packages audited, "
          f"{len(vulnerable)} known vulnerabilit{'y' if len(vulnerable) == 1 else 'ies'}")
    if skipped:
        print(f"pip-audit: {len(skipped)} packages NOT audited (the advisory service does not know them), "
              f"e.g. {skipped[0]['skip_reason']}", file=sys.stderr)
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
