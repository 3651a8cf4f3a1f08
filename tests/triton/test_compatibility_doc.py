"""docs/triton-compatibility.md stays true: every supported row names tests that
exist, the configuration table agrees with the fields the loader acts on
(config_fields.ACTED_ON), and every field it names is a field of ModelConfig."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infergate.gateway.core.config_fields import ACTED_ON
from infergate.protocol import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "triton-compatibility.md"
STATUSES = {"supported", "supported differently", "not supported"}
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
FIELD = re.compile(r"`([a-z_][a-z_.]*)`")


def table(section: str) -> list[dict[str, str]]:
    """The rows of the first table under `## <section>`, by column name."""
    text = DOC.read_text()
    lines = text[text.index(f"## {section}\n") :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows: list[str] = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
        for row in rows[2:]
    ]


SECTIONS = ("Protocol and extensions", "Model configuration")


@pytest.mark.parametrize("section", SECTIONS)
def test_every_supported_row_names_tests_that_exist(section: str) -> None:
    rows = table(section)
    assert rows
    for row in rows:
        first = next(iter(row.values()))
        assert row["Status"] in STATUSES, f"{first}: status {row['Status']!r}"
        references = TEST_REFERENCE.findall(row["Tests"])
        if row["Status"] != "not supported":
            assert references, f"{first}: a supported row names no test"
        for path, name in references:
            source = ROOT / path
            assert source.is_file(), f"{first}: {path} does not exist"
            pattern = rf"^(async )?def {name}\("
            assert re.search(pattern, source.read_text(), re.MULTILINE), (
                f"{first}: {path} has no test {name}"
            )


def test_the_configuration_table_agrees_with_the_fields_acted_on() -> None:
    supported: set[str] = set()
    unsupported: set[str] = set()
    for row in table("Model configuration"):
        fields = set(FIELD.findall(row["Field"]))
        assert fields, f"row names no field: {row}"
        (unsupported if row["Status"] == "not supported" else supported).update(fields)
    assert supported == set(ACTED_ON), (
        f"acted on but not in the table as supported: {sorted(set(ACTED_ON) - supported)}; "
        f"in the table as supported but not acted on: {sorted(supported - set(ACTED_ON))}"
    )
    assert not unsupported & set(ACTED_ON)


def test_every_field_named_is_a_field_of_model_config() -> None:
    for row in table("Model configuration"):
        for path in FIELD.findall(row["Field"]):
            descriptor = mc.ModelConfig.DESCRIPTOR
            for part in path.split("."):
                assert descriptor is not None, f"{path}: {part} is under a scalar"
                field = descriptor.fields_by_name.get(part)
                assert field is not None, f"{path}: ModelConfig has no field {part} there"
                descriptor = field.message_type
