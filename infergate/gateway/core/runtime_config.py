"""What a model's config asks of its runtime beyond the artifact: a thin wrapper.

- `reshape` on an input or output: requests are checked against the config's
  `dims`, while the runtime takes and returns the reshaped shape (Triton's
  densenet_onnx declares [3, 224, 224] for an input the model has as
  [1, 3, 224, 224]). The batch dimension, when the model batches, stays in front.
- `sequence_batching`: the control inputs and implicit states the gateway supplies
  (infergate.gateway.core.sequence_spec). A call that lacks them (a warm-up, the
  canary, profiling) gets the values of a ready request outside any sequence, so
  those run unchanged on a stateful model.
- `label_filename` on outputs: read once at load, for the classification extension.

The loader wraps every arm's runtime with `configured()` after checking the config
against the artifact (config_spec.reconcile); a runtime that needs none of it is
returned as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from infergate.backends.base import LoadedModel, WrappedModel
from infergate.gateway.core.classification import read_labels
from infergate.gateway.core.sequence_spec import SequenceSpec
from infergate.protocol import model_config_pb2 as mc
from infergate.schema.errors import ModelLoadError
from infergate.schema.tensors import TensorSpec

# name -> (the config's dims, the runtime's shape), neither with the batch dim.
Reshapes = Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]


class ConfiguredModel(WrappedModel):
    """A runtime seen through its config: reshapes, sequence inputs, labels."""

    def __init__(
        self,
        inner: LoadedModel,
        batches: bool,
        input_reshapes: Reshapes,
        output_reshapes: Reshapes,
        sequence: SequenceSpec | None,
        labels: Mapping[str, Sequence[str]],
    ) -> None:
        super().__init__(inner)
        self._batches = batches
        self._input_reshapes = dict(input_reshapes)
        self._output_reshapes = dict(output_reshapes)
        self._sequence = sequence
        self._supplied = sequence.supplied_inputs() if sequence else frozenset()
        self.labels = dict(labels)
        self._inputs = tuple(
            _declared(t, self._input_reshapes, batches)
            for t in inner.inputs
            if t.name not in self._supplied
        )
        self._outputs = tuple(_declared(t, self._output_reshapes, batches) for t in inner.outputs)

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        """The inputs a request gives (the gateway's own left out), shaped as declared."""
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = dict(inputs)
        rows = _rows(feed)
        for name, (_, shape) in self._input_reshapes.items():
            if name in feed:
                feed[name] = feed[name].reshape(_with_batch(shape, rows, self._batches))
        if self._sequence is not None and not self._supplied <= feed.keys():
            defaults = self._sequence.defaults(rows)
            feed.update({k: v for k, v in defaults.items() if k not in feed})
        outputs = self.inner.infer(feed)
        for name, (dims, _) in self._output_reshapes.items():
            if name in outputs:
                array = outputs[name]
                batch = array.shape[0] if self._batches and array.ndim else 1
                outputs[name] = array.reshape(_with_batch(dims, batch, self._batches))
        return outputs


def configured(runtime: LoadedModel, config: mc.ModelConfig, folder: Path) -> LoadedModel:
    """The runtime as the config describes it (itself when nothing applies);
    ModelLoadError when a label file cannot be read."""
    batches = config.max_batch_size > 0
    inputs = {
        i.name: (tuple(i.dims), tuple(i.reshape.shape))
        for i in config.input
        if i.HasField("reshape")
    }
    outputs = {
        o.name: (tuple(o.dims), tuple(o.reshape.shape))
        for o in config.output
        if o.HasField("reshape")
    }
    sequence = SequenceSpec.from_config(config)
    labels = {o.name: _labels(config.name, folder, o) for o in config.output if o.label_filename}
    if not (inputs or outputs or sequence or labels):
        return runtime
    return ConfiguredModel(runtime, batches, inputs, outputs, sequence, labels)


def labels_of(runtime: LoadedModel) -> Mapping[str, Sequence[str]]:
    """Output name -> its labels, from the ConfiguredModel under any other wrappers."""
    while True:
        if isinstance(runtime, ConfiguredModel):
            return runtime.labels
        if not isinstance(runtime, WrappedModel):
            return {}
        runtime = runtime.inner


def _labels(model: str, folder: Path, output: mc.ModelOutput) -> tuple[str, ...]:
    path = folder / output.label_filename
    if Path(output.label_filename).is_absolute() or ".." in Path(output.label_filename).parts:
        raise ModelLoadError(
            f"model '{model}': output '{output.name}': label_filename must name a file in "
            "the model's folder"
        )
    try:
        return read_labels(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise ModelLoadError(
            f"model '{model}': output '{output.name}': cannot read label_filename "
            f"{output.label_filename!r}: {exc.strerror}"
        ) from None


def _declared(tensor: TensorSpec, reshapes: Reshapes, batches: bool) -> TensorSpec:
    if tensor.name not in reshapes:
        return tensor
    dims = reshapes[tensor.name][0]
    batch = tensor.shape[:1] if batches else ()
    return TensorSpec(tensor.name, tensor.datatype, tuple(batch) + tuple(dims))


def _with_batch(shape: tuple[int, ...], rows: int, batches: bool) -> tuple[int, ...]:
    return (rows, *shape) if batches else shape


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
