from __future__ import annotations

from pathlib import Path

import pytest

from infergate.settings import Settings, SettingsError


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {
        "INFERGATE_PORT": "9000",
        "INFERGATE_MODEL_REPOSITORY": "/srv/models",
        "INFERGATE_USE_GPU": "false",
        "INFERGATE_BACKENDS": "onnxruntime, openvino",
        "INFERGATE_SHUTDOWN_GRACE_S": "2.5",
        "UNRELATED": "x",
    }
    settings = Settings.from_env(env)
    assert settings.port == 9000 and settings.model_repository == Path("/srv/models")
    assert settings.use_gpu is False and settings.backends == ("onnxruntime", "openvino")
    assert settings.shutdown_grace_s == 2.5
    flagged = settings.with_overrides(port=7000, host=None)
    assert flagged.port == 7000 and flagged.host == "127.0.0.1"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="INFERGATE_PORT"):
        Settings.from_env({"INFERGATE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="INFERGATE_USE_GPU"):
        Settings.from_env({"INFERGATE_USE_GPU": "perhaps"})
    with pytest.raises(SettingsError, match="unknown settings"):
        Settings().with_overrides(prot=1)
