"""Between a ModelConfig and the tensor specs it declares (infergate.schema.tensors).

A config's dims leave out the batch dimension; a spec's shapes include it (-1) when
the model batches. The loader derives a config from the artifact where none is
written, and checks a written one against what the artifact really has.
"""

from __future__ import annotations

from collections.abc import Sequence

from infergate.protocol import model_config_pb2 as mc
from infergate.schema import datatypes
from infergate.schema.errors import ModelLoadError
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
    and a compatible shape; an artifact input the config leaves out is an error too,
    since the runtime would refuse the call later. The config may be more specific
    than the artifact (a fixed dim where the artifact has a variable one), not less.
    """
    declared = spec_from_config(config)
    where = f"model '{config.name}'"

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
            if not _shapes_compatible(spec.shape, actual.shape):
                raise ModelLoadError(
                    f"{where}: {kind} '{spec.name}' has shape {list(spec.shape)} in the "
                    f"config (batch dim included) but {list(actual.shape)} in the model"
                )

    check("input", declared.inputs, inputs)
    check("output", declared.outputs, outputs)
    missing = {t.name for t in inputs} - {t.name for t in declared.inputs}
    if missing:
        raise ModelLoadError(f"{where}: the config leaves out model inputs {sorted(missing)}")
    return declared


def _shapes_compatible(declared: Sequence[int], actual: Sequence[int]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(a in (VARIABLE, d) for d, a in zip(declared, actual, strict=True))
