"""Everything onnxruntime-specific: providers, CUDA availability, session options, graph contract check."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import logging
import sys
from enum import Enum
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import install
from runtime.artifact import INPUT_NAMES, OUTPUT_NAME
from runtime.cpu import restricted_cores
from runtime.errors import ArtifactError, ProviderUnavailable

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class Provider(str, Enum):
    """Where to run: ``auto`` picks CUDA when onnxruntime offers it, else CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    return list(ort.get_available_providers())


def onnxruntime_build() -> str:
    """The imported onnxruntime's distribution and version, e.g. ``onnxruntime-gpu 1.31.1``."""
    try:
        from onnxruntime.capi import build_and_package_info as info

        return f"{info.package_name} {info.__version__}"
    except (ImportError, AttributeError):
        return f"onnxruntime {ort.__version__}"


@functools.cache
def cuda_driver_problem() -> str | None:
    """Why this machine cannot run CUDA at all (no NVIDIA driver, no device), or None when it can."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        driver = ctypes.CDLL(name)
    except OSError as err:
        return f"no NVIDIA driver on this machine ({name} does not load: {err})"
    status = driver.cuInit(0)
    if status != 0:
        return f"the NVIDIA driver did not initialise (cuInit returned CUDA error {status})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value < 1:
        return f"the NVIDIA driver sees no CUDA device (cuDeviceGetCount: error {status}, {count.value} devices)"
    return None


def cuda_problem() -> str | None:
    """Why a CUDA session cannot be had here, or None when onnxruntime offers CUDA and a device is present."""
    if CUDA_PROVIDER not in available_providers():
        notes = "".join("\n" + m for m in install.clashes())
        return (
            f"{onnxruntime_build()} offers only {available_providers()}: install the CUDA build of this runtime, "
            f"{install.GPU_INSTALL_HINT}, in an environment without the onnxruntime (CPU) package{notes}"
        )
    return cuda_driver_problem()


def session_options(threads: int | None) -> ort.SessionOptions:
    """Full graph optimisation; ``threads`` bounds intra-op parallelism. None: onnxruntime's default (one thread per
    physical core), except in a process held to some of the machine's CPUs, which gets one per core it may use."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is None:
        # onnxruntime's default pool pins one thread to each of the MACHINE's physical cores, ignoring the process's
        # affinity: under `taskset -c 0` a pool thread ran on core 1 (or pthread_setaffinity_np fails in a cpuset
        # container, microsoft/onnxruntime#8313). An explicit count is never pinned.
        threads = restricted_cores()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def create_session(
    path: Path, dimension: int, device: str, threads: int | None, device_id: int = 0
) -> ort.InferenceSession:
    """Build the session for an already hash-verified graph and check its input/output contract."""
    providers: list[str | tuple[str, dict[str, object]]] = [CPU_PROVIDER]
    if device == "cuda":
        preload_cuda_libraries()
        cuda_options: dict[str, object] = {
            "device_id": device_id,
            "arena_extend_strategy": "kSameAsRequested",  # grow by what a batch needs, not in powers of two
            "do_copy_in_default_stream": True,
        }
        providers = [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=providers)
    except Exception as err:  # onnxruntime raises its own (non-public) exception types
        raise ArtifactError(f"{path}: onnxruntime cannot load the graph: {err}") from err
    if device == "cuda" and CUDA_PROVIDER not in session.get_providers():
        # onnxruntime falls back to the CPU when the CUDA libraries fail to load; a CUDA request must not.
        raise ProviderUnavailable(
            f"{path}: {onnxruntime_build()} could not create its CUDA provider (the session fell back to "
            f"{session.get_providers()}); onnxruntime's log above names the library that failed. It needs the "
            f"CUDA {_cuda_version()} and cuDNN 9 libraries: pip install '{install.GPU_DISTRIBUTION}[cuda]' installs "
            "them, or import a torch built for the same CUDA major version before runtime"
        )
    check_contract(session, path, dimension)
    return session


@functools.cache
def preload_cuda_libraries() -> None:
    """Load pip-installed CUDA/cuDNN libraries (nvidia-* wheels) so onnxruntime-gpu finds them without torch."""
    if "torch" in sys.modules or importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # preload_dlls prints what it could not load
        ort.preload_dlls()
    if printed.getvalue().strip():
        log.warning("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


def _cuda_version() -> str:
    try:
        from onnxruntime.capi import build_and_package_info as info

        return str(info.cuda_version)
    except (ImportError, AttributeError):
        return "(version of this onnxruntime-gpu build)"


def infer(session: ort.InferenceSession, device: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run one batch; on CUDA through IO binding, so inputs go to the device once and the output comes back once."""
    if device == "cpu":
        (out,) = session.run([OUTPUT_NAME], feeds)
        return np.asarray(out)
    return infer_bound(session, device, feeds)


def infer_bound(session: ort.InferenceSession, device: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """IO-bound run with the output allocated on ``device`` ("cuda" or "cpu") and copied to host at the end."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    binding.bind_output(OUTPUT_NAME, device)
    session.run_with_iobinding(binding)
    return np.asarray(binding.copy_outputs_to_cpu()[0])


class OnnxRuntimeRunner:
    """The Encoder's view of an onnxruntime session (a session is thread-safe: one serves every thread)."""

    equal_lengths = False
    cuts: tuple[int, ...] = ()

    def __init__(self, session: ort.InferenceSession, device: str, threads: int | None) -> None:
        self.session, self.device, self._threads = session, device, threads

    def tokens_per_run(self, width: int) -> int | None:
        """The device's default run size (runtime.batching.TOKENS_PER_RUN)."""
        return None

    @classmethod
    def create(cls, graph: Path, dimension: int, device: str, threads: int | None) -> OnnxRuntimeRunner:
        """A session for an already hash-verified graph (onnxruntime reads the file itself: a Python bytes copy
        would cost ~20 MiB more peak RSS)."""
        return cls(create_session(graph, dimension, device, threads), device, threads)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed one padded batch -> float32 (n, dim)."""
        return infer(self.session, self.device, {"input_ids": input_ids, "attention_mask": attention_mask})

    def info(self) -> dict[str, object]:
        """Engine, provider and intra-op threads (None: onnxruntime's default, one per physical core)."""
        threads = self._threads if self._threads is not None else restricted_cores()
        return {
            "backend": "onnxruntime",
            "engine": onnxruntime_build(),
            "providers": list(self.session.get_providers()),
            "threads": threads,
        }


def check_contract(session: ort.InferenceSession, path: Path, dimension: int) -> None:
    """The graph must take input_ids/attention_mask (int64) and return sentence_embedding (batch, dimension)."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if set(inputs) != set(INPUT_NAMES):
        raise ArtifactError(f"{path}: graph inputs {sorted(inputs)}, expected {list(INPUT_NAMES)}")
    for name in INPUT_NAMES:
        if inputs[name].type != "tensor(int64)":
            raise ArtifactError(f"{path}: input {name!r} is {inputs[name].type}, expected tensor(int64)")
    if OUTPUT_NAME not in outputs:
        raise ArtifactError(f"{path}: graph outputs {sorted(outputs)}, expected {OUTPUT_NAME!r}")
    out = outputs[OUTPUT_NAME]
    if out.type != "tensor(float)" or len(out.shape) != 2 or out.shape[1] != dimension:
        raise ArtifactError(
            f"{path}: output {OUTPUT_NAME!r} is {out.type} {out.shape}, expected tensor(float) [batch, {dimension}]"
        )
