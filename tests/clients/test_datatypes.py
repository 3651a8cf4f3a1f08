"""numpy in and out for every protocol datatype, through identity models on a real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from infergate.clients import AsyncClient, Tensor, build_request, from_bf16, to_bf16
from infergate.clients.infer_messages import encode_input
from infergate.gateway.server import GatewayServer
from infergate.settings import Settings
from tests import onnx_models
from tests.gateway.test_datatypes_e2e import SAMPLES  # one sample of each datatype

rng = np.random.default_rng(3)


@pytest.fixture(scope="module")
def typed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("typed") / "repo"
    for datatype in [*SAMPLES, "BF16"]:
        onnx_models.identity_model(repo / f"id_{datatype.lower()}" / "1" / "model.onnx", datatype)
    return repo


@pytest.fixture
async def client(typed_repo: Path) -> AsyncIterator[AsyncClient]:
    server = GatewayServer(Settings(metrics_port=0, model_repository=typed_repo, port=0))
    await server.start()
    try:
        async with AsyncClient(server.address) as client:
            yield client
    finally:
        await server.stop()


async def test_every_datatype_goes_through_unchanged(client: AsyncClient) -> None:
    for datatype, sent in SAMPLES.items():
        back = (await client.infer(f"id_{datatype.lower()}", {"in": sent}))["out"]
        assert back.shape == sent.shape, datatype
        assert back.dtype == sent.dtype, datatype
        np.testing.assert_array_equal(back, sent, err_msg=datatype)


async def test_bytes_from_str_and_numpy_string_arrays(client: AsyncClient) -> None:
    expected = np.array([[b"a", "żółw".encode(), b""]], dtype=object)
    for sent in (
        np.array([["a", "żółw", ""]], dtype=object),  # str elements go as UTF-8
        np.array([["a", "żółw", ""]]),  # numpy unicode
        np.array([[b"a", "żółw".encode(), b""]]),  # numpy bytes
    ):
        back = (await client.infer("id_bytes", {"in": sent}))["out"]
        assert back.dtype == object
        np.testing.assert_array_equal(back, expected)


async def test_bf16_as_bit_patterns_or_float32(client: AsyncClient) -> None:
    values = np.array([[1.0, -2.0, 0.5]], np.float32)  # exact in bfloat16
    bits = to_bf16(values)
    for sent in (Tensor(bits, "BF16"), Tensor(values, "bf16")):
        back = (await client.infer("id_bf16", {"in": sent}))["out"]
        assert back.dtype == np.dtype("<u2")
        np.testing.assert_array_equal(back, bits)
        as_float = await client.infer("id_bf16", {"in": sent}, bf16_as_float32=True)
        assert as_float["out"].dtype == np.float32
        np.testing.assert_array_equal(as_float["out"], values)


async def test_ml_dtypes_bfloat16_arrays_are_sent_as_bf16(client: AsyncClient) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")  # comes with tensorflow (the convert extra)
    values = np.array([[1.5, -3.0, 0.25]], dtype=ml_dtypes.bfloat16)
    back = (await client.infer("id_bf16", {"in": values}))["out"]
    np.testing.assert_array_equal(back.view(ml_dtypes.bfloat16), values)


async def test_tensor_converts_values_to_the_named_datatype(client: AsyncClient) -> None:
    back = (await client.infer("id_int64", {"in": Tensor([[1, 2, 3]], "INT64")}))["out"]
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, [[1, 2, 3]])


def test_bf16_conversion_rounds_to_nearest_even() -> None:
    one = 0x3F80  # 1.0
    step = 2.0**-7  # one bfloat16 ulp at 1.0
    values = np.array(
        [1.0, 1.0 + step / 2, 1.0 + 3 * step / 2, 1.0 + step / 4, -0.0, np.inf, -np.inf],
        np.float32,
    )
    bits = to_bf16(values)
    # A tie goes to the even pattern: 1 + ulp/2 down to 1.0, 1 + 3ulp/2 up to 1 + 2ulp.
    assert bits.tolist() == [one, one, one + 2, one, 0x8000, 0x7F80, 0xFF80]
    nan_bits = to_bf16(np.array([np.nan, np.float32(np.nan) * -1], np.float32))
    assert np.isnan(from_bf16(nan_bits)).all()
    exact = rng.standard_normal(1000).astype(np.float32)
    exact = from_bf16(to_bf16(exact))
    np.testing.assert_array_equal(from_bf16(to_bf16(exact)), exact)


def test_inputs_whose_datatype_cannot_be_known_are_refused() -> None:
    with pytest.raises(ValueError, match="complex128"):
        encode_input("x", np.zeros(2, np.complex128))
    with pytest.raises(ValueError, match="FP8"):
        encode_input("x", Tensor([1.0], "FP8"))
    request = build_request("m", {"a": np.zeros((2, 3), np.float16), "b": Tensor([7], "UINT8")})
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("a", "FP16", [2, 3]),
        ("b", "UINT8", [1]),
    ]
    assert request.raw_input_contents[1] == b"\x07"
