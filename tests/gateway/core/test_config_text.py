"""config.pbtxt text with fields our ModelConfig lacks: each is named, the rest parses."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from infergate.gateway.core.config_text import ConfigSyntaxError, parse_config_text

TRITON_STYLE = """
name: "m"  # a comment with [ and {
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] future_input_field < z: 1 > } ]
future_list [ { a: 1 b { c: "]" } }, { d: 2 } ]
instance_group [ { count: 2 kind: KIND_CPU future_scalar: [1, 2] } ]
future_string: "a [ in a string"
model_warmup [ { name: "w" batch_size: 1
  inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } } ]
[some.extension]: 5
"""


def test_unknown_fields_are_named_with_their_path_and_the_rest_is_kept() -> None:
    parsed = parse_config_text(TRITON_STYLE)
    assert parsed.unknown_fields == (
        "input.future_input_field",
        "future_list",
        "instance_group.future_scalar",
        "future_string",
        "[some.extension]",
    )
    config = parsed.config
    assert config.name == "m" and config.max_batch_size == 8
    assert list(config.input[0].dims) == [-1, 3]
    assert config.instance_group[0].count == 2
    assert config.model_warmup[0].inputs["x"].zero_data


def test_a_triton_config_in_list_syntax_parses_without_unknown_fields() -> None:
    text = """
    name: "seq"
    max_batch_size: 4
    version_policy: { specific { versions: [1, 3] } }
    sequence_batching {
      max_sequence_idle_microseconds: 5000000
      control_input [
        { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
        { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] }
      ]
      oldest { max_candidate_sequences: 4 }
    }
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } } ]
    """
    parsed = parse_config_text(text)
    assert parsed.unknown_fields == ()
    assert [c.name for c in parsed.config.sequence_batching.control_input] == ["START", "READY"]
    assert list(parsed.config.version_policy.specific.versions) == [1, 3]


@pytest.mark.parametrize(
    "text",
    ['name: "a" input { name: "x"', 'input [ { name: "x" } ', "name: ", "{ }", 'name: "x" @'],
)
def test_broken_text_is_refused(text: str) -> None:
    with pytest.raises((ConfigSyntaxError, text_format.ParseError)):
        parse_config_text(text)


def test_a_bad_value_for_a_known_field_is_refused() -> None:
    with pytest.raises(text_format.ParseError):
        parse_config_text('max_batch_size: "eight"')
