"""Validating Prometheus expositions with Prometheus's own ``promtool check metrics`` (Debian package ``prometheus``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def check_metrics(exposition: str) -> None:
    """Fail with promtool's findings unless the text parses and passes its lint (naming, suffixes, HELP)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    result = subprocess.run([promtool, "check", "metrics"], input=exposition.encode(), capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, f"promtool check metrics failed ({result.returncode}): {(result.stdout + result.stderr).decode()}"


def check_rules(rules_yaml: str, tmp_dir: Path) -> None:
    """Fail unless promtool accepts the alerting rules (expressions parse, structure is valid)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    path = tmp_dir / "rules.yaml"
    path.write_text(rules_yaml)
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, f"promtool check rules failed: {(result.stdout + result.stderr).decode()}"
