"""The image installs the wheel, so the wheel must hold every module the components import.

setuptools only ships the packages pyproject lists: a package missing there (streams.budgets was) builds a
wheel whose `gpuledger worker` dies with ImportError inside the container, while every test of the source
tree passes. The image itself cannot be built here (no container engine).
"""

from __future__ import annotations

import tomllib

from tests.deploy.chart import ROOT


def test_every_python_package_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {p.split(".")[0] for p in listed}
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for root in roots for init in (ROOT / root).rglob("__init__.py")}
    assert on_disk - listed == set(), f"add to [tool.setuptools] packages in pyproject.toml: {sorted(on_disk - listed)}"
    data = config["package-data"]
    assert (ROOT / "sql" / "migrations").is_dir() and data["sql"] == ["migrations/*.sql"] and data["schemas"] == ["avro/*.avsc"]


def test_every_data_file_of_a_package_is_in_the_wheel() -> None:
    """Templates, vendored scripts, .proto and .avsc files ship only where a package-data glob names them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data: dict[str, list[str]] = config["package-data"]
    missing = []
    for package in config["packages"]:
        folder = ROOT.joinpath(*package.split("."))
        subpackages = {ROOT.joinpath(*p.split(".")) for p in config["packages"] if p.startswith(package + ".")}
        for path in folder.rglob("*"):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            if any(sub in path.parents for sub in subpackages):
                continue  # the subpackage's own globs cover it
            relative = path.relative_to(folder)
            if not any(relative.match(glob) and len(relative.parts) == len(glob.split("/")) for glob in data.get(package, [])):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"add [tool.setuptools.package-data] globs in pyproject.toml for: {missing}"
