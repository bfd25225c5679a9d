"""Shared event contracts: Avro schemas (``avro/*.avsc``) and their typed Python face.

Every component speaks to every other only through these records and the codec.
"""

from schemas.codec import Codec, DecodeError, codec_for
from schemas.records import (
    BudgetAlert,
    GpuProcess,
    GpuSample,
    InferenceUsage,
    LedgerLine,
    OrgDirectory,
    Price,
)

__all__ = [
    "BudgetAlert",
    "Codec",
    "DecodeError",
    "GpuProcess",
    "GpuSample",
    "InferenceUsage",
    "LedgerLine",
    "OrgDirectory",
    "Price",
    "codec_for",
]
