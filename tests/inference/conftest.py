"""Fixtures of the inference tests: a tap on the real Kafka usage topic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gpuledger.settings import Settings
from tests.inference.usage_tap import UsageTap


@pytest.fixture
async def tap(stack_settings: Settings) -> AsyncIterator[UsageTap]:
    """Usage events produced after the test started."""
    usage_tap = await UsageTap(stack_settings).start()
    try:
        yield usage_tap
    finally:
        await usage_tap.stop()
