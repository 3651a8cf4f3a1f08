"""Which versions of a model serve: Triton's version_policy.

`latest { num_versions: N }` (the default, with N = 1) serves the N highest
numbers, `all {}` every version, `specific { versions: [...] }` those listed. Applied
when a model loads from the repository and again whenever a version starts
serving, so a registered version 8 under `latest { num_versions: 2 }` retires 6
and keeps 7.
"""

from __future__ import annotations

from collections.abc import Iterable

from infergate.gateway.core.repository import version_key
from infergate.protocol import model_config_pb2 as mc


def served_versions(config: mc.ModelConfig | None, available: Iterable[str]) -> list[str]:
    """The versions among `available` that the config's policy serves, oldest first."""
    ordered = sorted(set(available), key=version_key)
    if config is None or not config.HasField("version_policy"):
        return ordered[-1:]
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return ordered
    if choice == "specific":
        wanted = {str(v) for v in policy.specific.versions}
        return [v for v in ordered if v in wanted]
    count = max(1, policy.latest.num_versions)
    return ordered[-count:]


def describe(config: mc.ModelConfig | None) -> str:
    """The policy in words, for messages."""
    if config is None or not config.HasField("version_policy"):
        return "latest 1 (the default)"
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return "all"
    if choice == "specific":
        return f"specific {list(policy.specific.versions)}"
    return f"latest {max(1, policy.latest.num_versions)}"
