"""Repeated library log lines are thinned (``gpuledger.logs.RepeatedLines``); the first and the count are kept.

A worker whose broker was down wrote about 400 aiokafka lines a second; these tests drive the filter with a
fake clock, then check that the real worker's logging setup (Faust's, which replaces the root handlers)
still carries it.
"""

from __future__ import annotations

import logging

from mode.utils.logging import ExtensionFormatter

from gpuledger.logs import RepeatedLines
from streams.shutdown import GracefulWorker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeated_message_is_shown_once_per_window_with_how_many_were_left_out() -> None:
    clock = Clock()
    lines = RepeatedLines(every=30.0, clock=clock)
    shown = [r for n in range(1000) if lines.filter(r := record("Unable connect to node with id %s: %s", n % 3, "refused"))]
    assert len(shown) == 1 and shown[0].getMessage() == "Unable connect to node with id 0: refused"
    clock.now = 31.0
    later = record("Unable connect to node with id %s: %s", 2, "refused 100%")
    assert lines.filter(later)
    assert later.getMessage() == "Unable connect to node with id 2: refused 100% [999 more like this in the last 31 s, not shown]"
    assert "999 more like this" in ExtensionFormatter(fmt="%(message)s").format(later)  # Faust's worker formatter re-reads the args
    clock.now = 32.0
    assert not lines.filter(record("Unable connect to node with id %s: %s", 1, "refused"))


def test_different_messages_and_loggers_are_counted_apart() -> None:
    lines = RepeatedLines(every=30.0, clock=Clock())
    assert lines.filter(record("Failed fetch messages from %s: %s", 1, "x"))
    assert lines.filter(record("Unable to update metadata from %s", [1]))
    assert lines.filter(record("Failed fetch messages from %s: %s", 1, "x", name="aiokafka.consumer.fetcher"))
    assert not lines.filter(record("Unable to update metadata from %s", [2]))


def test_a_quiet_message_is_never_held_back() -> None:
    clock = Clock()
    lines = RepeatedLines(every=30.0, clock=clock)
    for n in range(5):
        clock.now = n * 31.0
        message = record("rebalance %s", n)
        assert lines.filter(message) and message.getMessage() == f"rebalance {n}"


def test_the_worker_keeps_the_filter_after_faust_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        worker = GracefulWorker.__new__(GracefulWorker)  # the logging set-up only; the app is never started
        worker.loglevel, worker.logfile, worker.logging_config, worker.loghandlers = "INFO", None, None, []
        worker.redirect_stdouts, worker.spinner = False, None
        worker._setup_logging()
        assert root.handlers and all(any(isinstance(f, RepeatedLines) for f in h.filters) for h in root.handlers)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
