"""structlog setup: JSON lines when not on a terminal, readable colours on one; secrets redacted."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

SECRET_HINTS = ("password", "secret", "token", "api_key", "apikey", "authorization", "webhook")


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Never let a key, password or webhook URL reach a log line, whatever the caller passed."""
    for key in event:
        if any(h in key.lower() for h in SECRET_HINTS) and not key.endswith(("_tokens", "_id")):
            event[key] = "***"
    return event


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger (Faust and aiokafka log through it)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer], foreign_pre_chain=shared
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    quiet_repeats(root)
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class RepeatedLines(logging.Filter):
    """Shows a repeated stdlib log message once per ``every`` seconds, with how many like it were left out.

    The Kafka client logs every failed reconnect and fetch of every one of a process's clients: with its
    broker down, one worker wrote about 400 lines a second ("Unable connect to node ...", "Failed fetch
    messages ..."), gigabytes a day of one fact. Messages are alike when they come from the same logger
    with the same format string (their arguments, such as the node or the error, may differ).
    """

    MAX_KEYS = 1000  # a library that formats its own strings cannot grow this without bound

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # (logger, format) -> [shown at, left out since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now, seen = self.clock(), self._seen.get(key)
        if seen is not None and now - seen[0] < self.every:
            seen[1] += 1
            return False
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            record.msg = f"{record.getMessage()} [{int(seen[1])} more like this in the last {now - seen[0]:.0f} s, not shown]"
            record.args = ()  # already formatted (a tuple: Faust's formatter wraps anything else as one argument)
        return True


def quiet_repeats(logger: logging.Logger, every: float = 30.0) -> None:
    """Give each of ``logger``'s handlers a ``RepeatedLines`` filter (once; Faust's worker replaces the root handlers at start)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatedLines) for f in handler.filters):
            handler.addFilter(RepeatedLines(every))
