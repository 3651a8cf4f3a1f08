from google.protobuf import field_mask_pb2 as _field_mask_pb2
from . import model_config_pb2 as _model_config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Artifact(_message.Message):
    __slots__ = ("filename", "sha256", "size")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    sha256: str
    size: int
    def __init__(self, filename: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class RegisterModelHeader(_message.Message):
    __slots__ = ("name", "config", "version", "artifacts", "wait_replicas_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_REPLICAS_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _model_config_pb2.ModelConfig
    version: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    wait_replicas_s: float
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_model_config_pb2.ModelConfig, _Mapping]] = ..., version: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., wait_replicas_s: _Optional[float] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("filename", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: RegisterModelHeader
    chunk: ArtifactChunk
    def __init__(self, header: _Optional[_Union[RegisterModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[ArtifactChunk, _Mapping]] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("name", "version", "backend", "device", "load_ms", "replaced_versions", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    REPLACED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    backend: str
    device: str
    load_ms: float
    replaced_versions: _containers.RepeatedScalarFieldContainer[str]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModel]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., load_ms: _Optional[float] = ..., replaced_versions: _Optional[_Iterable[str]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModel, _Mapping]]] = ...) -> None: ...

class UpdateModelConfigRequest(_message.Message):
    __slots__ = ("name", "config", "update_mask", "wait_replicas_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    WAIT_REPLICAS_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: _model_config_pb2.ModelConfig
    update_mask: _field_mask_pb2.FieldMask
    wait_replicas_s: float
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[_model_config_pb2.ModelConfig, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., wait_replicas_s: _Optional[float] = ...) -> None: ...

class UpdateModelConfigResponse(_message.Message):
    __slots__ = ("config", "replicas")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    config: _model_config_pb2.ModelConfig
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModel]
    def __init__(self, config: _Optional[_Union[_model_config_pb2.ModelConfig, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModel, _Mapping]]] = ...) -> None: ...

class UnregisterModelRequest(_message.Message):
    __slots__ = ("name", "keep_files", "wait_replicas_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEEP_FILES_FIELD_NUMBER: _ClassVar[int]
    WAIT_REPLICAS_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    keep_files: bool
    wait_replicas_s: float
    def __init__(self, name: _Optional[str] = ..., keep_files: _Optional[bool] = ..., wait_replicas_s: _Optional[float] = ...) -> None: ...

class UnregisterModelResponse(_message.Message):
    __slots__ = ("versions", "files_removed", "replicas")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FILES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedScalarFieldContainer[str]
    files_removed: bool
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModel]
    def __init__(self, versions: _Optional[_Iterable[str]] = ..., files_removed: _Optional[bool] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModel, _Mapping]]] = ...) -> None: ...

class ReplicaModel(_message.Message):
    __slots__ = ("replica", "state", "reason", "versions", "in_step", "position")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    IN_STEP_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    replica: str
    state: str
    reason: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    in_step: bool
    position: str
    def __init__(self, replica: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., in_step: _Optional[bool] = ..., position: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "state", "reason", "serving_version", "versions", "backend", "device", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    reason: str
    serving_version: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    device: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModel]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., serving_version: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModel, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LatencyFigures(_message.Message):
    __slots__ = ("batches", "mean_batch_ms", "mean_rows_per_batch", "fixed_ms", "per_row_ms", "p50_ms", "p95_ms")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ROWS_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    FIXED_MS_FIELD_NUMBER: _ClassVar[int]
    PER_ROW_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    batches: int
    mean_batch_ms: float
    mean_rows_per_batch: float
    fixed_ms: float
    per_row_ms: float
    p50_ms: float
    p95_ms: float
    def __init__(self, batches: _Optional[int] = ..., mean_batch_ms: _Optional[float] = ..., mean_rows_per_batch: _Optional[float] = ..., fixed_ms: _Optional[float] = ..., per_row_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ...) -> None: ...

class Arm(_message.Message):
    __slots__ = ("name", "backend", "device", "variant", "latency", "share", "failures", "circuit", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    device: str
    variant: str
    latency: LatencyFigures
    share: float
    failures: int
    circuit: str
    last_error: str
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., variant: _Optional[str] = ..., latency: _Optional[_Union[LatencyFigures, _Mapping]] = ..., share: _Optional[float] = ..., failures: _Optional[int] = ..., circuit: _Optional[str] = ..., last_error: _Optional[str] = ...) -> None: ...

class RoutingState(_message.Message):
    __slots__ = ("policy", "settings", "unavailable_backends")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UnavailableBackendsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    settings: _containers.ScalarMap[str, str]
    unavailable_backends: _containers.ScalarMap[str, str]
    def __init__(self, policy: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ..., unavailable_backends: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QueueState(_message.Message):
    __slots__ = ("depth", "inflight_batches")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_BATCHES_FIELD_NUMBER: _ClassVar[int]
    depth: int
    inflight_batches: int
    def __init__(self, depth: _Optional[int] = ..., inflight_batches: _Optional[int] = ...) -> None: ...

class ExecutionChoice(_message.Message):
    __slots__ = ("intra_op_threads", "intra_op_threads_reason", "max_inflight_batches", "max_inflight_batches_reason", "inline_below_us", "inline_batches")
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_BATCHES_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_BATCHES_REASON_FIELD_NUMBER: _ClassVar[int]
    INLINE_BELOW_US_FIELD_NUMBER: _ClassVar[int]
    INLINE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    intra_op_threads: int
    intra_op_threads_reason: str
    max_inflight_batches: int
    max_inflight_batches_reason: str
    inline_below_us: float
    inline_batches: int
    def __init__(self, intra_op_threads: _Optional[int] = ..., intra_op_threads_reason: _Optional[str] = ..., max_inflight_batches: _Optional[int] = ..., max_inflight_batches_reason: _Optional[str] = ..., inline_below_us: _Optional[float] = ..., inline_batches: _Optional[int] = ...) -> None: ...

class CacheState(_message.Message):
    __slots__ = ("enabled", "ttl_ms", "hits", "misses", "hit_ratio")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    ttl_ms: int
    hits: int
    misses: int
    hit_ratio: float
    def __init__(self, enabled: _Optional[bool] = ..., ttl_ms: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., hit_ratio: _Optional[float] = ...) -> None: ...

class VersionStatistics(_message.Message):
    __slots__ = ("inference_count", "execution_count", "success", "fail", "last_inference_ms", "mean_queue_ms", "mean_compute_ms", "batch_sizes")
    class BatchSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    LAST_INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    inference_count: int
    execution_count: int
    success: int
    fail: int
    last_inference_ms: int
    mean_queue_ms: float
    mean_compute_ms: float
    batch_sizes: _containers.ScalarMap[int, int]
    def __init__(self, inference_count: _Optional[int] = ..., execution_count: _Optional[int] = ..., success: _Optional[int] = ..., fail: _Optional[int] = ..., last_inference_ms: _Optional[int] = ..., mean_queue_ms: _Optional[float] = ..., mean_compute_ms: _Optional[float] = ..., batch_sizes: _Optional[_Mapping[int, int]] = ...) -> None: ...

class VersionDescription(_message.Message):
    __slots__ = ("version", "state", "reason", "artifacts", "arms", "queue", "cache", "statistics", "routing", "variants", "execution")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: str
    reason: str
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    arms: _containers.RepeatedCompositeFieldContainer[Arm]
    queue: QueueState
    cache: CacheState
    statistics: VersionStatistics
    routing: RoutingState
    variants: _containers.RepeatedCompositeFieldContainer[VariantResult]
    execution: ExecutionChoice
    def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., arms: _Optional[_Iterable[_Union[Arm, _Mapping]]] = ..., queue: _Optional[_Union[QueueState, _Mapping]] = ..., cache: _Optional[_Union[CacheState, _Mapping]] = ..., statistics: _Optional[_Union[VersionStatistics, _Mapping]] = ..., routing: _Optional[_Union[RoutingState, _Mapping]] = ..., variants: _Optional[_Iterable[_Union[VariantResult, _Mapping]]] = ..., execution: _Optional[_Union[ExecutionChoice, _Mapping]] = ...) -> None: ...

class SharedCache(_message.Message):
    __slots__ = ("entries", "bytes", "max_bytes", "hits", "misses", "evictions", "hit_ratio")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    HIT_RATIO_FIELD_NUMBER: _ClassVar[int]
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    hit_ratio: float
    def __init__(self, entries: _Optional[int] = ..., bytes: _Optional[int] = ..., max_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., hit_ratio: _Optional[float] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("name", "state", "reason", "serving_version", "config", "versions", "shared_cache", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SHARED_CACHE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    reason: str
    serving_version: str
    config: _model_config_pb2.ModelConfig
    versions: _containers.RepeatedCompositeFieldContainer[VersionDescription]
    shared_cache: SharedCache
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaModel]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., serving_version: _Optional[str] = ..., config: _Optional[_Union[_model_config_pb2.ModelConfig, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionDescription, _Mapping]]] = ..., shared_cache: _Optional[_Union[SharedCache, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaModel, _Mapping]]] = ...) -> None: ...

class OptimizeModelRequest(_message.Message):
    __slots__ = ("name", "version", "variants", "backends", "calibration_npz", "validation_npz", "thresholds", "use_captured")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_NPZ_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_NPZ_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    USE_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    variants: _containers.RepeatedScalarFieldContainer[str]
    backends: _containers.RepeatedScalarFieldContainer[str]
    calibration_npz: bytes
    validation_npz: bytes
    thresholds: _containers.ScalarMap[str, float]
    use_captured: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., variants: _Optional[_Iterable[str]] = ..., backends: _Optional[_Iterable[str]] = ..., calibration_npz: _Optional[bytes] = ..., validation_npz: _Optional[bytes] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., use_captured: _Optional[bool] = ...) -> None: ...

class VariantResult(_message.Message):
    __slots__ = ("backend", "variant", "status", "reason", "figures", "stale")
    class FiguresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    variant: str
    status: str
    reason: str
    figures: _containers.ScalarMap[str, float]
    stale: bool
    def __init__(self, backend: _Optional[str] = ..., variant: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., figures: _Optional[_Mapping[str, float]] = ..., stale: _Optional[bool] = ...) -> None: ...

class OptimizeModelProgress(_message.Message):
    __slots__ = ("stage", "fraction", "message", "done", "results", "arms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    fraction: float
    message: str
    done: bool
    results: _containers.RepeatedCompositeFieldContainer[VariantResult]
    arms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stage: _Optional[str] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ..., done: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[VariantResult, _Mapping]]] = ..., arms: _Optional[_Iterable[str]] = ...) -> None: ...

class ProfileModelRequest(_message.Message):
    __slots__ = ("name", "version", "batch_sizes", "concurrency", "price_per_hour", "latency_budget_ms", "seconds_per_case")
    class PricePerHourEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_CASE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    concurrency: _containers.RepeatedScalarFieldContainer[int]
    price_per_hour: _containers.ScalarMap[str, float]
    latency_budget_ms: float
    seconds_per_case: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., batch_sizes: _Optional[_Iterable[int]] = ..., concurrency: _Optional[_Iterable[int]] = ..., price_per_hour: _Optional[_Mapping[str, float]] = ..., latency_budget_ms: _Optional[float] = ..., seconds_per_case: _Optional[float] = ...) -> None: ...

class ProfileModelResponse(_message.Message):
    __slots__ = ("report_markdown", "report_json", "plots")
    class PlotsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    REPORT_MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    PLOTS_FIELD_NUMBER: _ClassVar[int]
    report_markdown: str
    report_json: str
    plots: _containers.ScalarMap[str, bytes]
    def __init__(self, report_markdown: _Optional[str] = ..., report_json: _Optional[str] = ..., plots: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
