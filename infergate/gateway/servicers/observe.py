"""One inference request as operators see it: its server span and its metrics.

The span joins the caller's trace when the request carries W3C `traceparent`
metadata; the core's spans (cache, queue, backend) become its children through
OpenTelemetry's context. The status code recorded is the one the caller gets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from infergate.gateway.core.errors import GatewayError
from infergate.gateway.status import status_code
from infergate.protocol import inference_pb2 as pb
from infergate.telemetry import Metrics, Tracing

UNKNOWN_MODEL = "_unknown"  # metric label for names the gateway does not serve


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


class InferenceObserver:
    def __init__(self, tracing: Tracing, metrics: Metrics, is_known: Callable[[str], bool]) -> None:
        self._tracing = tracing
        self._tracer = tracing.tracer
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
        return self._traced(message, metadata, rpc, model)

    @contextlib.contextmanager
    def _traced(
        self,
        message: pb.ModelInferRequest,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        rpc: str,
        model: str,
    ) -> Iterator[trace.Span]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"inference.GRPCInferenceService/{rpc}",
            context=self._tracing.extract(metadata),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": rpc,
                "infergate.model": message.model_name,
                "infergate.model_version": message.model_version,
                "infergate.request_id": message.id,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except GatewayError as exc:
                code = status_code(exc)
                self._failed(span, model, code, exc, started)
                raise
            except Exception as exc:
                self._failed(span, model, grpc.StatusCode.INTERNAL, exc, started)
                raise
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
            self._metrics.observe_request(model, "OK", time.perf_counter() - started)

    def _failed(
        self,
        span: trace.Span,
        model: str,
        code: grpc.StatusCode,
        exc: BaseException,
        started: float,
    ) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {exc}"))
        span.record_exception(exc)
        self._metrics.observe_request(model, code.name, time.perf_counter() - started)
