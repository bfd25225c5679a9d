"""The notifier's settings: the ``notifier`` section of the one settings tree (``gpuledger.sections.notifier``)."""

from __future__ import annotations

from gpuledger.sections.notifier import WEEKDAYS, DigestSchedule, NotifierSettings, Route, Target

__all__ = ["WEEKDAYS", "DigestSchedule", "NotifierSettings", "Route", "Target"]
