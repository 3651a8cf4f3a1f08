"""One inference request as operators see it: its server span and its metrics.

The span joins the caller's trace when the request carries W3C `traceparent`
metadata; the core's spans (cache, queue, backend) become its children through
the `infergate.telemetry.spans.current` context variable. The status code recorded
is the one the caller gets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import grpc

from infergate.gateway.status import status_code
from infergate.protocol import inference_pb2 as pb
from infergate.schema.errors import GatewayError
from infergate.telemetry import Metrics, Tracing, spans
from infergate.telemetry.spans import Span

UNKNOWN_MODEL = "_unknown"  # metric label for names the gateway does not serve
# Server span names, made once: one string object for all spans of an RPC.
_SPAN_NAMES = {
    rpc: f"inference.GRPCInferenceService/{rpc}" for rpc in ("ModelInfer", "ModelStreamInfer")
}
# rpc.grpc.status_code values: StatusCode.value is an enum property, a Python call.
_CODE_NUMBERS = {code: code.value[0] for code in grpc.StatusCode}


class _Timed:
    """The untraced path: only the request's metrics, at the least cost per request."""

    __slots__ = ("_metrics", "_model", "_started")

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._started = time.perf_counter()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            code = "OK"
        elif isinstance(exc, GatewayError):
            code = status_code(exc).name
        elif isinstance(exc, Exception):
            code = grpc.StatusCode.INTERNAL.name
        else:
            return  # cancelled: the caller left, no status to count
        self._metrics.observe_request(self._model, code, time.perf_counter() - self._started)


class _Traced:
    """The traced path: the request's server span (current for the core) and metrics."""

    __slots__ = ("_metrics", "_model", "_span", "_started", "_token")

    def __init__(self, metrics: Metrics, model: str, span: Span) -> None:
        self._metrics = metrics
        self._model = model
        self._span = span
        self._started = time.perf_counter()
        self._token = spans.current.set(span)

    def __enter__(self) -> Span:
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        spans.current.reset(self._token)
        if exc is None:
            code = grpc.StatusCode.OK
        elif isinstance(exc, GatewayError):
            code = status_code(exc)
        elif isinstance(exc, Exception):
            code = grpc.StatusCode.INTERNAL
        else:  # cancelled: the caller left
            span.set_error("cancelled by the caller")
            span.end()
            return
        span.attributes["rpc.grpc.status_code"] = _CODE_NUMBERS[code]
        if exc is not None:
            span.set_error(f"{code.name}: {exc}", exc)
        span.end()
        self._metrics.observe_request(self._model, code.name, time.perf_counter() - self._started)


class InferenceObserver:
    def __init__(self, tracing: Tracing, metrics: Metrics, is_known: Callable[[str], bool]) -> None:
        self._tracing = tracing
        self._metrics = metrics
        self._is_known = is_known

    def request(
        self,
        message: pb.ModelInferRequest,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        rpc: str = "ModelInfer",
    ) -> contextlib.AbstractContextManager[object]:
        # A garbage model name must not become a metric label of its own.
        model = message.model_name if self._is_known(message.model_name) else UNKNOWN_MODEL
        if not self._tracing.enabled:
            return _Timed(self._metrics, model)
        span = self._tracing.start_request(
            _SPAN_NAMES.get(rpc) or f"inference.GRPCInferenceService/{rpc}",
            metadata,
            {
                "rpc.system": "grpc",
                "rpc.method": rpc,
                "infergate.model": message.model_name,
                "infergate.model_version": message.model_version,
                "infergate.request_id": message.id,
            },
        )
        if span is None:  # not sampled
            return _Timed(self._metrics, model)
        return _Traced(self._metrics, model, span)
