"""Gateway settings the benchmarks share: the dynamic batching config and serve flags
that the batching section's sweep chose (`python -m bench.batching --sweep` re-runs
it), and why. The batching section measures with them; the tracing section and
bench.thread_cpu reuse them, so that tracing's cost is measured on the gateway the
batching figures describe.
"""

from __future__ import annotations

# The batching twins' max_batch_size: the most batch-1 requests one runtime call merges.
MAX_BATCH_SIZE = 32

# Chosen by measurement: the sweep compares flag variants at QUEUE_DELAY_US, then the
# delays under SERVE_ARGS (the defaults).
QUEUE_DELAY_US = 2000
DELAY_WHY = (
    f"Queue delay {QUEUE_DELAY_US} us: under load a batch forms while the one execution "
    "slot is busy, and by then its oldest request has waited longer than any delay tried, "
    "so 500, 2000 and 5000 us gave the same mlp_large batches (about 15 rows at "
    "concurrency 32, 8 at 16) and the same throughput within the smoke runs' noise. The "
    "delay only sets how long a request waits for company on an idle model (and the "
    "batcher skips it where the model's measured fixed cost per call is below a tenth of one row's "
    "cost, as for a compute-bound net): 2000 us is about a tenth of a 16-row mlp_large "
    "call on one thread, so a lone request loses little, while 5000 us would add up to "
    "5 ms at low load for no gain."
)
# The gateway's own defaults: since issue 21 they are what this sweep found best on
# 2 cores (one batch in flight per device, runtime threads = usable cores - 1), then
# onnxruntime with spinning off on every core (docs/performance.md), so the batching
# figures are those of a gateway nobody tuned.
SERVE_ARGS: tuple[str, ...] = ()
FLAGS_WHY = (
    "Default serve flags: one batch of a model in flight per device "
    "(`--max-inflight-batches 1`), chosen by this sweep (`python -m bench.batching "
    "--sweep`), and `--intra-op-threads 0` (automatic): onnxruntime on every core with "
    "its idle threads asleep (2 threads on 2 cores; see docs/performance.md), other "
    "runtimes on one core less. The defaults before the sweep (2 batches in "
    "flight, onnxruntime's thread per core) kept batches at about 4-5 rows at "
    "concurrency 32: a slot frees as soon as one of the two batches ends and takes "
    "whatever few requests are queued, and two runtime calls with 2 threads each "
    "oversubscribe 2 cores that the gRPC event loop and perf_analyzer also need; "
    "mlp_large on/off was 2.5-2.8x and cnn lost throughput with batching on (0.8-0.9x). "
    "One batch in flight doubles the batch size (about 15 rows at concurrency 32) and "
    "one intra-op thread leaves a core to the request path: mlp_large on/off 4.0-4.7x "
    "and cnn 1.2-1.7x in the smoke runs. Two in flight alone: batches of 5-7 rows, "
    "mlp_large on/off about 3x; runtime threads per core alone (their idle threads "
    "spinning, as then): batches of 11-15 rows, but cnn barely gained (1.06x at "
    "concurrency 32)."
)
