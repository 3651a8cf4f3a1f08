"""A new trace's sampling decision as a bound on its id, read once from the sampler.

With one of the SDK's standard samplers (the OTEL_TRACES_SAMPLER values) a new
trace is sampled when its id's low 64 bits are under a bound the sampler fixes, so
Tracing compares against that bound instead of calling the sampler, and making a
result object, for every request. Any other sampler is asked each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

# TraceIdRatioBased decides on the trace id's low 64 bits (for 64-bit trace ids).
TRACE_ID_LOW_BITS = (1 << 64) - 1
_ALWAYS = 1 << 64  # a bound every trace id's low bits are under


def root_bound(sampler: Sampler) -> int | None:
    """The sampler's decision for a new trace (no parent), as a bound: a trace is
    sampled when its id's low 64 bits are under it. Known for the SDK's standard
    samplers (always_on/off, traceidratio, and parentbased_* of those); None for
    any other, which is then asked each time.
    """
    # Imported here: tracing off never loads the SDK.
    from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler, TraceIdRatioBased

    from infergate.telemetry.otel_sdk import parent_based_root, static_decision

    kind = type(sampler)
    # The standard classes and their subclasses that only choose a constructor
    # (ParentBasedTraceIdRatio, _AlwaysOn...), not the decision.
    if isinstance(sampler, ParentBased) and kind.should_sample is ParentBased.should_sample:
        root = parent_based_root(sampler)
        return root_bound(root) if root is not None else None
    if isinstance(sampler, StaticSampler) and kind.should_sample is StaticSampler.should_sample:
        decision = static_decision(sampler)
        if decision is None:
            return None
        return _ALWAYS if decision.is_sampled() else 0  # type: ignore[no-untyped-call]
    if (
        isinstance(sampler, TraceIdRatioBased)
        and kind.should_sample is TraceIdRatioBased.should_sample
    ):
        return int(sampler.bound)
    return None
