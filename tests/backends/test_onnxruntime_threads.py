"""How many threads an onnxruntime session gets, and that idle ones sleep."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from infergate.backends.base import BackendOptions
from infergate.backends.onnxruntime import ALLOW_SPINNING, OnnxRuntimeBackend, OnnxRuntimeModel
from tests import onnx_models


def session_options(tmp_path: Path, options: BackendOptions) -> ort.SessionOptions:
    model = OnnxRuntimeBackend().load(onnx_models.add_model(tmp_path / "m.onnx"), options)
    assert isinstance(model, OnnxRuntimeModel)
    return model._session.get_session_options()


def test_sessions_take_the_count_for_runtimes_whose_idle_threads_sleep(tmp_path: Path) -> None:
    # The gateway's automatic choice on 2 cores: 1 for runtimes that spin, 2 here.
    options = BackendOptions(intra_op_threads=1, sleeping_intra_op_threads=2)
    assert OnnxRuntimeBackend().intra_op_threads(options) == 2
    chosen = session_options(tmp_path, options)
    assert chosen.intra_op_num_threads == 2
    assert chosen.get_session_config_entry(ALLOW_SPINNING) == "0"


def test_without_a_sleeping_count_the_plain_one_applies(tmp_path: Path) -> None:
    chosen = session_options(tmp_path, BackendOptions(intra_op_threads=3))
    assert chosen.intra_op_num_threads == 3
    assert chosen.get_session_config_entry(ALLOW_SPINNING) == "0"
