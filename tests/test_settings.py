from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from infergate.settings import SETTING_SPECS, Settings, SettingsError, option, specs_of


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


def test_every_setting_is_declared_with_help_and_read_from_its_variable() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert [spec.name for spec in SETTING_SPECS] == names
    for spec in SETTING_SPECS:
        assert spec.help.strip(), f"{spec.name} has no help text"
        assert spec.env == "INFERGATE_" + spec.name.upper()
        raw, expected = sample(spec.name, "env")
        assert getattr(Settings.from_env({spec.env: raw}), spec.name) == expected, spec.env


def test_every_setting_has_a_flag_but_the_admin_token() -> None:
    # The admin token would show in `ps` as a flag; its file has one instead.
    assert {spec.name for spec in SETTING_SPECS if spec.flag is None} == {"admin_token"}
    flagged = {spec.flag: spec.name for spec in SETTING_SPECS if spec.flag is not None}
    assert flagged["--no-gpu"] == "use_gpu" and flagged["--admin-token-file"] == "admin_token_file"
    assert "--admin-token" not in flagged


def test_values_are_parsed_by_the_fields_real_types() -> None:
    hints = typing.get_type_hints(Settings)
    assert hints["tracing"] == bool | None and hints["tls_cert"] == Path | None
    settings = Settings.from_env(
        {
            "INFERGATE_TRACING": "on",
            "INFERGATE_TLS_CERT": "",  # empty: unset, not the working directory
            "INFERGATE_INSECURE_ADMIN": "yes",
            "INFERGATE_MAX_ARTIFACT_MB": "12",
        }
    )
    assert settings.tracing is True and settings.tls_cert is None
    assert settings.insecure_admin is True and settings.max_artifact_mb == 12
    with pytest.raises(SettingsError, match="INFERGATE_SHUTDOWN_GRACE_S"):
        Settings.from_env({"INFERGATE_SHUTDOWN_GRACE_S": "soon"})


def test_the_help_shows_defaults_that_mean_something() -> None:
    shown = {spec.name: spec.shown_default for spec in SETTING_SPECS}
    assert shown["port"] == "8001" and shown["host"] == "127.0.0.1"
    assert shown["shutdown_grace_s"] == "10.0" and shown["backends"] == "every installed backend"
    # Unset values and bool switches show none.
    assert shown["model_repository"] is None and shown["inference_token"] is None
    assert shown["use_gpu"] is None


def test_tokens_stay_out_of_repr() -> None:
    text = repr(Settings(admin_token="a-secret-token", inference_token="another-secret"))
    assert "a-secret-token" not in text and "another-secret" not in text


def test_a_wrongly_declared_setting_fails_at_import() -> None:
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        port: int = 1

    @dataclasses.dataclass(frozen=True)
    class UnnamedSwitchOff:
        use_gpu: bool = dataclasses.field(default=True, metadata=option("use GPUs"))

    @dataclasses.dataclass(frozen=True)
    class Unparseable:
        ratio: complex = dataclasses.field(default=1j, metadata=option("a ratio"))

    with pytest.raises(TypeError, match="has no metadata"):
        specs_of(Undocumented)
    with pytest.raises(TypeError, match="name its flag"):
        specs_of(UnnamedSwitchOff)
    with pytest.raises(TypeError, match="no parser"):
        specs_of(Unparseable)


def sample(name: str, source: str) -> tuple[str, object]:
    """A value for setting `name` that differs from its default and, between the
    sources "env" and "flag", from each other: the string to give, the value meant."""
    spec = next(s for s in SETTING_SPECS if s.name == name)
    hint = typing.get_type_hints(Settings)[name]
    step = 1 if source == "env" else 2
    if spec.choices is not None:
        others = [w for w, value in spec.choices.items() if value != spec.default]
        word = others[step - 1]
        return word, spec.choices[word]
    if isinstance(spec.default, bool):
        return str(not spec.default).lower(), not spec.default
    if hint is int or hint is float:
        value = hint(spec.default) + step
        return str(value), value
    if hint == tuple[str, ...]:
        return f"{source}-a, {source}-b", (f"{source}-a", f"{source}-b")
    if hint == Path | None:
        return f"/from/{source}", Path(f"/from/{source}")
    assert hint is str, f"no sample for {name}: {hint}"
    return f"from-{source}", f"from-{source}"
