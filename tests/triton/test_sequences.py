"""The sequence scheduler (infergate.gateway.core.sequences) on its own, with a
stand-in batch queue whose timing the tests control, and in a gateway whose model
has two arms under a round-robin policy (a sequence stays on its arm)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infergate.gateway.core.config_text import parse_config_text
from infergate.gateway.core.sequence_spec import SequenceSpec
from infergate.gateway.core.sequences import SequenceScheduler
from infergate.gateway.server import GatewayServer
from infergate.schema.errors import (
    AlreadyExists,
    InvalidInput,
    ModelLoadError,
    PreconditionFailed,
    QueueFull,
)
from infergate.settings import Settings
from tests import triton_models

CONFIG = """
name: "m"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 1000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0.5, 2.5 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def spec_of(text: str = CONFIG) -> SequenceSpec:
    spec = SequenceSpec.from_config(parse_config_text(text).config)
    assert spec is not None
    return spec


class FakeQueue:
    """Runs each submitted step after a random short wait; records what it saw."""

    def __init__(self) -> None:
        self.feeds: list[tuple[dict[str, np.ndarray], str | None]] = []
        self.running: set[int] = set()  # sequence IDs (CORRID) with a step running
        self.overlaps = 0
        self.rng = random.Random(3)

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        rows: int,
        deadline_s: float | None = None,
        requested_timeout_s: float | None = None,
        pin: str | None = None,
    ) -> dict[str, np.ndarray]:
        corrid = int(inputs["CORRID"][0, 0])
        if corrid in self.running:
            self.overlaps += 1
        self.running.add(corrid)
        self.feeds.append((inputs, pin))
        await asyncio.sleep(self.rng.random() / 200)
        self.running.discard(corrid)
        total = inputs["INPUT"] + inputs["S_IN"] * (1 - inputs["START"])
        return {"OUTPUT": total, "S_OUT": total}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(queue: FakeQueue, clock: Clock | None = None, **kw: Any) -> SequenceScheduler:
    picks = iter(["arm-a", "arm-b", "arm-c", "arm-d"] * 100)
    return SequenceScheduler(
        spec_of(),
        queue,  # type: ignore[arg-type]
        lambda: next(picks),
        clock=clock or Clock(),
        **kw,
    )


def params(sequence_id: object, start: bool = False, end: bool = False) -> dict[str, Any]:
    return {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}


def one(value: int) -> dict[str, np.ndarray]:
    return {"INPUT": np.full((1, 1), value, np.int32)}


async def test_controls_and_state_are_supplied() -> None:
    queue = FakeQueue()
    s = scheduler(queue)
    first = await s.infer(one(5), 1, params(7, start=True))
    second = await s.infer(one(6), 1, params(7, end=True))
    assert int(first["OUTPUT"][0, 0]) == 5 and int(second["OUTPUT"][0, 0]) == 11
    feed0, feed1 = (feed for feed, _ in queue.feeds)
    assert feed0["START"].tolist() == [[1]] and feed0["START"].dtype == np.int32
    assert feed1["START"].tolist() == [[0]]
    assert feed0["END"].tolist() == [[0.5]] and feed1["END"].tolist() == [[2.5]]
    assert feed0["END"].dtype == np.float32
    assert feed0["READY"].dtype == np.bool_ and feed0["READY"].tolist() == [[True]]
    assert feed0["CORRID"].dtype == np.uint64 and feed0["CORRID"].tolist() == [[7]]
    assert feed0["S_IN"].tolist() == [[0]]  # zeros at the start
    assert feed1["S_IN"].tolist() == [[5]]  # the state the first step returned
    assert s.open_sequences == 0  # ended


async def test_steps_of_a_sequence_run_in_order_one_at_a_time() -> None:
    queue = FakeQueue()
    s = scheduler(queue)
    await asyncio.gather(*(s.infer(one(0), 1, params(i, start=True)) for i in (1, 2, 3)))
    # Ten steps of each of three sequences, all submitted at once.
    steps = [s.infer(one(v), 1, params(i)) for v in range(1, 11) for i in (1, 2, 3)]
    outputs = await asyncio.gather(*steps)
    sums = [int(o["OUTPUT"][0, 0]) for o in outputs]
    expected = np.cumsum(range(1, 11)).tolist()
    for i in range(3):
        assert sums[i::3] == expected
    assert queue.overlaps == 0
    # Different sequences did run side by side.
    assert len({pin for _, pin in queue.feeds}) == 3


async def test_a_sequence_keeps_its_arm() -> None:
    queue = FakeQueue()
    s = scheduler(queue)
    for sequence_id in (1, 2):
        await s.infer(one(1), 1, params(sequence_id, start=True))
    for _ in range(3):
        for sequence_id in (1, 2):
            await s.infer(one(1), 1, params(sequence_id))
    pins = {}
    for feed, pin in queue.feeds:
        pins.setdefault(int(feed["CORRID"][0, 0]), set()).add(pin)
    assert pins == {1: {"arm-a"}, 2: {"arm-b"}}


async def test_refusals_leave_other_sequences_alone() -> None:
    s = scheduler(FakeQueue())
    await s.infer(one(3), 1, params(1, start=True))
    with pytest.raises(AlreadyExists, match="still open"):
        await s.infer(one(1), 1, params(1, start=True))
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        await s.infer(one(1), 1, params(2))
    with pytest.raises(InvalidInput, match="non-zero or non-empty correlation ID"):
        await s.infer(one(1), 1, {})
    with pytest.raises(InvalidInput, match="non-zero or non-empty correlation ID"):
        await s.infer(one(1), 1, params(""))
    with pytest.raises(InvalidInput, match="batch-size 1"):
        await s.infer({"INPUT": np.ones((2, 1), np.int32)}, 2, params(3, start=True))
    with pytest.raises(InvalidInput, match="must be an integer, not a string"):
        await s.infer(one(1), 1, params("abc", start=True))
    with pytest.raises(InvalidInput, match="must be a bool"):
        await s.infer(one(1), 1, {"sequence_id": 4, "sequence_start": 1})
    with pytest.raises(InvalidInput, match="longer than 128"):
        await s.infer(one(1), 1, params("x" * 129, start=True))
    assert s.open_sequences == 1
    out = await s.infer(one(4), 1, params(1, end=True))
    assert int(out["OUTPUT"][0, 0]) == 7


async def test_an_int64_parameter_carries_a_uint64_id() -> None:
    queue = FakeQueue()
    s = scheduler(queue)
    await s.infer(one(1), 1, params(-1, start=True, end=True))  # 2**64 - 1 on the wire
    assert queue.feeds[0][0]["CORRID"].tolist() == [[2**64 - 1]]


async def test_idle_sequences_are_dropped_busy_ones_kept() -> None:
    clock = Clock()
    queue = FakeQueue()
    s = scheduler(queue, clock)
    await s.infer(one(1), 1, params(1, start=True))
    await s.infer(one(1), 1, params(2, start=True))
    clock.now += 0.6
    await s.infer(one(1), 1, params(2))  # 2 was used more recently than 1
    clock.now += 0.6
    with pytest.raises(PreconditionFailed, match="idle"):
        await s.infer(one(1), 1, params(1))
    assert int((await s.infer(one(1), 1, params(2)))["OUTPUT"][0, 0]) == 3
    # A dropped ID may start again.
    assert int((await s.infer(one(9), 1, params(1, start=True)))["OUTPUT"][0, 0]) == 9


async def test_a_sequence_with_a_step_running_is_not_idle() -> None:
    clock = Clock()
    gate = asyncio.Event()

    class SlowQueue(FakeQueue):
        async def submit(self, inputs: dict[str, np.ndarray], *a: Any, **k: Any) -> Any:
            await gate.wait()
            return await super().submit(inputs, *a, **k)

    s = scheduler(SlowQueue(), clock)
    await asyncio.gather(s.infer(one(1), 1, params(1, start=True)), _open_gate(gate))
    gate.clear()
    slow = asyncio.ensure_future(s.infer(one(1), 1, params(1)))
    await asyncio.sleep(0.01)
    clock.now += 5.0  # long past the idle limit, but its step is still running
    await asyncio.gather(s.infer(one(1), 1, params(2, start=True)), _open_gate(gate))
    assert int((await slow)["OUTPUT"][0, 0]) == 2
    assert int((await s.infer(one(1), 1, params(1, end=True)))["OUTPUT"][0, 0]) == 3


async def _open_gate(gate: asyncio.Event) -> None:
    await asyncio.sleep(0.01)
    gate.set()


async def test_open_sequences_are_bounded() -> None:
    s = scheduler(FakeQueue(), max_sequences=2)
    await s.infer(one(1), 1, params(1, start=True))
    await s.infer(one(1), 1, params(2, start=True))
    with pytest.raises(QueueFull, match="sequences open"):
        await s.infer(one(1), 1, params(3, start=True))
    await s.infer(one(1), 1, params(1, end=True))
    await s.infer(one(1), 1, params(3, start=True))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START } ] } ]',
            "exactly one",
        ),
        (
            'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START '
            "int32_false_true: [ 0, 1, 2 ] } ] } ]",
            "two values",
        ),
        (
            'control_input [ { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID '
            "data_type: TYPE_FP32 } ] } ]",
            "TYPE_UINT64",
        ),
        (
            'control_input [ { name: "S" control [ { kind: CONTROL_SEQUENCE_START '
            'int32_false_true: [ 0, 1 ] } ] }, { name: "T" control [ { kind: '
            "CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ]",
            "more than one",
        ),
        (
            'state [ { input_name: "A" output_name: "B" data_type: TYPE_INT32 dims: [ 1 ] '
            'initial_state: { data_type: TYPE_INT32 dims: [ 1 ] data_file: "f" name: "i" } } ]',
            "data_file is not supported",
        ),
    ],
)
def test_bad_sequence_blocks_fail_the_load(block: str, message: str) -> None:
    config = parse_config_text(f'name: "m" sequence_batching {{ {block} }}').config
    with pytest.raises(ModelLoadError, match=message):
        SequenceSpec.from_config(config)


# ---- in a gateway: two arms, round robin -----------------------------------------------


@pytest.fixture
def two_arm_repository(tmp_path: Path) -> Iterator[Path]:
    repo = tmp_path / "repo"
    triton_models.build(repo, ["simple_accumulator"])
    config = (repo / "simple_accumulator" / "config.pbtxt").read_text()
    # No platform: every backend that loads ONNX is an arm; batches alternate arms.
    config = config.replace('platform: "onnxruntime_onnx"', 'routing { policy: "round_robin" }')
    (repo / "simple_accumulator" / "config.pbtxt").write_text(config)
    yield repo


async def test_sequences_stay_on_their_arm_under_round_robin(two_arm_repository: Path) -> None:
    from infergate.gateway.core.request import InferRequest, InputTensor

    server = GatewayServer(
        Settings(metrics_port=0, model_repository=two_arm_repository, port=0, use_gpu=False)
    )
    await server.start()
    try:
        model = server.core.model("simple_accumulator")
        if len(model.arms) < 2:
            pytest.skip("only one backend here loads ONNX")

        def request(sequence_id: int, value: int, start: bool = False) -> InferRequest:
            data = np.full((1, 1), value, np.int32)
            return InferRequest(
                "simple_accumulator",
                "",
                "",
                [InputTensor("INPUT", "INT32", (1, 1), data)],
                parameters=params(sequence_id, start=start),
            )

        for sequence_id in (1, 2):
            before = [arm.batches for arm in model.arms]
            sums = [
                int(
                    (await server.core.infer(request(sequence_id, v, start=v == 1)))
                    .outputs[0]
                    .data[0, 0]
                )
                for v in range(1, 6)
            ]
            assert sums == [1, 3, 6, 10, 15]
            ran = [arm.batches - b for arm, b in zip(model.arms, before, strict=True)]
            assert sorted(ran) == [0, 5], ran  # one arm ran all five steps
    finally:
        await server.stop()
