"""Files the commands read at run time (demo data, the local Kafka's pom), shipped inside the wheel.

They are package data, found through ``importlib.resources``, so ``gpuledger demo``, ``simulate`` and
``stack up`` work from any install (a wheel in a container, ``pip install gpuledger``), not only from
the source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _path(*parts: str) -> Path:
    """A real file path: wheels install unpacked, so the package's files live on disk (Maven and typer need paths)."""
    return Path(str(resources.files(__name__).joinpath(*parts)))


DEMO = _path("demo")  # orgs, prices, equivalents and budgets of the demo fleet
KAFKA_POM = _path("kafka", "pom.xml")  # the local broker's jars, resolved by Maven
