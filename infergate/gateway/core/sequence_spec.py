"""A stateful model's `sequence_batching` block, read once: its controls and states.

Triton's sequence batcher feeds a stateful model inputs the client never sends:
control inputs (CONTROL_SEQUENCE_START, END, READY: a flag as the two values of
`int32_false_true`, `fp32_false_true` or `bool_false_true`; CORRID: the sequence's
correlation ID as `data_type`) and, with implicit state (`state`), the state the
model returned for the sequence's previous request. Each is one row per request:
shape [1] for a model that does not batch, [1, 1] (state: [1, *dims]) for one that
does, stacked like any input when requests of several sequences share a batch.

SequenceSpec checks the block at load (ModelLoadError naming what is wrong) and
builds those tensors for the scheduler (infergate.gateway.core.sequences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infergate.protocol import model_config_pb2 as mc
from infergate.schema import datatypes
from infergate.schema.errors import InvalidInput, ModelLoadError
from infergate.schema.tensors import VARIABLE, Tensors, TensorSpec

Kind = mc.ModelSequenceBatching.Control
START = Kind.CONTROL_SEQUENCE_START
END = Kind.CONTROL_SEQUENCE_END
READY = Kind.CONTROL_SEQUENCE_READY
CORRID = Kind.CONTROL_SEQUENCE_CORRID
# Triton's default max_sequence_idle_microseconds (when the config leaves it 0).
DEFAULT_IDLE_S = 1.0
CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")

# A correlation ID: a non-zero integer or a non-empty string.
SequenceId = int | str


@dataclass(frozen=True)
class Control:
    """One control input: which signal, as what values."""

    input: str
    kind: int
    datatype: str  # protocol datatype of the input
    false_true: tuple[object, object] = (0, 1)  # START/END/READY: the two values


@dataclass(frozen=True)
class State:
    """One implicit state: fed as `input`, taken back from `output`."""

    input: str
    output: str
    datatype: str
    initial_dims: tuple[int, ...]  # without the batch dim; variable dims as 1


@dataclass(frozen=True)
class SequenceSpec:
    model: str
    controls: tuple[Control, ...]
    states: tuple[State, ...]
    idle_s: float
    batches: bool
    strategy: str  # "direct" or "oldest"

    @staticmethod
    def from_config(config: mc.ModelConfig) -> SequenceSpec | None:
        """The spec of a config with sequence_batching (None without); ModelLoadError
        for a block Triton would refuse too."""
        if not config.HasField("sequence_batching"):
            return None
        block = config.sequence_batching
        where = f"model '{config.name}': sequence_batching"
        controls: list[Control] = []
        for control_input in block.control_input:
            if not control_input.name:
                raise ModelLoadError(f"{where}: a control_input has no name")
            if len(control_input.control) != 1:
                raise ModelLoadError(
                    f"{where}: control_input '{control_input.name}' must have exactly one "
                    f"control, it has {len(control_input.control)}"
                )
            controls.append(_control(control_input.name, control_input.control[0], where))
        kinds = [c.kind for c in controls]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                raise ModelLoadError(f"{where}: more than one {Kind.Kind.Name(kind)} control")
        states = tuple(_state(s, where) for s in block.state)
        names = [c.input for c in controls] + [s.input for s in states]
        if len(set(names)) != len(names):
            raise ModelLoadError(f"{where}: an input is named by two controls or states")
        idle_us = block.max_sequence_idle_microseconds
        return SequenceSpec(
            model=config.name,
            controls=tuple(controls),
            states=states,
            idle_s=idle_us / 1e6 if idle_us else DEFAULT_IDLE_S,
            batches=config.max_batch_size > 0,
            strategy="oldest" if block.HasField("oldest") else "direct",
        )

    def supplied_inputs(self) -> frozenset[str]:
        """The model inputs the gateway supplies (the client must not send them)."""
        return frozenset([c.input for c in self.controls] + [s.input for s in self.states])

    def check(
        self, model_inputs: Sequence[TensorSpec], model_outputs: Sequence[TensorSpec]
    ) -> None:
        """Every control and state names a tensor of the artifact, of its datatype."""
        inputs = {t.name: t for t in model_inputs}
        outputs = {t.name: t for t in model_outputs}
        where = f"model '{self.model}': sequence_batching"
        wanted = [(c.input, c.datatype, "control input") for c in self.controls]
        wanted += [(s.input, s.datatype, "state input") for s in self.states]
        for name, datatype, what in wanted:
            actual = inputs.get(name)
            if actual is None:
                raise ModelLoadError(
                    f"{where}: {what} '{name}' is not an input of the model (its inputs: "
                    f"{sorted(inputs)})"
                )
            if actual.datatype != datatype:
                raise ModelLoadError(
                    f"{where}: {what} '{name}' is {datatype} in the config but "
                    f"{actual.datatype} in the model"
                )
        for state in self.states:
            if state.output not in outputs:
                raise ModelLoadError(
                    f"{where}: state output '{state.output}' is not an output of the model "
                    f"(its outputs: {sorted(outputs)})"
                )

    # ---- tensors for one request (one row) -------------------------------------

    def controls_for(self, start: bool, end: bool, sequence_id: SequenceId) -> Tensors:
        tensors: Tensors = {}
        for control in self.controls:
            if control.kind == CORRID:
                tensors[control.input] = self._row(_corrid(control, sequence_id, self.model))
                continue
            flag = start if control.kind == START else end if control.kind == END else True
            value = control.false_true[1 if flag else 0]
            dtype = datatypes.from_name(control.datatype).numpy
            tensors[control.input] = self._row(np.asarray(value, dtype=dtype))
        return tensors

    def initial_states(self) -> Tensors:
        """Each state's value at a sequence's start: zeros (Triton leaves it undefined
        unless initial_state says zero_data; zeros are a defined choice)."""
        states: Tensors = {}
        for state in self.states:
            datatype = datatypes.from_name(state.datatype)
            batch: tuple[int, ...] = (1,) if self.batches else ()
            if datatype.name == "BYTES":
                states[state.input] = np.full(batch + state.initial_dims, b"", dtype=object)
            else:
                states[state.input] = np.zeros(batch + state.initial_dims, datatype.numpy)
        return states

    def defaults(self, rows: int) -> Tensors:
        """Controls and states for a call outside any sequence (warm-up, canary,
        profiling): a ready request of sequence 0, neither starting nor ending."""
        one = {**self.controls_for(False, False, 0), **self.initial_states()}
        if not self.batches:
            return one
        return {name: np.repeat(array, rows, axis=0) for name, array in one.items()}

    def _row(self, value: np.ndarray) -> np.ndarray:
        return value.reshape((1, 1) if self.batches else (1,))


def _control(name: str, control: mc.ModelSequenceBatching.Control, where: str) -> Control:
    kind = control.kind
    label = Kind.Kind.Name(kind)
    if kind == CORRID:
        datatype = datatypes.BY_CONFIG_TYPE.get(control.data_type)
        if datatype is None or datatype.name not in CORRID_TYPES:
            raise ModelLoadError(
                f"{where}: {label} control '{name}' needs data_type TYPE_UINT64, TYPE_INT64, "
                "TYPE_UINT32, TYPE_INT32 or TYPE_STRING"
            )
        return Control(name, kind, datatype.name)
    choices: list[tuple[str, Sequence[object]]] = [
        ("INT32", list(control.int32_false_true)),
        ("FP32", list(control.fp32_false_true)),
        ("BOOL", list(control.bool_false_true)),
    ]
    given = [(datatype, values) for datatype, values in choices if values]
    if len(given) != 1:
        raise ModelLoadError(
            f"{where}: {label} control '{name}' must give exactly one of int32_false_true, "
            "fp32_false_true or bool_false_true"
        )
    flag_type, values = given[0]
    if len(values) != 2:
        raise ModelLoadError(
            f"{where}: {label} control '{name}' must give two values, for false and true"
        )
    return Control(name, kind, flag_type, (values[0], values[1]))


def _state(state: mc.ModelSequenceBatching.State, where: str) -> State:
    if not state.input_name or not state.output_name:
        raise ModelLoadError(f"{where}: a state needs input_name and output_name")
    datatype = datatypes.BY_CONFIG_TYPE.get(state.data_type)
    if datatype is None:
        raise ModelLoadError(f"{where}: state '{state.input_name}' has no valid data_type")
    dims = tuple(1 if d == VARIABLE else int(d) for d in state.dims)
    for initial in state.initial_state:
        if initial.WhichOneof("state_data") == "data_file":
            raise ModelLoadError(
                f"{where}: state '{state.input_name}': initial_state from a data_file is not "
                "supported by infergate; use zero_data (docs/triton-compatibility.md)"
            )
        dims = tuple(int(d) for d in initial.dims) or dims
    return State(state.input_name, state.output_name, datatype.name, dims)


def _corrid(control: Control, sequence_id: SequenceId, model: str) -> np.ndarray:
    if control.datatype == "BYTES":
        return np.asarray([str(sequence_id).encode()], dtype=object)
    if isinstance(sequence_id, str):
        raise InvalidInput(
            f"model '{model}' takes its correlation ID as {control.datatype} (control input "
            f"'{control.input}'), so its sequence_id must be an integer, not a string"
        )
    low, high = _CORRID_RANGES[control.datatype]
    if not low <= sequence_id <= high:
        raise InvalidInput(
            f"sequence_id {sequence_id} does not fit model '{model}''s correlation ID "
            f"control '{control.input}' ({control.datatype})"
        )
    return np.asarray(sequence_id, dtype=datatypes.from_name(control.datatype).numpy)


_CORRID_RANGES = {
    "UINT64": (0, 2**64 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT32": (0, 2**32 - 1),
    "INT32": (-(2**31), 2**31 - 1),
}


def state_outputs(spec: SequenceSpec | None) -> Mapping[str, str]:
    """State output name -> the input it feeds."""
    return {} if spec is None else {s.output: s.input for s in spec.states}
