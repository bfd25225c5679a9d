"""The one retry policy (gpuledger/retry.py): which errors are transient, and how the backoff waits (no real sleeps)."""

from __future__ import annotations

import asyncio
import errno
from decimal import Decimal

import httpx
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
)
from pydantic import BaseModel, ValidationError

from gpuledger.retry import Backoff, is_transient, transient_http_status
from schemas import DecodeError


class _Row(BaseModel):
    cost: Decimal


def _validation_error() -> ValidationError:
    try:
        _Row.model_validate({"cost": "not money"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def _http(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/hook")
    return httpx.HTTPStatusError("refused", request=request, response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        # connection refused / reset, timeouts
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset by peer"), True),
        (TimeoutError(), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        # server overloaded or away
        (_http(503), True),
        (_http(429), True),
        (_http(408), True),
        (_http(500), True),
        (OperationalError("HTTPConnectionPool: Connection refused"), True),
        (DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"), True),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)"), True),
        (DatabaseError("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"), True),
        (DatabaseError("Code: 202. DB::Exception: Too many simultaneous queries"), True),
        # Kafka: what aiokafka marks retriable, and its own timeouts
        (KafkaConnectionError("broker away"), True),
        (KafkaTimeoutError(), True),
        (RequestTimedOutError(), True),
        (NotEnoughReplicasError(), True),
        (UnknownTopicOrPartitionError(), True),
        # permanent: schema, type, constraint, bad request, a record Kafka refuses
        (DecodeError("schema id 99 is unknown"), False),
        (_validation_error(), False),
        (TypeError("unsupported operand"), False),
        (ValueError("cannot convert NaN to integer"), False),
        (OverflowError("int too big"), False),
        (DataError("Unable to create native array for column"), False),
        (DatabaseError("Code: 469. DB::Exception: Constraint `c` is violated (VIOLATED_CONSTRAINT)"), False),
        (DatabaseError("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH)"), False),
        (_http(400), False),
        (_http(404), False),
        (_http(401), False),
        (MessageSizeTooLargeError(), False),
        (TopicAuthorizationFailedError(), False),
        # cancellation is never retried; anything unknown is waited out (a wrong "permanent" would drop good data)
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
        (RuntimeError("something else"), True),
    ],
)
def test_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_http_statuses() -> None:
    assert [s for s in (200, 400, 401, 404, 408, 409, 429, 500, 502, 503) if transient_http_status(s)] == [408, 429, 500, 502, 503]


def test_waits_grow_with_jitter_and_stay_under_the_cap() -> None:
    policy = Backoff(first_s=1.0, max_s=8.0)
    for attempt, step in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0], start=1):
        waits = {policy.delay(attempt) for _ in range(50)}
        assert all(step / 2 <= w <= step for w in waits), (attempt, sorted(waits))
        assert len(waits) > 1, "no jitter: processes that lost the same server would come back in lock step"


class _Flaky:
    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "stored"


async def test_transient_errors_are_retried_with_the_injected_sleep() -> None:
    slept: list[float] = []
    retried: list[str] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    flaky = _Flaky(ConnectionResetError("reset"), TimeoutError("slow"))
    result = await Backoff(first_s=0.5, max_s=4.0).call(flaky, sleep=sleep, on_retry=lambda exc, wait: retried.append(type(exc).__name__))
    assert result == "stored" and flaky.calls == 3
    assert retried == ["ConnectionResetError", "TimeoutError"]
    assert len(slept) == 2 and 0.25 <= slept[0] <= 0.5 and 0.5 <= slept[1] <= 1.0


async def test_a_permanent_error_is_raised_at_once() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    flaky = _Flaky(ConnectionResetError("reset"), DataError("negative into UInt64"))
    with pytest.raises(DataError):
        await Backoff().call(flaky, sleep=sleep)
    assert flaky.calls == 2 and len(slept) == 1


async def test_the_attempt_limit_raises_the_last_error() -> None:
    async def sleep(seconds: float) -> None:
        return None

    flaky = _Flaky(*(ConnectionRefusedError(f"refused {n}") for n in range(10)))
    with pytest.raises(ConnectionRefusedError, match="refused 2"):
        await Backoff(attempts=3).call(flaky, sleep=sleep)
    assert flaky.calls == 3


async def test_an_asked_wait_overrides_the_backoff_and_cancellation_stops_it() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Later(Exception):
        retry_after = 7.0

    flaky = _Flaky(Later(), ConnectionResetError("reset"))
    await Backoff(first_s=0.1, max_s=1.0).call(flaky, sleep=sleep, asked_wait=lambda exc: getattr(exc, "retry_after", None))
    assert slept[0] == 7.0 and slept[1] <= 0.2

    with pytest.raises(asyncio.CancelledError):
        await Backoff().call(_Flaky(asyncio.CancelledError()), sleep=sleep)


async def test_a_plain_callable_returning_a_coroutine_is_awaited() -> None:
    """Callers pass lambdas (``lambda: store(batch)``); tenacity 9.2 awaits only coroutine functions, so ``call`` wraps them."""
    flaky = _Flaky(ConnectionResetError("reset"))

    async def sleep(seconds: float) -> None:
        return None

    result = await Backoff(first_s=0.1, max_s=0.1).call(lambda: flaky(), sleep=sleep)
    assert result == "stored" and flaky.calls == 2
