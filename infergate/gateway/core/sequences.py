"""Triton's sequence batcher: the requests of one sequence, in order, on one arm.

Every request to a stateful model (its config has `sequence_batching`) goes through
its SequenceScheduler. A request names its sequence with the parameter
"sequence_id" (a non-zero integer or a non-empty string, its correlation ID) and
marks the first and last requests with "sequence_start" and "sequence_end". The
scheduler

- runs the requests of a sequence one at a time, in the order they arrive, each
  with the control inputs the config names (START, END, READY, CORRID) and, with
  implicit state, the state its predecessor returned (zeros at the start);
- pins a sequence to the arm the router picks for its first request, and runs
  every later one there (the batch queue groups requests by pin, the router never
  fails a pinned batch over): its state, in the model or here, never changes arms;
- lets requests of different sequences share batches in the model's batch queue
  (both strategies: `direct` and `oldest` differ in Triton by how sequences map to
  batch slots of an instance, which infergate does not have; rows are never padded,
  so READY is true in every row);
- forgets a sequence at its end, or once it has been idle (no request queued or
  running) for max_sequence_idle_microseconds (default one second): a later
  request for it is refused, saying why.

What it refuses, each with its own status and touching no other sequence: a
request without sequence_id (INVALID_ARGUMENT), with more than one row
(INVALID_ARGUMENT: one request is one step of one sequence, as in Triton), without
sequence_start for a sequence not open (INVALID_ARGUMENT, Triton's message), for a
sequence dropped after idling (FAILED_PRECONDITION), and sequence_start for an ID
whose sequence is still open (ALREADY_EXISTS; Triton ends the old sequence silently
instead, so two clients that picked the same ID would corrupt each other's state).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from infergate.gateway.core.batching import BatchQueue
from infergate.gateway.core.request import ParameterValue
from infergate.gateway.core.sequence_spec import SequenceId, SequenceSpec
from infergate.schema.errors import (
    AlreadyExists,
    InvalidInput,
    PreconditionFailed,
    QueueFull,
    shown,
)
from infergate.schema.tensors import Tensors

SEQUENCE_ID = "sequence_id"
SEQUENCE_START = "sequence_start"
SEQUENCE_END = "sequence_end"
# Sequences one model version keeps open at once; a start beyond is refused
# (RESOURCE_EXHAUSTED). Each holds its implicit state.
MAX_SEQUENCES = 65536
# Sequences dropped for idling that are remembered, to say so to a late request.
REMEMBER_DROPPED = 4096
# Triton's limit on a string correlation ID.
MAX_STRING_ID = 128


@dataclass(eq=False)
class _Sequence:
    id: SequenceId
    arm: str | None  # the arm it is pinned to
    states: Tensors  # implicit state, by state input name
    last_used: float
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # FIFO: requests in order
    busy: int = 0  # requests waiting for their turn or running


class SequenceScheduler:
    """One sequence model version's open sequences; see the module docstring."""

    def __init__(
        self,
        spec: SequenceSpec,
        queue: BatchQueue,
        pick_arm: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
        max_sequences: int = MAX_SEQUENCES,
    ) -> None:
        self.spec = spec
        self.queue = queue
        self._pick_arm = pick_arm
        self._clock = clock
        self._max_sequences = max_sequences
        # By the time of their last request, oldest first.
        self._open: OrderedDict[SequenceId, _Sequence] = OrderedDict()
        self._dropped: OrderedDict[SequenceId, None] = OrderedDict()

    @property
    def open_sequences(self) -> int:
        return len(self._open)

    async def infer(
        self,
        inputs: Tensors,
        rows: int,
        parameters: Mapping[str, ParameterValue],
        deadline_s: float | None = None,
        requested_timeout_s: float | None = None,
    ) -> Tensors:
        """Run one request of a sequence; its outputs (implicit states included)."""
        model = f"model {shown(self.spec.model)}"
        sequence_id = _sequence_id(parameters, model)
        start = _flag(parameters, SEQUENCE_START)
        end = _flag(parameters, SEQUENCE_END)
        if rows != 1:
            raise InvalidInput(
                f"inference request to {model} must specify batch-size 1 due to requirements "
                f"of sequence batcher: it has {rows} rows (one request is one step of one "
                "sequence)"
            )
        # Before any sequence is touched: a correlation ID the model's CORRID control
        # cannot take is refused here, with nothing opened.
        controls = self.spec.controls_for(start, end, sequence_id)
        now = self._clock()
        self._drop_idle(now)
        sequence = self._open.get(sequence_id)
        if start:
            if sequence is not None:
                raise AlreadyExists(
                    f"sequence {_shown_id(sequence_id)} of {model} is still open: a request "
                    "with sequence_start must use an ID no open sequence has (end it with "
                    f"sequence_end, or wait {self.spec.idle_s:g} s after its last request)"
                )
            if len(self._open) >= self._max_sequences:
                raise QueueFull(
                    f"{model} has {len(self._open)} sequences open, the most it keeps; end "
                    "some (sequence_end) before starting more"
                )
            sequence = _Sequence(sequence_id, self._pick_arm(), self.spec.initial_states(), now)
            self._open[sequence_id] = sequence
            self._dropped.pop(sequence_id, None)
        elif sequence is None:
            if sequence_id in self._dropped:
                raise PreconditionFailed(
                    f"sequence {_shown_id(sequence_id)} of {model} was dropped after being idle "
                    f"for more than {self.spec.idle_s:g} s (max_sequence_idle_microseconds); "
                    "start it again with sequence_start"
                )
            raise InvalidInput(
                f"inference request for sequence {_shown_id(sequence_id)} to {model} must "
                "specify the START flag on the first request of the sequence: no sequence "
                "with this ID is open"
            )
        if end:
            del self._open[sequence_id]  # the ID may start a new sequence at once
        sequence.busy += 1
        self._touch(sequence, now)
        try:
            async with sequence.turn:
                return await self._step(
                    sequence, {**inputs, **controls}, deadline_s, requested_timeout_s
                )
        finally:
            sequence.busy -= 1
            self._touch(sequence, self._clock())

    def _touch(self, sequence: _Sequence, now: float) -> None:
        """Mark it used now: open sequences stay ordered by their last use."""
        sequence.last_used = now
        if self._open.get(sequence.id) is sequence:
            self._open.move_to_end(sequence.id)

    async def _step(
        self,
        sequence: _Sequence,
        inputs: Tensors,
        deadline_s: float | None,
        requested_timeout_s: float | None,
    ) -> Tensors:
        feed = {**inputs, **sequence.states}
        outputs = await self.queue.submit(
            feed, 1, deadline_s, requested_timeout_s, pin=sequence.arm
        )
        for state in self.spec.states:
            # A copy: the output is a row of the whole batch's array.
            sequence.states[state.input] = np.array(outputs[state.output], copy=True)
        return outputs

    def _drop_idle(self, now: float) -> None:
        """Forget sequences idle for longer than the limit, least recently used first;
        one with a request queued or running is never idle."""
        idle_s = self.spec.idle_s
        expired = []
        for sequence in self._open.values():
            if now - sequence.last_used < idle_s:
                break  # it, and every later one, was used more recently
            if not sequence.busy:
                expired.append(sequence.id)
        for sequence_id in expired:
            del self._open[sequence_id]
            self._dropped[sequence_id] = None
            if len(self._dropped) > REMEMBER_DROPPED:
                self._dropped.popitem(last=False)


def _sequence_id(parameters: Mapping[str, ParameterValue], model: str) -> SequenceId:
    value = parameters.get(SEQUENCE_ID)
    if isinstance(value, bool) or value is None or value == 0 or value == "":
        raise InvalidInput(
            f"inference request to {model} must specify a non-zero or non-empty correlation "
            f"ID: it is a sequence model, so every request needs the parameter '{SEQUENCE_ID}'"
        )
    if isinstance(value, int):
        if value < 0:
            value += 2**64  # an int64 parameter carrying a uint64 ID
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_ID:
            raise InvalidInput(
                f"string correlation ID cannot be longer than {MAX_STRING_ID} characters: "
                f"'{SEQUENCE_ID}' has {len(value)}"
            )
        return value
    raise InvalidInput(f"parameter '{SEQUENCE_ID}' must be an integer or a string")


def _flag(parameters: Mapping[str, ParameterValue], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter '{name}' must be a bool")
    return value


def _shown_id(sequence_id: SequenceId) -> str:
    return shown(sequence_id) if isinstance(sequence_id, str) else str(sequence_id)
