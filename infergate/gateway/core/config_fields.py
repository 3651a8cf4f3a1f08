"""Which ModelConfig fields infergate acts on, and which set ones it leaves alone.

ModelConfig declares every field of Triton's, so that any Triton config parses; a
config that sets one infergate does not act on is served anyway, with one warning
naming each such field. docs/triton-compatibility.md says the same in a table; a
test checks the two agree.
"""

from __future__ import annotations

from google.protobuf.message import Message

from infergate.protocol import model_config_pb2 as mc

# Field paths acted on: a path covers everything under it.
ACTED_ON = frozenset(
    {
        "name",
        "platform",
        "backend",
        "max_batch_size",
        "version_policy",
        "input.name",
        "input.data_type",
        "input.dims",
        "input.optional",  # perf_analyzer reads it; inputs are required either way
        "input.reshape",
        "output.name",
        "output.data_type",
        "output.dims",
        "output.reshape",
        "output.label_filename",
        "instance_group.name",
        "instance_group.count",
        "instance_group.kind",
        "dynamic_batching.preferred_batch_size",
        "dynamic_batching.max_queue_delay_microseconds",
        "dynamic_batching.default_queue_policy.default_timeout_microseconds",
        "dynamic_batching.default_queue_policy.allow_timeout_override",
        "dynamic_batching.default_queue_policy.max_queue_size",
        "sequence_batching.max_sequence_idle_microseconds",
        "sequence_batching.control_input",
        "sequence_batching.direct.max_queue_delay_microseconds",
        "sequence_batching.oldest.max_queue_delay_microseconds",
        "sequence_batching.oldest.preferred_batch_size",
        "sequence_batching.state.input_name",
        "sequence_batching.state.output_name",
        "sequence_batching.state.data_type",
        "sequence_batching.state.dims",
        "sequence_batching.state.initial_state",  # zero_data; a data_file fails the load
        "parameters",
        "model_warmup",
        "response_cache",
        "model_transaction_policy",  # decoupled: false is the only kind there is
        # infergate's own
        "allowed_backends",
        "routing",
        "response_cache_ttl_ms",
        "capture_rows",
    }
)


def unacted_fields(config: mc.ModelConfig) -> list[str]:
    """Paths of the fields set in `config` that infergate does not act on."""
    found: list[str] = []
    _walk(config, "", found)
    if config.model_transaction_policy.decoupled:
        found.append("model_transaction_policy.decoupled")
    return found


def _walk(message: Message, prefix: str, found: list[str]) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if _acted_on(path):
            continue
        kind = field.message_type
        if kind is None or kind.GetOptions().map_entry or not _acted_on_under(path):
            found.append(path)  # a scalar, a map, or a block none of whose fields we use
            continue
        for child in value if field.is_repeated else [value]:
            _walk(child, f"{path}.", found)
    # Repeated duplicates (input.format twice) are named once.
    found[:] = list(dict.fromkeys(found))


def _acted_on(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in ACTED_ON)


def _acted_on_under(path: str) -> list[str]:
    return [p for p in ACTED_ON if p.startswith(path + ".")]
