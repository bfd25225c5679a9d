"""The README's example Prometheus alert rules parse in promtool and use only metrics the code defines."""

from __future__ import annotations

import re
from pathlib import Path

from tests.promtool import check_rules

ROOT = Path(__file__).resolve().parents[1]


def test_readme_alert_rules_are_valid_and_name_real_metrics(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    rules = readme.split("```yaml\ngroups:", 1)[1].split("```", 1)[0]
    check_rules("groups:" + rules, tmp_path)
    sources = "".join(p.read_text() for d in ("inference", "collectors", "streams") for p in (ROOT / d).rglob("*.py"))
    for name in set(re.findall(r"\b(gpuledger_[a-z_]+)", rules)):
        base = re.sub(r"_(total|bucket)$", "", name)
        assert f'"{base}' in sources, f"{name} in the README's rules is not a metric the code defines"
