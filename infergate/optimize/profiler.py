"""Measure arms in process: latency, throughput, CPU, memory and cost per batch size.

`profile_arms` takes loaded models (any LoadedModel: the fp32 artifact, each
variant, on each backend and device) and, for every batch size and concurrency
(threads calling at once), runs them for a short while and records:
- p50/p90/p99 and mean latency per call (perf_counter around `infer`);
- throughput in rows per second (rows done / wall time, all threads together);
- CPU time per row: the whole process's (getrusage: includes the runtime's own
  thread pools) and the calling threads' alone (thread_time);
- resident memory before and after (the growth a batch size costs);
- cost per 1000 inferences: the device's price per hour over the throughput.
Arms take turns: each one's time is split into `rounds` windows run in rotation with
the other arms', so that a neighbour's burst of load on a shared machine is spread
over all arms instead of falling on one.

Then it names the best arm for each objective: lowest p99 at batch 1 (within the
latency budget, if one is given), highest throughput and lowest cost among the
measurements whose p99 stays within the budget. It decides on p99, not p50: the tail
is what callers wait for.

Default prices (USD per device hour, roughly on-demand cloud prices for a couple of
vCPUs and one inference GPU): cpu 0.10, cuda 1.20. Override per call.

`summarize` and `choose_best` are reusable by a measurement over gRPC, which
times calls the same way but from outside the process.
"""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from infergate.backends.base import LoadedModel
from infergate.optimize.data import DataSet
from infergate.optimize.progress import ProgressCallback, ProgressSpan, no_progress
from infergate.schema import datatypes
from infergate.schema.errors import InvalidInput
from infergate.schema.tensors import VARIABLE

DEFAULT_PRICES_PER_HOUR: Mapping[str, float] = {"cpu": 0.10, "cuda": 1.20}
LATENCY, THROUGHPUT, COST = "latency", "throughput", "cost"

Inputs = Callable[[int], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ProfileArm:
    """One loaded way to run the model, named as the report shows it."""

    name: str
    model: LoadedModel
    backend: str = ""
    variant: str = "fp32"
    device_kind: str = ""  # "" : from model.device ("cuda:0" -> "cuda")
    load_s: float | None = None  # how long loading took, if the caller measured it
    load_rss_bytes: int | None = None  # resident memory loading it added, likewise


@dataclass(frozen=True)
class ProfileSettings:
    batch_sizes: tuple[int, ...] = (1, 8)  # the model's max batch size is added
    concurrency: tuple[int, ...] = (1, 2)
    duration_s: float = 1.0  # per arm, batch size and concurrency
    min_calls: int = 20  # even if that takes longer than duration_s
    max_calls: int = 100_000
    warmup_calls: int = 3
    # Each arm's time is split into this many windows, taken in turn with the other
    # arms' (arm A, B, C, A, B, C, ...), so a neighbour's burst on a shared machine
    # lands on every arm rather than on whichever ran at that moment.
    rounds: int = 3
    latency_budget_ms: float | None = None
    prices_per_hour: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_PRICES_PER_HOUR)
    )
    seed: int = 0  # for the random inputs

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InvalidInput(f"batch sizes must be at least 1, not {self.batch_sizes}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise InvalidInput(f"concurrency must be at least 1, not {self.concurrency}")
        if self.rounds < 1:
            raise InvalidInput(f"rounds must be at least 1, not {self.rounds}")
        if not self.duration_s > 0 or self.min_calls < 1 or self.max_calls < self.min_calls:
            raise InvalidInput("duration_s must be > 0 and 1 <= min_calls <= max_calls")
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise InvalidInput(f"latency budget must be > 0 ms, not {self.latency_budget_ms}")
        bad = {k: v for k, v in self.prices_per_hour.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise InvalidInput(f"prices per hour must be finite and >= 0: {bad}")


@dataclass(frozen=True)
class ArmInfo:
    name: str
    backend: str
    variant: str
    device: str
    device_kind: str
    price_per_hour: float | None
    load_s: float | None
    load_rss_bytes: int | None


@dataclass(frozen=True)
class Measurement:
    arm: str
    batch_size: int
    concurrency: int
    calls: int
    rows: int
    wall_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rows_s: float
    cpu_ms_per_row: float | None  # the whole process (runtime thread pools included)
    caller_cpu_ms_per_row: float | None  # the calling threads only
    rss_delta_bytes: int | None
    cost_per_1000_usd: float | None


@dataclass(frozen=True)
class Best:
    objective: str  # LATENCY, THROUGHPUT or COST
    arm: str | None  # None: no arm met the budget
    batch_size: int | None
    concurrency: int | None
    value: float | None
    unit: str
    note: str


@dataclass(frozen=True)
class ProfileReport:
    model: str
    arms: tuple[ArmInfo, ...]
    measurements: tuple[Measurement, ...]
    best: tuple[Best, ...]
    settings: Mapping[str, object]
    created_unix: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def best_for(self, objective: str) -> Best | None:
        return next((b for b in self.best if b.objective == objective), None)


def profile_arms(
    arms: Sequence[ProfileArm],
    max_batch_size: int,
    settings: ProfileSettings | None = None,
    inputs: Inputs | DataSet | None = None,
    model: str = "",
    progress: ProgressCallback = no_progress,
) -> ProfileReport:
    """Measure every arm at every batch size and concurrency; see the module docstring.

    `inputs` gives a batch of n rows: a function of n, a DataSet (rows taken in turn),
    or None for random floats in [0, 1) shaped by the first arm's inputs.
    """
    settings = settings or ProfileSettings()
    if not arms:
        raise InvalidInput("nothing to profile: no arms given")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise InvalidInput(f"arm names must be unique: {names}")
    _same_inputs(arms)
    batches = _batch_sizes(settings.batch_sizes, max_batch_size)
    make = _inputs(inputs, arms[0].model, max_batch_size > 0, settings.seed)
    span = ProgressSpan(progress)
    configs = [(b, c) for b in batches for c in sorted(set(settings.concurrency))]
    infos = tuple(_info(a, settings) for a in arms)
    price = {i.name: i.price_per_hour for i in infos}
    windows: dict[tuple[str, int, int], list[_Window]] = {}
    total = len(configs) * settings.rounds * len(arms)
    step = 0
    for batch, threads in configs:
        feed = make(batch)
        for arm in arms:
            for _ in range(settings.warmup_calls):
                arm.model.infer(feed)
        for _ in range(settings.rounds):
            for arm in arms:
                span.report("profile", step / total, f"{arm.name}: batch {batch} x {threads}")
                step += 1
                window = _window(arm.model, feed, threads, settings)
                windows.setdefault((arm.name, batch, threads), []).append(window)
    measured = [
        _merge(arm.name, batch, threads, windows[(arm.name, batch, threads)], price[arm.name])
        for arm in arms
        for batch, threads in configs
    ]
    span.done("profile", f"{len(measured)} measurements")
    return ProfileReport(
        model=model,
        arms=infos,
        measurements=tuple(measured),
        best=choose_best(measured, settings.latency_budget_ms),
        settings={
            **asdict(settings),
            "batch_sizes": list(batches),
            "prices_per_hour": dict(settings.prices_per_hour),
        },
        created_unix=round(time.time(), 3),
    )


def summarize(
    arm: str,
    batch_size: int,
    concurrency: int,
    latencies_s: Sequence[float],
    wall_s: float,
    process_cpu_s: float | None = None,
    caller_cpu_s: float | None = None,
    rss_delta_bytes: int | None = None,
    price_per_hour: float | None = None,
) -> Measurement:
    """One Measurement from raw timings (each call's latency, the window's wall time)."""
    if not latencies_s or wall_s <= 0:
        raise InvalidInput(f"{arm}: no calls were timed")
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    rows = len(latencies_s) * batch_size
    throughput = rows / wall_s
    return Measurement(
        arm=arm,
        batch_size=batch_size,
        concurrency=concurrency,
        calls=len(latencies_s),
        rows=rows,
        wall_s=wall_s,
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        throughput_rows_s=throughput,
        cpu_ms_per_row=None if process_cpu_s is None else process_cpu_s * 1e3 / rows,
        caller_cpu_ms_per_row=None if caller_cpu_s is None else caller_cpu_s * 1e3 / rows,
        rss_delta_bytes=rss_delta_bytes,
        cost_per_1000_usd=(
            None if price_per_hour is None else price_per_hour / 3600.0 / throughput * 1000.0
        ),
    )


def choose_best(
    measurements: Sequence[Measurement], latency_budget_ms: float | None = None
) -> tuple[Best, ...]:
    """The best arm per objective; an objective no measurement meets names no arm."""
    within = [m for m in measurements if latency_budget_ms is None or m.p99_ms <= latency_budget_ms]
    budget = "" if latency_budget_ms is None else f" within the {latency_budget_ms} ms budget"
    best: list[Best] = []
    single = [m for m in measurements if m.batch_size == 1 and m.concurrency == 1]
    lowest = min(single, key=lambda m: (m.p99_ms, m.arm), default=None)
    if lowest is not None and (latency_budget_ms is None or lowest.p99_ms <= latency_budget_ms):
        best.append(_best(LATENCY, lowest, lowest.p99_ms, "ms p99", "lowest p99 at batch 1"))
    else:
        note = (
            "no batch-1 measurement"
            if lowest is None
            else (
                f"no arm's batch-1 p99 is{budget}; the lowest is {lowest.arm} at "
                f"{lowest.p99_ms:.3g} ms"
            )
        )
        best.append(Best(LATENCY, None, None, None, None, "ms p99", note))
    fastest = max(within, key=lambda m: (m.throughput_rows_s, m.arm), default=None)
    if fastest is None:
        best.append(Best(THROUGHPUT, None, None, None, None, "rows/s", f"nothing{budget}"))
    else:
        best.append(
            _best(THROUGHPUT, fastest, fastest.throughput_rows_s, "rows/s", f"highest{budget}")
        )
    priced = [m for m in within if m.cost_per_1000_usd is not None]
    cheapest = min(priced, key=lambda m: (m.cost_per_1000_usd or 0.0, m.arm), default=None)
    if cheapest is None:
        best.append(Best(COST, None, None, None, None, "USD/1000", f"nothing priced{budget}"))
    else:
        best.append(
            _best(COST, cheapest, cheapest.cost_per_1000_usd, "USD/1000", f"lowest{budget}")
        )
    return tuple(best)


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def device_kind(device: str) -> str:
    return device.split(":", 1)[0] or "cpu"


def _best(objective: str, m: Measurement, value: float | None, unit: str, note: str) -> Best:
    return Best(objective, m.arm, m.batch_size, m.concurrency, value, unit, note)


def _info(arm: ProfileArm, settings: ProfileSettings) -> ArmInfo:
    kind = arm.device_kind or device_kind(arm.model.device)
    return ArmInfo(
        arm.name,
        arm.backend,
        arm.variant,
        arm.model.device,
        kind,
        settings.prices_per_hour.get(kind),
        arm.load_s,
        arm.load_rss_bytes,
    )


@dataclass(frozen=True)
class _Window:
    """One stretch of calls to one arm: the raw figures, merged into a Measurement."""

    latencies_s: list[float]
    wall_s: float
    process_cpu_s: float
    caller_cpu_s: float
    rss_delta_bytes: int | None


def _window(
    model: LoadedModel, batch: dict[str, np.ndarray], threads: int, settings: ProfileSettings
) -> _Window:
    calls_min = math.ceil(settings.min_calls / (threads * settings.rounds))
    calls_max = max(calls_min, settings.max_calls // (threads * settings.rounds))
    latencies: list[list[float]] = [[] for _ in range(threads)]
    caller_cpu = [0.0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(index: int) -> None:
        mine = latencies[index]
        start.wait()
        cpu0 = time.thread_time()
        try:
            while len(mine) < calls_max and (
                len(mine) < calls_min or time.perf_counter() < deadline[0]
            ):
                t0 = time.perf_counter()
                model.infer(batch)
                mine.append(time.perf_counter() - t0)
        except BaseException as exc:  # surfaced below, in the caller's thread
            errors.append(exc)
        caller_cpu[index] = time.thread_time() - cpu0

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    rss0 = rss_bytes()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    deadline[0] = began + settings.duration_s / settings.rounds
    start.wait()
    for w in workers:
        w.join()
    wall = time.perf_counter() - began
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    rss1 = rss_bytes()
    if errors:
        raise errors[0]
    return _Window(
        [x for xs in latencies for x in xs],
        wall,
        (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime),
        sum(caller_cpu),
        None if rss0 is None or rss1 is None else rss1 - rss0,
    )


def _merge(
    arm: str, batch: int, threads: int, windows: Sequence[_Window], price: float | None
) -> Measurement:
    deltas = [w.rss_delta_bytes for w in windows]
    return summarize(
        arm,
        batch,
        threads,
        [x for w in windows for x in w.latencies_s],
        sum(w.wall_s for w in windows),
        sum(w.process_cpu_s for w in windows),
        sum(w.caller_cpu_s for w in windows),
        None if any(d is None for d in deltas) else sum(d or 0 for d in deltas),
        price,
    )


def _batch_sizes(wanted: Sequence[int], max_batch_size: int) -> tuple[int, ...]:
    if max_batch_size <= 0:
        return (1,)  # the model does not batch: one request is one call
    return tuple(sorted({b for b in wanted if b <= max_batch_size} | {max_batch_size}))


def _same_inputs(arms: Sequence[ProfileArm]) -> None:
    first = sorted(t.name for t in arms[0].model.inputs)
    for arm in arms[1:]:
        names = sorted(t.name for t in arm.model.inputs)
        if names != first:
            raise InvalidInput(
                f"arm {arm.name} takes inputs {names}, arm {arms[0].name} takes {first}: "
                "load them with the same expected tensor names"
            )


def _inputs(given: Inputs | DataSet | None, model: LoadedModel, batched: bool, seed: int) -> Inputs:
    if isinstance(given, DataSet):
        data = given

        def take(n: int) -> dict[str, np.ndarray]:
            if not batched:
                return {k: v[0] for k, v in data.inputs.items()}
            index = np.arange(n) % data.rows
            return {k: np.ascontiguousarray(v[index]) for k, v in data.inputs.items()}

        return take
    if given is not None:
        return given
    rng = np.random.default_rng(seed)

    def random(n: int) -> dict[str, np.ndarray]:
        out = {}
        for tensor in model.inputs:
            shape = (n, *tensor.shape[1:]) if batched else tensor.shape
            if any(d == VARIABLE for d in shape):
                raise InvalidInput(
                    f"input {tensor.describe()} has variable dims: give the profiler inputs"
                )
            dtype = datatypes.from_name(tensor.datatype).numpy
            out[tensor.name] = (
                rng.random(shape, dtype=np.float32).astype(dtype)
                if dtype.kind == "f"
                else np.zeros(shape, dtype=dtype)
            )
        return out

    return random
