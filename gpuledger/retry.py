"""The one retry policy: exponential backoff with jitter and limits (tenacity), and which errors are worth a retry.

Every component that waits out an outage (the sink's inserts, the worker's batches, the compacted views,
both publishers, the notifier's deliveries) uses ``Backoff``; every decision "retry or give up" goes
through ``is_transient``. Why jitter: many processes that lost the same broker or server at once would
otherwise come back in lock step.

Transient (waiting can fix it): connection refused/reset, timeouts, a server down or overloaded
(HTTP 408/429/5xx; ClickHouse MEMORY_LIMIT_EXCEEDED 241, TOO_MANY_PARTS 252, TIMEOUT_EXCEEDED 159,
TOO_MANY_SIMULTANEOUS_QUERIES 202, network codes), Kafka errors aiokafka marks retriable.
Permanent (the same request fails the same way): a value that does not fit its schema or column type,
a violated constraint, a bad request (HTTP 4xx), a record Kafka refuses (too large, invalid topic, denied).
Anything unknown counts as transient: a wrong "permanent" dead-letters or drops good data, a wrong
"transient" only delays it (and shows on the retry metrics).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
)
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

from schemas import DecodeError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]
OnRetry = Callable[[BaseException, float], None]  # (the error, seconds until the next attempt)

# ClickHouse error codes that mean "this data cannot be stored": CANNOT_PARSE_TEXT, _QUOTED_STRING,
# _INPUT_ASSERTION_FAILED, _DATE, _DATETIME, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
# CANNOT_PARSE_NUMBER, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
# CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN, DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT. Every other server error
# (memory, too many parts, timeouts, even an unknown table during a deployment) is waited out.
CLICKHOUSE_DATA_ERROR_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 407, 469})


def is_transient(exc: BaseException) -> bool:
    """True when the same operation may succeed later; False when it is refused for what it is (see module doc)."""
    if not isinstance(exc, Exception):
        return False  # cancellation, exit: never retried
    if isinstance(exc, OperationalError):  # clickhouse-connect: the server could not be reached or answered badly
        return True
    if isinstance(exc, DataError | DecodeError | OverflowError | ValueError | TypeError):
        return False  # a value the schema or column type cannot hold (pydantic's ValidationError is a ValueError)
    if isinstance(exc, DatabaseError):
        return clickhouse_code(exc) not in CLICKHOUSE_DATA_ERROR_CODES
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError | KafkaConnectionError)
    if isinstance(exc, httpx.HTTPStatusError):
        return transient_http_status(exc.response.status_code)
    return True  # OSError (refused, reset, timeouts), httpx.TransportError, anything unknown


def transient_http_status(status: int) -> bool:
    """Request timeout, rate limited, or a server error: the same request may succeed later."""
    return status in (408, 429) or status >= 500


def clickhouse_code(exc: BaseException) -> int | None:
    """The server's error code (``Code: N.`` in the message when the client did not parse it)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"Code: (\d+)", str(exc))
    return int(found[1]) if found else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt n waits between half and all of ``first_s * 2**(n-1)``,
    never more than ``max_s``; ``attempts=None`` retries until it works (for callers that must not drop data)."""

    first_s: float = 0.2
    max_s: float = 10.0
    attempts: int | None = None

    def wait(self) -> wait_base:
        """Half of each step fixed (so waits grow), half random (so processes spread out)."""
        half_first, half_max = self.first_s / 2, self.max_s / 2
        return wait_exponential(multiplier=half_first, max=half_max) + wait_random_exponential(multiplier=half_first, max=half_max)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), for loops that are not a single call."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(self.wait()(state))

    def retrying(
        self,
        *,
        retry_if: Callable[[BaseException], bool] = is_transient,
        sleep: Sleep = asyncio.sleep,
        on_retry: OnRetry | None = None,
        asked_wait: Callable[[BaseException], float | None] | None = None,
    ) -> AsyncRetrying:
        """A tenacity ``AsyncRetrying``: ``await policy.retrying()(fn, *args)``, or ``async for attempt in ...: with attempt:``.

        What ``retry_if`` rejects (and the last error once ``attempts`` are spent) is raised as itself. ``sleep``
        is injectable (tests, a wait that a stop signal cuts short); ``asked_wait`` returns the wait an error
        itself asks for (an HTTP Retry-After), or None for the backoff's.
        """
        backoff = self.wait()

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            asked = asked_wait(error) if asked_wait is not None and error is not None else None
            return backoff(state) if asked is None else asked

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and error is not None and state.next_action is not None:
                on_retry(error, state.next_action.sleep)

        return AsyncRetrying(
            sleep=sleep,
            stop=stop_never if self.attempts is None else stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_if(exc)),
            before_sleep=before_sleep,
            reraise=True,
        )

    async def call(self, fn: Callable[[], Awaitable[T]], **options: Any) -> T:
        """``fn()`` until it succeeds under this policy (``options`` as for ``retrying``)."""

        async def attempt() -> (
            T
        ):  # a coroutine function of our own: tenacity awaits only those (9.2 returns a lambda's coroutine unawaited)
            return await fn()

        return await self.retrying(**options)(attempt)
