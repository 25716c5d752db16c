"""Structured JSON logs on stdout (one object a line), with request context from contextvars.

Lines are rendered with orjson and written in batches: a write system call per access-log
line was a measurable share of a request's CPU (see bench/README.md). A batch goes out
when it reaches 64 KiB, 0.2 s after its first line, before a fork, at exit — and at once
for warnings and errors, so nothing an operator must see waits. What a hard kill (SIGKILL)
can lose is at most the last 0.2 s of access lines.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO, cast

import structlog

from gateway.core import json_bytes
from gateway.core.clock import iso_utc_ms

FLUSH_AFTER_S = 0.2
FLUSH_AT_BYTES = 64 * 1024


class LineSink:
    """Collects rendered lines and writes them out in batches (see the module docstring)."""

    def __init__(self, stream: BinaryIO | TextIO) -> None:
        self.stream = stream
        self._binary = getattr(stream, "buffer", None) if hasattr(stream, "encoding") else stream
        self._lines: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def write(self, line: bytes, urgent: bool = False) -> None:
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            due = urgent or self._size >= FLUSH_AT_BYTES
        if due:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread (CLI, worker threads): write at once
            self.flush()
            return
        if self._flush_loop is not loop:  # none pending, or pending on a loop that has gone
            self._flush_loop = loop
            loop.call_later(FLUSH_AFTER_S, self.flush)

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._size = self._lines, [], 0
            self._flush_loop = None
        if not lines:
            return
        data = b"".join(lines)
        try:
            if self._binary is not None:
                if self._binary is not self.stream:
                    self.stream.flush()  # what print() left in the text layer goes first
                self._binary.write(data)
                self._binary.flush()
            else:
                text_stream = cast(TextIO, self.stream)
                text_stream.write(data.decode())
                text_stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: logs must never break serving
            pass


class _SinkLogger:
    """What structlog calls with each rendered line; the level decides how soon it is written."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: bytes) -> None:
        self._sink.write(message + b"\n")

    debug = info = msg

    def urgent(self, message: bytes) -> None:
        self._sink.write(message + b"\n", urgent=True)

    warning = warn = error = err = critical = exception = fatal = urgent


def _add_timestamp(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = iso_utc_ms(time.time())
    return event


_sink: LineSink | None = None
_access_on = True  # INFO lines are wanted (the configured level is INFO or lower)


def access_line(fields: dict[str, Any]) -> None:
    """Write the per-request access line (SPEC §8) straight to the sink.

    The same JSON object structlog's chain makes (``event``, ``level``, ``ts`` added; the
    request id is already among the fields), without the chain: a quarter of its cost, on
    every request (bench/README.md). Everything else logs through structlog."""
    if _sink is None:
        structlog.get_logger("gateway.access").info("request", **fields)
        return
    if _access_on:
        fields["event"], fields["level"], fields["ts"] = "request", "info", iso_utc_ms(time.time())
        _sink.write(json_bytes.dumps(fields) + b"\n")


def flush() -> None:
    """Write out whatever lines are waiting (before exiting or forking)."""
    if _sink is not None:
        _sink.flush()


def configure(stream: BinaryIO | TextIO | None = None, level: int = logging.INFO) -> BinaryIO | TextIO | None:
    """Log to ``stream`` (stdout by default); returns the stream logged to until now."""
    global _sink, _access_on
    flush()
    previous = _sink.stream if _sink is not None else None
    _sink = sink = LineSink(stream or sys.stdout)
    _access_on = level <= logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=json_bytes.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: _SinkLogger(sink),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; keep their warnings, as single lines on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.ERROR)
    return previous


atexit.register(flush)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush)
