"""structlog setup: JSON lines when not on a terminal, readable colours on one; secrets redacted."""

from __future__ import annotations

import logging
import sys
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
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
