"""Which ClickHouse insert failures are retried (transient) and which isolate their rows (the data itself is refused)."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from gpuledger.retry import is_transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError("Error HTTPConnectionPool: Connection refused"), True),  # server down
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)"), True),  # overload
        (DatabaseError("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"), True),
        (
            DatabaseError("Code: 60. DB::Exception: Table t.usage_events does not exist (UNKNOWN_TABLE)"),
            True,
        ),  # deployment: wait, never dead-letter
        (DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated at row 1 (VIOLATED_CONSTRAINT)"), False),
        (DatabaseError("Code: 407. DB::Exception: Decimal math overflow (DECIMAL_OVERFLOW)"), False),
        (DataError("Unable to create native array for column `prompt_tokens`: error"), False),  # negative into UInt64
        (OverflowError("int too big to convert"), False),  # 10^30 into Decimal(38, 9)
        (ValueError("cannot convert NaN to integer"), False),
        (RuntimeError("something else"), True),
    ],
)
def test_classification(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
