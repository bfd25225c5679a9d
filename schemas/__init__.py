"""Shared event contracts: Avro schemas (``avro/*.avsc``) and their typed Python face.

Every component speaks to every other only through these records and the codec.
"""

from schemas.codec import Codec, DecodeError, codec_for
from schemas.records import (
    Budget,
    BudgetAlert,
    BudgetStatus,
    GpuProcess,
    GpuSample,
    InferenceUsage,
    LedgerLine,
    ModelEquivalent,
    OrgDirectory,
    OutcomeEvent,
    Price,
    SpendShare,
)

__all__ = [
    "Budget",
    "BudgetAlert",
    "BudgetStatus",
    "Codec",
    "DecodeError",
    "GpuProcess",
    "GpuSample",
    "InferenceUsage",
    "LedgerLine",
    "ModelEquivalent",
    "OrgDirectory",
    "OutcomeEvent",
    "Price",
    "SpendShare",
    "codec_for",
]
