"""Span export in a process of its own, off the serving interpreter's GIL.

Encoding spans as OTLP protobuf and sending them is Python work: about 30 us a
request for a small model's four spans. In the gateway's process that time comes
out of the event loop's, since every thread shares one GIL. So the gateway only
marshals each batch (C code, under 1 us a span; the event loop does it as the batch
fills, see spans.Sink) and its export thread writes it into a pipe; this module,
run as `python -m infergate.telemetry.export_process`, encodes the spans and sends
them with the OpenTelemetry OTLP/gRPC exporter (see otlp_exporter), on whichever
core is free.

Frames on the pipes: a 4-byte little-endian length (of kind + body), a kind byte,
the body.

    gateway -> exporter   H  hello: marshal((resource bytes, scope bytes)), first
                          S  spans: marshal(list of records: see records.py)
                          F  flush: an 8-byte ticket; answered once every batch
                             before it has been exported (or failed)
    exporter -> gateway   A  the ticket, then 8 bytes: spans lost so far

End of input (the gateway closed the pipe, or died) stops the exporter after the
batches already read. It runs only on CPU time the gateway leaves (see
lower_priority), and ignores SIGINT: Ctrl-C reaches the whole process group,
and the gateway's own shutdown then flushes through it. Its log lines go to the
gateway's stderr.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from infergate.telemetry.otlp_exporter import OtlpGrpcExporter
from infergate.telemetry.records import Record
from infergate.telemetry.spans import EncodingSink, Sink, send_or_count_lost

log = logging.getLogger(__name__)

HELLO, SPANS, FLUSH, ACK = b"H", b"S", b"F", b"A"
_LENGTH = struct.Struct("<I")
_TICKET = struct.Struct("<Q")
_ACK = struct.Struct("<QQ")
# After the exporter dies, the next batch restarts it, but not sooner than this
# (a crash loop must not become a fork loop); batches meanwhile are lost, counted.
RESTART_INTERVAL_S = 5.0
NICENESS = 10


def _frame(kind: bytes, body: bytes) -> bytes:
    return _LENGTH.pack(len(body) + 1) + kind + body


def _write_all(fd: int, data: bytes) -> None:
    """os.write until done; it releases the GIL while the pipe is full."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Frames:
    """Reads frames from a file descriptor, with a timeout where asked."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def next(self, timeout_s: float | None = None) -> tuple[bytes, bytes] | None:
        """The next (kind, body); None at end of input or when timeout_s passes."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if len(self._buffer) >= _LENGTH.size:
                (length,) = _LENGTH.unpack_from(self._buffer)
                end = _LENGTH.size + length
                if len(self._buffer) >= end:
                    kind = bytes(self._buffer[_LENGTH.size : _LENGTH.size + 1])
                    body = bytes(self._buffer[_LENGTH.size + 1 : end])
                    del self._buffer[:end]
                    return kind, body
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                    return None
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        while (frame := self.next()) is not None:
            yield frame


class ProcessSink(Sink):
    """Hands batches to the exporter process; starts it, and restarts it if it dies."""

    def __init__(
        self,
        resource_bytes: bytes,
        scope_bytes: bytes,
        environ: Mapping[str, str],
        command: list[str] | None = None,
    ) -> None:
        self._hello = _frame(HELLO, marshal.dumps((resource_bytes, scope_bytes)))
        self._environ = dict(environ)
        self._command = command or [sys.executable, "-m", __name__]
        self._child: subprocess.Popen[bytes] | None = None
        self._acks: _Frames | None = None
        self._started_at = float("-inf")
        self._tickets = 0
        self.lost_in_exporter = 0  # as the exporter last reported
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self._started_at = time.monotonic()
        try:
            child = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._environ,
                close_fds=True,
            )
        except OSError as exc:
            log.error("tracing: cannot start the span exporter process: %s", exc)
            return
        assert child.stdin is not None and child.stdout is not None
        self._child = child
        self._acks = _Frames(child.stdout.fileno())
        self._write(self._hello)

    def _alive(self) -> subprocess.Popen[bytes] | None:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if child is not None:
            self._gone(f"it exited with code {child.returncode}")
        if time.monotonic() - self._started_at >= RESTART_INTERVAL_S:
            self.restarts += 1
            self._start()
            if self._child is not None:
                log.info("tracing: span exporter restarted (pid %d)", self._child.pid)
        return self._child

    def _gone(self, why: str) -> None:
        log.error("tracing: the span exporter stopped (%s); the next batch restarts it", why)
        child, self._child, self._acks = self._child, None, None
        if child is not None:
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
            if child.poll() is None:
                child.kill()
            child.wait()

    def _write(self, data: bytes) -> bool:
        child = self._child
        if child is None or child.stdin is None:
            return False
        try:
            _write_all(child.stdin.fileno(), data)
            return True
        except OSError as exc:  # BrokenPipeError: it died
            self._gone(str(exc))
            return False

    def prepare(self, records: list[Record]) -> bytes:
        # C code, about 1 us a span: cheap enough for the event loop.
        return _frame(SPANS, marshal.dumps(records))

    def send(self, prepared: Any) -> bool:
        frame: bytes = prepared
        if self._alive() is None:
            return False
        return self._write(frame)

    def flush(self, timeout_s: float) -> bool:
        if self._child is None or self._child.poll() is not None:
            return False
        self._tickets += 1
        ticket = self._tickets
        if not self._write(_frame(FLUSH, _TICKET.pack(ticket))):
            return False
        deadline = time.monotonic() + timeout_s
        while self._acks is not None:
            frame = self._acks.next(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return False
            kind, body = frame
            if kind == ACK:
                answered, self.lost_in_exporter = _ACK.unpack(body)
                if answered >= ticket:
                    return True
        return False

    def shutdown(self, timeout_s: float) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()  # end of input: it exports what it has read and stops
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tracing: the span exporter did not stop in %.0f s; killing it", timeout_s)
            child.kill()
            child.wait()
        child.stdout.close()
        if self.lost_in_exporter:
            log.warning("tracing lost %d spans: their export failed", self.lost_in_exporter)


def serve(frames: _Frames, ack_fd: int) -> int:
    """The exporter's loop: hello, then batches and flushes until end of input."""
    first = frames.next()
    if first is None or first[0] != HELLO:
        log.error("span exporter: no hello from the gateway")
        return 2
    resource_bytes, scope_bytes = marshal.loads(first[1])
    sink = EncodingSink(OtlpGrpcExporter(), resource_bytes, scope_bytes)
    lost = 0
    for kind, body in frames:
        if kind == SPANS:
            records = marshal.loads(body)
            lost += send_or_count_lost(sink, records, records)
        elif kind == FLUSH:
            (ticket,) = _TICKET.unpack(body)
            _write_all(ack_fd, _frame(ACK, _ACK.pack(ticket, lost)))
    sink.shutdown(0)
    return 0


def lower_priority() -> str:
    """Exporting can wait; the gateway's event loop cannot. Returns the policy taken.

    SCHED_IDLE (Linux) where it can be had: such a process never preempts another,
    and the scheduler counts a CPU that runs only it as idle when it places a
    thread that wakes up. At nice 10 alone, the gateway's gRPC poller thread, woken
    hundreds of times a second, kept finding the exporter on the other core and
    preempted the event loop instead (three times as often as with tracing off; its
    CPU per request rose 19%; with SCHED_IDLE it was as with tracing off). The cost:
    on a machine that is busy all the time, spans wait, and past the queue's bound
    they are dropped and counted, as the batch processor does with a slow collector.
    """
    os.nice(NICENESS)  # where SCHED_IDLE is not to be had, a tenth of a core's share
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused
        return f"nice {NICENESS}"
    return "SCHED_IDLE"


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority()
    # Our frames get their own descriptors; anything a library prints goes to stderr.
    in_fd, ack_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s span-exporter %(message)s")
    return serve(_Frames(in_fd), ack_fd)


if __name__ == "__main__":
    sys.exit(main())
