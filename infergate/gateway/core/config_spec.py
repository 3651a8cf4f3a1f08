"""Between a ModelConfig and the tensor specs it declares (infergate.schema.tensors).

A config's dims leave out the batch dimension; a spec's shapes include it (-1) when
the model batches. The loader derives a config from the artifact where none is
written, and checks a written one against what the artifact really has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from infergate.gateway.core.sequence_spec import SequenceSpec
from infergate.protocol import model_config_pb2 as mc
from infergate.schema import datatypes
from infergate.schema.errors import ModelLoadError, shown_list
from infergate.schema.tensors import VARIABLE, ModelSpec, TensorSpec


def spec_from_config(config: mc.ModelConfig) -> ModelSpec:
    """The spec a ModelConfig declares (batch dim added back when it batches)."""
    batch: tuple[int, ...] = (VARIABLE,) if config.max_batch_size > 0 else ()

    def convert(name: str, data_type: int, dims: Sequence[int], kind: str) -> TensorSpec:
        found = datatypes.BY_CONFIG_TYPE.get(data_type)
        if found is None:
            raise ModelLoadError(
                f"model '{config.name}': {kind} '{name}' has data_type "
                f"{mc.DataType.Name(data_type) if data_type in mc.DataType.values() else data_type}"
                ", which is not supported"
            )
        return TensorSpec(name, found.name, batch + tuple(int(d) for d in dims))

    return ModelSpec(
        inputs=tuple(convert(i.name, i.data_type, i.dims, "input") for i in config.input),
        outputs=tuple(convert(o.name, o.data_type, o.dims, "output") for o in config.output),
        max_batch_size=max(0, config.max_batch_size),
    )


def config_from_artifact(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    default_max_batch_size: int,
) -> mc.ModelConfig:
    """A ModelConfig for a model that came without one, from the artifact's own specs.

    When every input and output has a variable first dimension, that dimension is
    taken as the batch dimension and the model batches up to default_max_batch_size.
    """
    tensors = [*inputs, *outputs]
    batches = bool(tensors) and all(t.shape and t.shape[0] == VARIABLE for t in tensors)
    config = mc.ModelConfig(name=name, max_batch_size=default_max_batch_size if batches else 0)
    skip = 1 if batches else 0
    for t in inputs:
        config.input.add(
            name=t.name,
            data_type=datatypes.from_name(t.datatype).config_type,
            dims=list(t.shape[skip:]),
        )
    for t in outputs:
        config.output.add(
            name=t.name,
            data_type=datatypes.from_name(t.datatype).config_type,
            dims=list(t.shape[skip:]),
        )
    return config


def reconcile(
    config: mc.ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> ModelSpec:
    """Check a written config against what the artifact really has; the config's spec.

    Every tensor the config names must exist in the artifact with the same datatype
    and a compatible shape: its `reshape` where it has one (the shape the runtime
    sees), else its dims. An artifact input the config leaves out is an error too,
    since the runtime would refuse the call later, unless the gateway supplies it (a
    sequence model's control inputs and implicit states, which its
    sequence_batching block names and checks). The config may be more specific than
    the artifact (a fixed dim where the artifact has a variable one), not less.
    """
    declared = spec_from_config(config)
    where = f"model '{config.name}'"
    batch: tuple[int, ...] = (VARIABLE,) if config.max_batch_size > 0 else ()
    runtime_shapes = {
        **{i.name: batch + _reshaped(where, "input", i) for i in config.input},
        **{o.name: batch + _reshaped(where, "output", o) for o in config.output},
    }

    def check(kind: str, want: Sequence[TensorSpec], have: Sequence[TensorSpec]) -> None:
        by_name = {t.name: t for t in have}
        for spec in want:
            actual = by_name.get(spec.name)
            if actual is None:
                raise ModelLoadError(
                    f"{where}: config names {kind} '{spec.name}', but the model's {kind}s "
                    f"are {sorted(by_name)}"
                )
            if actual.datatype != spec.datatype:
                raise ModelLoadError(
                    f"{where}: {kind} '{spec.name}' is {spec.datatype} in the config "
                    f"but {actual.datatype} in the model"
                )
            shape = runtime_shapes.get(spec.name, spec.shape)
            if not _shapes_compatible(shape, actual.shape):
                what = "reshape" if shape != spec.shape else "shape"
                raise ModelLoadError(
                    f"{where}: {kind} '{spec.name}' has {what} {list(shape)} in the "
                    f"config (batch dim included) but {list(actual.shape)} in the model"
                )

    check("input", declared.inputs, inputs)
    check("output", declared.outputs, outputs)
    sequence = SequenceSpec.from_config(config)
    supplied: frozenset[str] = frozenset()
    if sequence is not None:
        sequence.check(inputs, outputs)
        supplied = sequence.supplied_inputs()
        clash = supplied & {t.name for t in declared.inputs}
        if clash:
            raise ModelLoadError(
                f"{where}: inputs {sorted(clash)} are sequence_batching controls or states, "
                "which the gateway supplies: leave them out of the config's inputs"
            )
    missing = {t.name for t in inputs} - {t.name for t in declared.inputs} - supplied
    if missing:
        raise ModelLoadError(f"{where}: the config leaves out model inputs {sorted(missing)}")
    return declared


def _reshaped(where: str, kind: str, tensor: mc.ModelInput | mc.ModelOutput) -> tuple[int, ...]:
    """The shape the runtime has for a tensor (without the batch dim): its reshape
    when it has one, checked to hold as many elements as its dims."""
    dims = tuple(int(d) for d in tensor.dims)
    if not tensor.HasField("reshape"):
        return dims
    shape = tuple(int(d) for d in tensor.reshape.shape)
    if dims.count(VARIABLE) > 1 or shape.count(VARIABLE) > 1:
        raise ModelLoadError(
            f"{where}: {kind} '{tensor.name}': a reshape between shapes with more than one "
            "variable dimension is not supported"
        )
    if (VARIABLE in dims) != (VARIABLE in shape) or (
        VARIABLE not in dims and math.prod(dims) != math.prod(shape)
    ):
        raise ModelLoadError(
            f"{where}: {kind} '{tensor.name}': reshape {shown_list(shape)} does not hold the "
            f"same elements as dims {shown_list(dims)}"
        )
    return shape


def _shapes_compatible(declared: Sequence[int], actual: Sequence[int]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(a in (VARIABLE, d) for d, a in zip(declared, actual, strict=True))
