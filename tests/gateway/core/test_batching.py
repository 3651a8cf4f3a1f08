"""The batch queue, driven by a fake runtime the test controls exactly."""

from __future__ import annotations

import asyncio
import contextvars

import numpy as np
import pytest

from infergate.gateway.core.arms import Arm
from infergate.gateway.core.batching import BatchPolicy, BatchQueue, Tensors
from infergate.gateway.core.routing import Execution
from infergate.gateway.core.stats import ModelStats
from infergate.schema.errors import BackendFailed, DeadlineExceeded, QueueFull, Unavailable

ARM = Arm("fake", "cpu", "fp32", runtime=None)  # type: ignore[arg-type]


class FakeRuntime:
    """Doubles its input; each call can be held until the test releases it."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.running = 0
        self.max_running = 0
        self.fail_when: float | None = None
        self.bad_rows = False
        self._gate = asyncio.Event()
        if not hold:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    async def __call__(self, inputs: Tensors) -> Execution:
        x = inputs["x"]
        self.batches.append(x.copy())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self._gate.wait()
            await asyncio.sleep(0)
        finally:
            self.running -= 1
        if self.fail_when is not None and (x == self.fail_when).any():
            raise BackendFailed("runtime exploded on cue")
        y = x * 2
        return Execution({"y": y[:-1] if self.bad_rows else y}, ARM, 1000, 0)

    def rows_per_batch(self) -> list[int]:
        return [len(b) for b in self.batches]

    def values_run(self) -> set[float]:
        return {float(v) for b in self.batches for v in b[:, 0]}


def rows(value: float, n: int = 1, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


def queue(runtime: FakeRuntime, **policy: object) -> BatchQueue:
    settings: dict[str, object] = dict(enabled=True, max_batch_size=8, max_queue_delay_s=0.05)
    settings.update(policy)
    return BatchQueue("m", BatchPolicy(**settings), runtime, ModelStats())  # type: ignore[arg-type]


async def test_requests_within_the_delay_form_one_batch() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_queue_delay_s=0.05)
    results = await asyncio.gather(*(q.submit(rows(i), 1) for i in range(3)))
    assert runtime.rows_per_batch() == [3]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], np.full((1, 2), 2 * i))
    await q.aclose()


async def test_a_full_batch_goes_at_once_without_waiting_for_the_delay() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_batch_size=4, max_queue_delay_s=30)
    await asyncio.wait_for(asyncio.gather(*(q.submit(rows(i), 1) for i in range(4))), 5)
    assert runtime.rows_per_batch() == [4]
    await q.aclose()


async def test_a_preferred_size_goes_at_once() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, preferred_batch_sizes=(2,), max_queue_delay_s=30)
    await asyncio.wait_for(asyncio.gather(q.submit(rows(1), 1), q.submit(rows(2), 1)), 5)
    assert runtime.rows_per_batch() == [2]
    await q.aclose()


async def test_rows_are_counted_not_requests_and_outputs_split_back_exactly() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_batch_size=6, max_queue_delay_s=0.05)
    sizes = [1, 3, 2]
    results = await asyncio.gather(*(q.submit(rows(i, n), n) for i, n in enumerate(sizes)))
    assert runtime.rows_per_batch() == [6]
    for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
        assert out["y"].shape == (n, 2)
        np.testing.assert_array_equal(out["y"], np.full((n, 2), 2 * i))


async def test_a_batch_never_exceeds_max_batch_size_rows() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_batch_size=4, max_queue_delay_s=0.02)
    await asyncio.gather(*(q.submit(rows(i, 3), 3) for i in range(3)))
    assert runtime.rows_per_batch() == [3, 3, 3]
    await q.aclose()


async def test_different_non_batch_dims_are_never_stacked() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_queue_delay_s=0.02)
    a, b = await asyncio.gather(q.submit(rows(1, width=2), 1), q.submit(rows(2, width=3), 1))
    assert sorted(runtime.rows_per_batch()) == [1, 1]
    assert a["y"].shape == (1, 2) and b["y"].shape == (1, 3)
    await q.aclose()


async def test_a_full_queue_rejects_at_once() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=1, max_inflight=1, max_queue_size=2)
    first = asyncio.create_task(q.submit(rows(0), 1))
    await asyncio.sleep(0.01)  # first is running (held); the queue is empty
    waiting = [asyncio.create_task(q.submit(rows(i), 1)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull, match="max_queue_size"):
        await q.submit(rows(3), 1)
    runtime.release()
    await asyncio.gather(first, *waiting)
    assert runtime.values_run() == {0, 1, 2}
    await q.aclose()


async def test_a_request_whose_time_runs_out_in_the_queue_is_never_executed() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=1, max_inflight=1)
    first = asyncio.create_task(q.submit(rows(0), 1))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceeded):
        await q.submit(rows(7), 1, deadline_s=0.02)
    runtime.release()
    await first
    await asyncio.sleep(0.01)
    assert 7 not in runtime.values_run()
    await q.aclose()


async def test_the_models_default_timeout_applies_and_a_request_may_only_shorten_it() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(
        runtime,
        max_batch_size=1,
        max_inflight=1,
        default_timeout_s=0.03,
        allow_timeout_override=True,
    )
    first = asyncio.create_task(q.submit(rows(0), 1))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded):
        await q.submit(rows(5), 1, requested_timeout_s=10.0)  # cannot lengthen
    assert loop.time() - started < 5
    runtime.release()
    await first
    await q.aclose()


async def test_a_cancelled_request_is_dropped_before_its_batch_runs() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=1, max_inflight=1)
    first = asyncio.create_task(q.submit(rows(0), 1))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(q.submit(rows(9), 1))
    await asyncio.sleep(0.01)
    doomed.cancel()
    runtime.release()
    await first
    await asyncio.sleep(0.02)
    assert doomed.cancelled() and 9 not in runtime.values_run()
    await q.aclose()


async def test_a_backend_error_fails_only_its_own_batch() -> None:
    runtime = FakeRuntime()
    runtime.fail_when = 13
    q = queue(runtime, max_batch_size=2, max_queue_delay_s=0.02)
    results = await asyncio.gather(
        *(q.submit(rows(v), 1) for v in (13, 1, 2, 3)), return_exceptions=True
    )
    assert runtime.rows_per_batch() == [2, 2]
    assert isinstance(results[0], BackendFailed) and isinstance(results[1], BackendFailed)
    assert "exploded" in str(results[0])
    assert [float(r["y"][0, 0]) for r in results[2:]] == [4.0, 6.0]  # type: ignore[index]
    await q.aclose()


async def test_outputs_that_do_not_split_by_rows_fail_the_batch_clearly() -> None:
    runtime = FakeRuntime()
    runtime.bad_rows = True
    q = queue(runtime, max_queue_delay_s=0.02)
    results = await asyncio.gather(
        q.submit(rows(1), 1), q.submit(rows(2), 1), return_exceptions=True
    )
    assert all(isinstance(r, BackendFailed) and "does not split" in str(r) for r in results)
    await q.aclose()


async def test_a_lone_request_answered_with_too_few_rows_fails_clearly() -> None:
    """Not only when batched: a 3-row request answered with 2 rows is a runtime fault."""
    runtime = FakeRuntime()
    runtime.bad_rows = True
    q = queue(runtime, max_queue_delay_s=0.0)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with pytest.raises(BackendFailed, match="does not split into the call's 3 input rows"):
        await q.submit({"x": x}, 3)
    await q.aclose()


async def test_batches_in_flight_are_bounded() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=1, max_inflight=2)
    tasks = [asyncio.create_task(q.submit(rows(i), 1)) for i in range(6)]
    await asyncio.sleep(0.02)
    assert runtime.running == 2 and q.depth == 4
    runtime.release()
    await asyncio.gather(*tasks)
    assert runtime.max_running == 2
    await q.aclose()


async def test_while_slots_are_busy_requests_accumulate_into_a_bigger_batch() -> None:
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=8, max_inflight=1, max_queue_delay_s=0)
    tasks = [asyncio.create_task(q.submit(rows(0), 1))]
    await asyncio.sleep(0.01)  # the first runs alone (no delay) and holds the one slot
    tasks += [asyncio.create_task(q.submit(rows(i), 1)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    runtime.release()
    await asyncio.gather(*tasks)
    assert runtime.rows_per_batch() == [1, 5]
    await q.aclose()


async def test_the_next_batch_starts_before_the_finished_one_is_answered() -> None:
    # The runtime must not sit idle while the event loop answers a batch's requests.
    runtime = FakeRuntime(hold=True)
    q = queue(runtime, max_batch_size=8, max_inflight=1, max_queue_delay_s=0)

    async def first() -> int:
        await q.submit(rows(0), 1)
        return len(runtime.batches)  # batches started by the time this caller resumes

    task = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(q.submit(rows(i), 1)) for i in range(1, 4)]
    await asyncio.sleep(0.01)
    assert runtime.rows_per_batch() == [1]  # the rest wait for the one slot
    runtime.release()
    assert await task == 2
    await asyncio.gather(*others)
    assert runtime.rows_per_batch() == [1, 3]
    await q.aclose()


async def test_a_request_arriving_while_the_delay_timer_runs_joins_the_batch() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_batch_size=8, max_queue_delay_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.create_task(q.submit(rows(1), 1))
    await asyncio.sleep(0.02)
    await asyncio.gather(first, q.submit(rows(2), 1))
    assert runtime.rows_per_batch() == [2]
    assert loop.time() - started >= 0.045  # sent when the oldest request's delay was up
    await q.aclose()


REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


async def test_a_batch_does_not_run_in_the_context_of_the_request_that_dispatched_it() -> None:
    # A batch serves many requests: the first one's span (a context variable) must
    # not become the batch's.
    seen: list[str] = []
    runtime = FakeRuntime()

    async def execute(inputs: Tensors) -> Execution:
        seen.append(REQUEST_VAR.get())
        return await runtime(inputs)

    q = BatchQueue("m", BatchPolicy(enabled=True, max_batch_size=8), execute, ModelStats())

    async def request(i: int) -> None:
        REQUEST_VAR.set(f"request {i}")
        await q.submit(rows(i), 1)

    await asyncio.gather(*(request(i) for i in range(3)))
    assert seen and set(seen) == {"none"}
    await q.aclose()


async def test_batching_off_runs_each_request_alone() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, enabled=False)
    await asyncio.gather(*(q.submit(rows(i), 1) for i in range(4)))
    assert runtime.rows_per_batch() == [1, 1, 1, 1]
    await q.aclose()


async def test_closing_drains_what_is_queued_then_refuses() -> None:
    runtime = FakeRuntime()
    q = queue(runtime, max_queue_delay_s=0.05)
    tasks = [asyncio.create_task(q.submit(rows(i), 1)) for i in range(3)]
    await asyncio.sleep(0)
    await q.aclose(drain=True)
    assert [float(t.result()["y"][0, 0]) for t in tasks] == [0.0, 2.0, 4.0]
    with pytest.raises(Unavailable):
        await q.submit(rows(1), 1)


async def test_statistics_count_rows_batches_and_queue_time() -> None:
    runtime = FakeRuntime()
    stats = ModelStats()
    q = BatchQueue(
        "m", BatchPolicy(enabled=True, max_batch_size=8, max_queue_delay_s=0.02), runtime, stats
    )
    await asyncio.gather(q.submit(rows(1, 2), 2), q.submit(rows(2, 3), 3))
    assert stats.inference_count == 5 and stats.execution_count == 1
    assert stats.queue.count == 2 and stats.compute_infer.count == 2
    assert list(stats.batches) == [5]
    await q.aclose()


async def test_no_waiting_when_the_model_says_it_does_not_pay() -> None:
    runtime = FakeRuntime()
    pays = False
    q = BatchQueue(
        "m",
        BatchPolicy(enabled=True, max_batch_size=8, max_queue_delay_s=30),
        runtime,
        ModelStats(),
        waiting_pays=lambda: pays,
    )
    await asyncio.wait_for(q.submit(rows(1), 1), 5)  # would wait 30 s if waiting paid
    assert runtime.rows_per_batch() == [1]
    await q.aclose()


def test_a_wake_up_already_due_under_uvloop_does_not_break_the_next_one() -> None:
    # uvloop answers call_at for a time already past with a plain Handle, without
    # when(): the next wake-up then raised AttributeError inside a batch's task, as it
    # freed its slot, and that batch's requests were never answered (found with
    # `--max-inflight-batches 2`: 14 of perf_analyzer's 16 requests hung).
    import uvloop

    async def scenario() -> None:
        runtime = FakeRuntime()
        q = queue(runtime, max_queue_delay_s=0.05)
        loop = asyncio.get_running_loop()
        q._wake_at(loop.time() - 1.0)
        q._wake_at(loop.time() + 1.0)
        answer = await asyncio.wait_for(q.submit(rows(3), 1), 5)
        assert float(answer["y"][0, 0]) == 6.0
        await q.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
