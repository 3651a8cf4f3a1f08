"""The Backend extension point: how the gateway talks to an inference runtime.

A backend turns model artifacts into a LoadedModel that runs batches of numpy
tensors. Backends are found through the `infergate.backends` entry-point group
(see infergate.backends.discovery), so a package can add one by declaring:

    [project.entry-points."infergate.backends"]
    myruntime = "mypackage.backend:MyBackend"

The gateway calls `LoadedModel.infer` from worker threads, possibly from several at
once, and calls measured to take less than a thread hand-off from the event loop's
thread; a backend whose runtime is not thread-safe must guard itself (one
interpreter per thread, a lock, ...). Nothing here may import grpc: backends are driven and
tested without a server.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infergate.schema.tensors import TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings a backend may honour; each says what it ignores."""

    intra_op_threads: int = 0  # 0: the runtime's default
    # The same for a runtime whose idle pool threads sleep rather than spin
    # (onnxruntime, spinning turned off): it may take more, even every core, since
    # with one batch in flight its calls mostly alternate with the front end's work
    # (docs/performance.md); 0: intra_op_threads.
    sleeping_intra_op_threads: int = 0
    inter_op_threads: int = 0
    use_gpu: bool = True
    # Free-form, per-backend settings (the model config's `parameters`).
    extra: Mapping[str, str] = field(default_factory=dict)
    # What the model's config declares (batch dim included), when it lists tensors.
    # A backend whose artifact names tensors differently maps the config's names onto
    # them (infergate.backends.names) and reports the config's names; None or empty:
    # no config, so it reports the artifact's own names.
    expected_inputs: tuple[TensorSpec, ...] | None = None
    expected_outputs: tuple[TensorSpec, ...] | None = None


class LoadedModel(abc.ABC):
    """One model version loaded in one runtime, ready to execute batches."""

    @property
    @abc.abstractmethod
    def inputs(self) -> Sequence[TensorSpec]:
        """Inputs as the artifact declares them (-1 for variable dims).

        Named as `infer` takes them: by the config's names where
        BackendOptions.expected_inputs gave them, else by the artifact's own.
        """

    @property
    @abc.abstractmethod
    def outputs(self) -> Sequence[TensorSpec]:
        """Outputs as the artifact declares them, under the names `infer` returns."""

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where it runs: "cpu", "cuda:0", ..."""

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name. Called from any thread."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free the runtime's resources; the model is not used afterwards."""


class KnownSpecsModel(LoadedModel):
    """A LoadedModel whose tensors and device are fixed once it has loaded.

    Runtimes learn their specs while loading: a subclass works them out in its
    __init__ and hands them to set_specs() (before anyone reads them).
    """

    _inputs: tuple[TensorSpec, ...] = ()
    _outputs: tuple[TensorSpec, ...] = ()
    _device: str = "cpu"

    def set_specs(
        self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], device: str = "cpu"
    ) -> None:
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._device = device

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    @property
    def device(self) -> str:
        return self._device


class Backend(abc.ABC):
    """A runtime that can load some artifact formats."""

    #: Name used in configs (ModelConfig.backend) and on the command line.
    name: str = ""
    #: Artifact file names this backend can load, in order of preference.
    artifact_names: tuple[str, ...] = ()

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version string."""

    @abc.abstractmethod
    def devices(self) -> list[str]:
        """Devices this backend would run on here, best first."""

    def find_artifact(self, version_dir: Path) -> Path | None:
        """The artifact this backend would load from a version folder, if any."""
        for artifact in self.artifact_names:
            path = version_dir / artifact
            if path.is_file():
                return path
        return None

    @abc.abstractmethod
    def load(self, artifact: Path, options: BackendOptions) -> LoadedModel:
        """Load an artifact; raises ModelLoadError with a clear reason on failure."""

    def intra_op_threads(self, options: BackendOptions) -> int:
        """The threads one of its calls may use under `options` (0: the runtime's default)."""
        return options.intra_op_threads


class WrappedModel(LoadedModel):
    """A loaded model that forwards everything to another: subclass it to change
    one thing (count calls, add latency, inject failures) by composition."""

    def __init__(self, inner: LoadedModel) -> None:
        self.inner = inner

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self.inner.inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self.inner.outputs

    @property
    def device(self) -> str:
        return self.inner.device

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner.infer(inputs)

    def close(self) -> None:
        self.inner.close()
