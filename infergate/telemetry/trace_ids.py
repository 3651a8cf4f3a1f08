"""Where new trace and span ids come from: the configured id generator, or for the
SDK's default one, random.getrandbits called in C."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.id_generator import IdGenerator


def id_sources(ids: IdGenerator | None) -> tuple[Callable[[], int], Callable[[], int]]:
    """(new trace id, new span id).

    For the SDK's default generator these are random.getrandbits itself, called in C;
    they may give 0, which is not an id, so callers draw again (records.nonzero).
    Any other generator (OTEL_PYTHON_ID_GENERATOR) is called as it is.
    """
    # Imported here: tracing off never loads the SDK.
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    generator = ids or RandomIdGenerator()
    if type(generator) is not RandomIdGenerator:
        return generator.generate_trace_id, generator.generate_span_id
    return functools.partial(random.getrandbits, 128), functools.partial(random.getrandbits, 64)
