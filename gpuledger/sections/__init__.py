"""Settings sections of the processes that run on their own (collector, vLLM meter, gateway, notifier).

They live in the platform, below every component, because they hang off the one ``Settings``
tree in ``gpuledger.settings`` and are loaded by its one loader; the components import them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A part of the settings tree: a key it does not know is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")
