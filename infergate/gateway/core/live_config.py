"""Which ModelConfig fields may change while a model serves, and merging such a change.

A change names its fields as FieldMask paths (AIP-134 style): "dynamic_batching",
"dynamic_batching.max_queue_delay_microseconds", "response_cache.enable", ... Only
settings that the batch queue, the cache and the router read per batch or per
request can change live; anything that shapes the loaded runtime (tensors,
backend, instance groups, parameters) needs a new version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import Descriptor

from infergate.gateway.core.batching import queue_delay_problem
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import InvalidInput, shown, shown_list

LIVE_FIELDS = (
    "max_batch_size",
    "dynamic_batching",
    "response_cache",
    "response_cache_ttl_ms",
    "routing",
)


def merge(update: mc.ModelConfig, target: mc.ModelConfig, paths: Sequence[str]) -> None:
    """Copy the fields named by `paths` from update into target (in place).

    A named message field that is unset in `update` is cleared in target, which is how
    a change turns batching off ("dynamic_batching" with the block unset).
    """
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    mask.MergeMessage(update, target, replace_message_field=True, replace_repeated_field=True)


def apply_update(
    current: mc.ModelConfig, update: mc.ModelConfig, paths: Sequence[str]
) -> mc.ModelConfig:
    """The config `current` becomes; InvalidInput when the change cannot apply live."""
    name = current.name
    if not paths:
        raise InvalidInput(
            f"model {shown(name)}: the update names no fields; list them in update_mask "
            f"(live fields: {', '.join(LIVE_FIELDS)})"
        )
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    # The stubs type DESCRIPTOR as a union with upb's class, which is the same thing.
    descriptor = cast(Descriptor, mc.ModelConfig.DESCRIPTOR)
    if not mask.IsValidForDescriptor(descriptor):
        raise InvalidInput(
            f"model {shown(name)}: update_mask {shown_list(paths, each=shown)} names unknown fields"
        )
    for path in paths:
        top = path.split(".", 1)[0]
        if top not in LIVE_FIELDS:
            raise InvalidInput(
                f"model {shown(name)}: {shown(path)} cannot change while the model serves; "
                "register a new version with the new config (live fields: "
                f"{', '.join(LIVE_FIELDS)})"
            )
    merged = mc.ModelConfig()
    merged.CopyFrom(current)
    merge(update, merged, paths)
    _check(current, merged, paths)
    return merged


def _check(current: mc.ModelConfig, merged: mc.ModelConfig, paths: Sequence[str]) -> None:
    name = current.name
    touched = {p.split(".", 1)[0] for p in paths}
    if "max_batch_size" in touched and merged.max_batch_size != current.max_batch_size:
        # The batch dimension is part of every tensor's shape: it can move, not appear
        # or vanish, without reloading.
        if current.max_batch_size <= 0:
            raise InvalidInput(
                f"model {shown(name)} does not batch (max_batch_size 0); register a new version "
                "to make it batch"
            )
        if merged.max_batch_size <= 0:
            raise InvalidInput(
                f"model {shown(name)}: max_batch_size must stay at least 1 while it serves; turn "
                "batching off by clearing dynamic_batching instead"
            )
    batching_on = "dynamic_batching" in touched and merged.HasField("dynamic_batching")
    if batching_on and merged.max_batch_size <= 0:
        raise InvalidInput(
            f"model {shown(name)} does not batch (max_batch_size 0), so dynamic_batching "
            "would have no effect"
        )
    if merged.HasField("dynamic_batching"):
        batching = merged.dynamic_batching
        wrong = [s for s in batching.preferred_batch_size if not 0 < s <= merged.max_batch_size]
        if wrong:
            raise InvalidInput(
                f"model {shown(name)}: preferred_batch_size {wrong} must lie between 1 and "
                f"max_batch_size {merged.max_batch_size}"
            )
    delay_problem = queue_delay_problem(merged)
    if delay_problem is not None:
        raise InvalidInput(f"model {shown(name)}: {delay_problem}")
    if "routing" in touched and not 0.0 <= merged.routing.explore_fraction <= 1.0:
        raise InvalidInput(
            f"model {shown(name)}: routing.explore_fraction must lie between 0 and 1, got "
            f"{merged.routing.explore_fraction}"
        )
