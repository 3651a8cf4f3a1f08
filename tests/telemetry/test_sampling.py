"""New traces are sampled as the SDK's sampler would, without asking it each time, and
get their ids from the configured generator."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from infergate.telemetry.sampling import root_bound
from infergate.telemetry.spans import BatchSettings, ExportPipeline, Span
from infergate.telemetry.tracing import Tracing
from tests.telemetry.test_spans import Threads

LOW_64 = (1 << 64) - 1


class EvenOnly(Sampler):
    """Not one of the SDK's: samples traces whose id is even."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: object = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if trace_id % 2 == 0 else Decision.DROP)

    def get_description(self) -> str:
        return "EvenOnly"


class Counting(IdGenerator):
    """Ids 1, 2, 3... so a test can tell they came from here."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return next(self._next)


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        ALWAYS_OFF,
        DEFAULT_ON,
        DEFAULT_OFF,
        TraceIdRatioBased(0.25),
        ParentBasedTraceIdRatio(0.1),
        ParentBased(TraceIdRatioBased(0.5)),
    ],
    ids=lambda s: s.get_description()[:40],
)
def test_the_bound_decides_a_new_trace_as_the_sampler_does(sampler: Sampler) -> None:
    bound = root_bound(sampler)
    assert bound is not None
    ids = random.Random(8)
    for trace_id in [ids.getrandbits(128) for _ in range(4000)] + [1, LOW_64, 1 << 64]:
        sdk = sampler.should_sample(None, trace_id, "rpc", SpanKind.SERVER)
        assert (trace_id & LOW_64 < bound) == sdk.decision.is_sampled(), hex(trace_id)
        assert sdk.trace_state is None  # a new trace has no state to carry


def test_any_other_sampler_is_asked_for_every_trace() -> None:
    assert root_bound(EvenOnly()) is None
    assert root_bound(ParentBased(EvenOnly())) is None
    tracing = Tracing(ExportPipeline(Threads(), BatchSettings(60.0, 64, 64)), EvenOnly(), None)
    started = [tracing.start_request("rpc", None, {}) for _ in range(200)]
    sampled = [span for span in started if span is not None]
    assert 50 < len(sampled) < 150  # about half, and only even trace ids
    assert all(span.trace_id % 2 == 0 for span in sampled)
    tracing.shutdown()


def test_ids_come_from_a_configured_generator() -> None:
    tracing = Tracing(ExportPipeline(Threads(), BatchSettings(60.0, 64, 64)), ALWAYS_ON, Counting())
    span = tracing.start_request("rpc", None, {})
    assert span is not None and (span.trace_id, span.span_id) == (1, 2)
    child = span.child("cache lookup")
    assert (child.trace_id, child.span_id, child.parent_span_id) == (1, 3, 2)
    tracing.shutdown()


def test_the_default_generator_never_gives_a_zero_id() -> None:
    pipeline = ExportPipeline(Threads(), BatchSettings(60.0, 64, 64))
    draws = iter([0, 0, 7])  # random.getrandbits can return 0, which is not an id
    span = Span(pipeline, lambda: next(draws), "rpc", 1, 0, 2, 0, {})
    assert span.span_id == 7
    tracing = Tracing(pipeline, ALWAYS_ON, RandomIdGenerator())
    started = [tracing.start_request("rpc", None, {}) for _ in range(100)]
    assert all(s is not None and s.trace_id and s.span_id for s in started)
    assert len({s.trace_id for s in started if s is not None}) == 100
    tracing.shutdown()
