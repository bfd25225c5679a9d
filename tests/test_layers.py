"""The import rules of README's "Where things live", checked on every module's imports.

Layers, bottom up: ``schemas`` (contracts) and ``sql`` (migrations) import nothing of ours; the platform
(``gpuledger`` minus its ``commands`` and ``ui``) imports only contracts; the components ``collectors``,
``inference`` and ``streams`` import contracts, the platform and themselves, never each other; the command line
(``gpuledger.commands``) and the dashboard (``gpuledger.ui``) sit on top and may import anything but are imported
by nothing below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"schemas", "sql", "gpuledger", "collectors", "inference", "streams"}
COMPONENTS = {"collectors", "inference", "streams"}
TOP = ("gpuledger.commands", "gpuledger.ui")


def layer(module: str) -> str:
    """The layer a dotted module name belongs to."""
    if module.startswith(TOP):
        return "top"
    head = module.split(".")[0]
    if head in {"schemas", "sql"}:
        return "contracts"
    if head == "gpuledger":
        return "platform"
    return head


def allowed(importer: str, imported: str) -> bool:
    """Whether ``importer`` may import ``imported`` under the layer rules."""
    src, dst = layer(importer), layer(imported)
    if src == "top":
        return True
    if src == "contracts":
        return dst == "contracts"
    if src == "platform":
        return dst in {"contracts", "platform"}
    return dst in {"contracts", "platform", src}  # a component: itself, never another component or the top


def our_imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute import of one of our packages in ``path``, with its line (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module.split(".")[0] in OURS else []
            if node.module in OURS | set(TOP):  # `from gpuledger import x` imports the module gpuledger.x
                names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] in OURS]
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def sources() -> list[Path]:
    return sorted(p for head in OURS for p in (ROOT / head).rglob("*.py"))


def test_the_rules_refuse_what_the_readme_forbids() -> None:
    assert not allowed("streams.sink", "inference.metering.events")  # component -> another component
    assert not allowed("collectors.agent", "gpuledger.commands.cli")  # component -> the command line
    assert not allowed("gpuledger.kafka", "streams.app")  # platform -> component
    assert not allowed("schemas.codec", "gpuledger.settings")  # contracts -> platform
    assert allowed("gpuledger.commands.cli", "streams.app") and allowed("inference.gateway.app", "inference.metering.events")


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_follows_the_layers(path: Path) -> None:
    importer = module_name(path)
    broken = [f"line {line}: {imported}" for imported, line in our_imports(path) if not allowed(importer, imported)]
    assert not broken, f"{importer} ({layer(importer)}) imports across layers: {broken}"
