"""Config tensor names onto an artifact's tensors: exact, signature, position, or refused."""

from __future__ import annotations

import pytest

from infergate.backends.names import ArtifactTensor, map_names, public_specs
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec


def spec(name: str, shape: tuple[int, ...] = (-1, 4), datatype: str = "FP32") -> TensorSpec:
    return TensorSpec(name, datatype, shape)


def tensor(
    name: str,
    shape: tuple[int, ...] = (-1, 4),
    datatype: str = "FP32",
    signature: str = "",
    aliases: tuple[str, ...] = (),
) -> ArtifactTensor:
    return ArtifactTensor(TensorSpec(name, datatype, shape), aliases, signature)


# What a Keras export converted to TFLite looks like.
KERAS_INPUT = tensor("serving_default_x:0", (-1, 64), signature="x")
KERAS_OUTPUT = tensor("StatefulPartitionedCall_1:0", (-1, 10), signature="output_0")


def names(
    expected: list[TensorSpec] | None, actual: list[ArtifactTensor], by_position: bool = True
) -> tuple[str, ...]:
    return map_names("input", expected, actual, by_position=by_position, where="m.tflite")


def test_exact_names_win_and_keep_the_artifacts_order() -> None:
    actual = [tensor("b"), tensor("a")]
    assert names([spec("a"), spec("b")], actual) == ("b", "a")


def test_an_alias_is_an_exact_name() -> None:
    actual = [tensor("input.1", aliases=("x", "images"))]
    assert names([spec("x")], actual, by_position=False) == ("x",)


def test_signature_names_map_a_keras_tflite_input() -> None:
    assert names([spec("x", (-1, 64))], [KERAS_INPUT]) == ("x",)


def test_position_maps_what_names_cannot_when_everything_agrees() -> None:
    # Keras calls the output output_0; the config calls it y.
    assert names([spec("y", (-1, 10))], [KERAS_OUTPUT]) == ("y",)


def test_position_after_names_pairs_only_the_leftovers() -> None:
    actual = [tensor("t0", (-1, 3), signature="a"), tensor("t1", (-1, 5)), tensor("t2", (-1, 7))]
    expected = [spec("a", (-1, 3)), spec("p", (-1, 5)), spec("q", (-1, 7))]
    assert names(expected, actual) == ("a", "p", "q")


def test_the_config_may_fix_a_dim_the_artifact_leaves_variable() -> None:
    assert names([spec("y", (8, 10))], [KERAS_OUTPUT]) == ("y",)


def test_exact_name_beats_another_tensors_signature_name() -> None:
    actual = [tensor("t0", signature="x"), tensor("x")]
    assert names([spec("x"), spec("z")], actual) == ("z", "x")


def test_without_a_config_tensors_keep_signature_names_else_their_own() -> None:
    assert names(None, [KERAS_INPUT, tensor("plain")]) == ("x", "plain")
    assert names([], [KERAS_OUTPUT]) == ("output_0",)


def test_outputs_the_config_leaves_out_keep_their_default_names() -> None:
    actual = [tensor("t0", signature="scores"), tensor("t1", signature="labels")]
    assert names([spec("labels")], actual) == ("scores", "labels")


def test_same_shaped_leftovers_are_ambiguous_and_refused_naming_both_sides() -> None:
    actual = [tensor("serving_default_a:0"), tensor("serving_default_b:0")]
    with pytest.raises(ModelLoadError) as error:
        names([spec("p"), spec("q")], actual)
    message = str(error.value)
    assert "m.tflite" in message and "cannot be trusted" in message
    for name in ("'p'", "'q'", "serving_default_a:0", "serving_default_b:0"):
        assert name in message


def test_pairing_that_only_works_one_way_is_not_ambiguous() -> None:
    # t0 could take either config tensor, t1 only q: one pairing, by position.
    actual = [tensor("t0", (-1, -1)), tensor("t1", (-1, 3))]
    assert names([spec("p", (-1, 5)), spec("q", (-1, 3))], actual) == ("p", "q")


def test_position_refused_when_shapes_disagree() -> None:
    with pytest.raises(ModelLoadError, match=r"'y' FP32\[-1, 3\] != 'StatefulPartitionedCall_1:0'"):
        names([spec("y", (-1, 3))], [KERAS_OUTPUT])


def test_position_refused_when_datatypes_disagree() -> None:
    with pytest.raises(ModelLoadError, match="INT64"):
        names([spec("y", (-1, 10), "INT64")], [KERAS_OUTPUT])


def test_position_refused_when_counts_disagree() -> None:
    with pytest.raises(ModelLoadError, match="2 left in the config, 1 in the model"):
        names([spec("p", (-1, 64)), spec("q", (-1, 64))], [KERAS_INPUT])


def test_name_only_formats_refuse_what_names_do_not_match() -> None:
    with pytest.raises(ModelLoadError) as error:
        names([spec("pixels", (-1, 64))], [tensor("x", (-1, 64))], by_position=False)
    message = str(error.value)
    assert "'pixels'" in message and "'x'" in message and "by name" in message


def test_a_name_matching_two_tensors_is_refused() -> None:
    actual = [tensor("a", aliases=("x",)), tensor("b", aliases=("x",))]
    with pytest.raises(ModelLoadError, match="matches several inputs by name"):
        names([spec("x")], actual)


def test_two_tensors_served_under_one_name_are_refused() -> None:
    actual = [tensor("t0", signature="y"), tensor("y", (-1, 9))]
    # Without a config t0 goes by its signature name, which the other tensor is called.
    with pytest.raises(ModelLoadError, match="two inputs would be served as 'y'"):
        names(None, actual)


def test_public_specs_rename_and_keep_datatype_and_shape() -> None:
    (renamed,) = public_specs([KERAS_INPUT], ["x"])
    assert renamed == TensorSpec("x", "FP32", (-1, 64))
