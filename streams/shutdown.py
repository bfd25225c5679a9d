"""Graceful shutdown with a deadline: SIGTERM stops the worker within its grace period, whatever it is doing."""

from __future__ import annotations

import logging
import os
import threading

import faust
import structlog

from gpuledger.logs import quiet_repeats

log = structlog.get_logger()

EXIT_FORCED = 6  # README: the worker did not stop within worker.shutdown_grace_seconds


class GracefulWorker(faust.Worker):
    """A Faust worker that stops within ``grace`` seconds of SIGTERM/SIGINT, whatever it is doing.

    Faust cancels its agents on shutdown, but an insert hung inside ClickHouse's client runs in
    a thread that cannot be cancelled, and the interpreter waits for it at exit. Past the grace
    period the process exits at once: safe, because offsets are only committed for events
    already stored or dead-lettered, so the rest is read again. Hooks mode's signal handlers
    (``_on_sigterm``, ``_on_sigint``; pinned by tests/hostile/test_shutdown.py).
    """

    grace: float = 20.0

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Faust has just replaced the root handlers: repeated library lines (a broker down) are thinned again."""
        super().on_setup_root_logger(logger, level)
        quiet_repeats(logger)

    def _on_sigterm(self) -> None:
        self._arm_deadline("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_deadline("SIGINT")
        super()._on_sigint()

    def _arm_deadline(self, signal_name: str) -> None:
        def force() -> None:
            log.error(
                "worker did not stop within its grace period; exiting now (uncommitted events are read again)",
                signal=signal_name,
                grace_seconds=self.grace,
            )
            os._exit(EXIT_FORCED)

        timer = threading.Timer(self.grace, force)
        timer.daemon = True
        timer.start()
