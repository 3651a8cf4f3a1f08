"""The real NVIDIA Triton Inference Server (2.51, CPU) as the peer section's peer.

Where it comes from: PyPI's `nvidia-pytriton` 0.7.0 wheel bundles the `tritonserver`
binary, its python backend and python-backend stubs per Python version. It needs
tritonclient ~=2.50, so it gets a virtual environment of its own (TRITON_VENV,
`.venv-triton/`, gitignored), which ensure_triton_env sets up on first use with
`pip install`, together with the onnxruntime release this project's environment runs
(so both servers run the same runtime).

How it serves: that build has no onnxruntime backend, so onnxruntime runs inside
Triton's python backend: each model is a model.py (MODEL_PY, below) that loads the
ONNX file with one intra-op thread, and takes whatever requests Triton's C++ dynamic
batcher hands it as one batch. Path: gRPC -> Triton's C++ front end and dynamic
batcher -> the python-backend stub (a process per model instance, tensors through
shared memory) -> onnxruntime.

What it takes to run here (measured):
- the stub links libpython3.11.so; with Debian's first on the loader path it fails
  with "'_thread.RLock' object has no attribute '_recursion_count'", so the venv
  interpreter's own LIBDIR goes first on LD_LIBRARY_PATH, then nvidia_pytriton.libs;
- the stub finds numpy and onnxruntime through the venv's python, so the venv's bin
  goes first on PATH;
- each server gets a shared-memory prefix of its own
  (`--backend-config=python,shm-region-prefix-name=...`), so servers never collide;
- every endpoint binds 127.0.0.1; HTTP and metrics are off.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from bench.config import ROOT
from bench.peer_models import MODELS, PeerModel, model_config_text, write_model_folder
from bench.peer_process import ServerError, ServerProcess, free_port, grpc_ready, server_process
from bench.progress import log

PYTRITON = "nvidia-pytriton==0.7.0"
# BENCH_TRITON_VENV moves it (a shared location, say).
TRITON_VENV = Path(os.environ.get("BENCH_TRITON_VENV") or ROOT / ".venv-triton")
STAMP = "infergate-bench.json"
INSTALL_TIMEOUT_S = 1800.0
# onnxruntime threads inside the stub: one intra-op thread, as measured in issue 21.
ORT_THREADS = 1
INSTANCES = 1

# The python backend's model: onnxruntime on the ONNX file beside it.
MODEL_PY = '''\
"""Written by infergate's bench (bench/peer_triton.py): onnxruntime inside Triton's
python backend. Triton's dynamic batcher hands execute() several requests; they run
as one onnxruntime batch and the outputs are split back by rows."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.inputs
        }
        rows = [a.shape[0] for a in arrays[self.inputs[0]]]
        if len(requests) == 1:
            feed = {name: parts[0] for name, parts in arrays.items()}
        else:
            feed = {name: np.concatenate(parts) for name, parts in arrays.items()}
        results = self.session.run(self.outputs, feed)
        responses = []
        start = 0
        for n in rows:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + n]))
                for name, result in zip(self.outputs, results)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.session = None
'''


class TritonUnavailable(RuntimeError):
    """Triton could not be installed here (no registry, say): the section skips it."""


@dataclass(frozen=True)
class TritonEnv:
    """An installed Triton: the venv and the paths its server needs."""

    venv: Path
    python: Path
    server_dir: Path  # .../site-packages/pytriton/tritonserver
    libs_dir: Path  # .../site-packages/nvidia_pytriton.libs
    libpython_dir: str | None  # the venv interpreter's LIBDIR
    python_version: str  # "3.11"
    versions: Mapping[str, str]  # package -> version (nvidia-pytriton, onnxruntime, numpy)

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return (
            self.server_dir
            / "python_backend_stubs"
            / self.python_version
            / "triton_python_backend_stub"
        )

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.versions.items())


def requirements() -> list[str]:
    """What the venv gets: PyTriton, and onnxruntime at this environment's version."""
    wanted = [PYTRITON]
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            wanted.append(f"onnxruntime=={importlib.metadata.version(name)}")
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    else:
        wanted.append("onnxruntime")
    return wanted


_PROBE = r"""
import importlib.metadata, importlib.util, json, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
root = list(spec.submodule_search_locations)[0]
import numpy, onnxruntime
versions = {n: importlib.metadata.version(n) for n in ("nvidia-pytriton", "onnxruntime", "numpy")}
print(json.dumps({
    "pytriton": root,
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "soname": sysconfig.get_config_var("INSTSONAME"),
    "python": "%d.%d" % sys.version_info[:2],
    "versions": versions,
}))
"""


def _probe(venv: Path) -> TritonEnv:
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise TritonUnavailable(f"{venv} is incomplete: {proc.stderr.strip().splitlines()[-1:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    root = Path(info["pytriton"])
    libdir = info["libdir"]
    if not (libdir and info["soname"] and (Path(libdir) / info["soname"]).exists()):
        libdir = None
    env = TritonEnv(
        venv=venv,
        python=python,
        server_dir=root / "tritonserver",
        libs_dir=root.parent / "nvidia_pytriton.libs",
        libpython_dir=libdir,
        python_version=info["python"],
        versions=info["versions"],
    )
    missing = [
        p
        for p in (
            env.binary,
            env.stub,
            env.server_dir / "backends" / "python" / "libtriton_python.so",
        )
        if not p.exists()
    ]
    if missing:
        raise TritonUnavailable(f"the PyTriton wheel lacks {', '.join(map(str, missing))}")
    return env


def ensure_triton_env(venv: Path = TRITON_VENV) -> TritonEnv:
    """The Triton venv, installed on first use (a few minutes: ~60 MB of wheels).

    Raises TritonUnavailable with the reason when it cannot be installed.
    """
    wanted = requirements()
    stamp = venv / STAMP
    try:
        if json.loads(stamp.read_text()).get("requirements") == wanted:
            return _probe(venv)
    except (OSError, ValueError, TritonUnavailable):
        pass
    log(
        f"peer: setting up Triton in {venv} (first use: pip install {' '.join(wanted)}; "
        "this takes a few minutes)"
    )
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
        proc = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *wanted,
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        raise TritonUnavailable(f"could not create {venv}: {(exc.stderr or '').strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TritonUnavailable(f"pip install ran past {exc.timeout:.0f}s") from exc
    except OSError as exc:
        raise TritonUnavailable(f"could not create {venv}: {exc}") from exc
    if proc.returncode != 0:
        lines = [
            line
            for line in (proc.stdout + proc.stderr).strip().splitlines()
            if not line.startswith("WARNING: Location")
        ]
        raise TritonUnavailable(
            f"pip install {' '.join(wanted)} failed (exit {proc.returncode}): "
            + " / ".join(lines[-3:])
        )
    env = _probe(venv)
    stamp.write_text(json.dumps({"requirements": wanted, "versions": dict(env.versions)}) + "\n")
    log(f"peer: Triton installed ({env.describe()})")
    return env


# ---- the repository and the server --------------------------------------------------------


def triton_repository(
    dest: Path, files: Mapping[str, Path], models: Sequence[PeerModel] = MODELS
) -> Path:
    """Triton's repository: per model a python-backend config with the section's
    batching, one CPU instance, and MODEL_PY beside a symlink to the ONNX file."""
    for model in models:
        text = model_config_text(
            model,
            backend="python",
            instances=INSTANCES,
            parameters={"intra_op_threads": str(ORT_THREADS)},
            header="# Written by the benchmark (bench/peer_triton.py).\n",
        )
        write_model_folder(dest, model, files[model.name], text, {"model.py": MODEL_PY})
    return dest


def backend_directory(env: TritonEnv, dest: Path) -> Path:
    """A backend directory holding the python backend with the stub for this Python
    (the wheel keeps the stubs apart, one folder per Python version)."""
    python = dest / "python"
    python.mkdir(parents=True, exist_ok=True)
    source = env.server_dir / "backends" / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(source / name, python / name)
    shutil.copy2(env.stub, python / env.stub.name)
    return dest


def server_env(env: TritonEnv) -> dict[str, str]:
    environ = dict(os.environ)
    environ["CUDA_VISIBLE_DEVICES"] = ""
    environ["PATH"] = os.pathsep.join(filter(None, (str(env.venv / "bin"), environ.get("PATH"))))
    environ["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, (env.libpython_dir, str(env.libs_dir), environ.get("LD_LIBRARY_PATH")))
    )
    # This process's venv must not leak into the stub's imports.
    environ.pop("PYTHONPATH", None)
    environ.pop("PYTHONHOME", None)
    environ["VIRTUAL_ENV"] = str(env.venv)
    return environ


_servers = count()


def server_command(
    env: TritonEnv, repository: Path, backends: Path, port: int, shm_prefix: str
) -> list[str]:
    return [
        str(env.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={port}",
        "--allow-http=false",
        "--allow-metrics=false",
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--log-info=true",
        "--log-verbose=0",
    ]


@contextmanager
def triton_server(
    env: TritonEnv,
    repository: Path,
    workdir: Path,
    log_path: Path,
    models: Sequence[str],
) -> Iterator[ServerProcess]:
    """tritonserver on `repository`, ready (every model in `models` loaded); stopped
    (SIGINT, then the stubs killed if any is left) when the block ends."""
    backends = backend_directory(env, workdir / "triton-backends")
    shm_prefix = f"infergate_bench_{os.getpid()}_{next(_servers)}_"
    for attempt in range(2):  # a port taken between free_port() and the bind: once more
        port = free_port()
        stack = ExitStack()
        try:
            server = stack.enter_context(
                server_process(
                    "triton",
                    server_command(env, repository, backends, port, shm_prefix),
                    log_path,
                    port=port,
                    ready=lambda s: grpc_ready(s.url, models),
                    env=server_env(env),
                    ready_timeout_s=300.0,
                    stop_timeout_s=30.0,
                    after_stop=lambda: _remove_shm(shm_prefix),
                )
            )
        except ServerError as exc:
            if attempt == 0 and "address already in use" in str(exc).lower():
                continue
            raise
        with stack:
            yield server
        return


def _remove_shm(prefix: str) -> None:
    """Shared-memory regions a killed server left behind (a graceful stop leaves none)."""
    shm = Path("/dev/shm")
    for path in shm.glob(f"{prefix}*") if shm.is_dir() else ():
        path.unlink(missing_ok=True)
