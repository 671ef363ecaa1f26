"""Which inference engine runs the graph, and the rule ``backend="auto"`` follows; imports no engine."""

from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from runtime.artifact import Precision
from runtime.cpu import isa_flags

OPENVINO_INSTALL = "pip install 'minilm-stsb-onnx[openvino]'"
# CPU flags whose presence makes the OpenVINO path the faster one (bf16 attention and element-wise ops next to u8 x s8
# matrix multiplies); without them OpenVINO computes those in f32 and the gain measured smaller (README, "Backends").
OPENVINO_AUTO_FLAGS = ("avx512_bf16", "amx_bf16")
# Whether "auto" may pick OpenVINO at all. Off: on the one CPU measured (Zen 4 EPYC, 2 threads, chunk-interleaved A/B
# through the Encoder, idle VM) OpenVINO on the shipped int8 graph, under the gates (f32, unpadded batches), ran 0.77x
# onnxruntime on STS-B dev at batch 32, 0.78x on 200-256-token passages and 0.42x at batch 1 (its 354-node graph pays
# a per-inference and per-shape cost), so it is not the faster default; backend="openvino" opts in.
AUTO_PICKS_OPENVINO = False


class Backend(str, Enum):
    """The inference engine: ``auto`` follows :func:`auto_backend`; ``onnxruntime`` is the exact, portable path."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Runner(Protocol):
    """What the Encoder needs of an engine: one padded batch in, one float32 (n, dim) array out; thread-safe."""

    # True when the engine's vectors depend on padding, so batches must hold texts of one token length only.
    equal_lengths: bool

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class AutoChoice:
    """The backend ``auto`` resolves to, and why (said in ``Encoder.info``)."""

    backend: Backend
    reason: str


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def auto_backend(device: str, precision: Precision, flags: tuple[str, ...] | None = None) -> AutoChoice:
    """The rule of ``backend="auto"``: onnxruntime (while :data:`AUTO_PICKS_OPENVINO` is off). With it on: OpenVINO for
    the int8 graph on an x86-64 CPU with AVX512_BF16 or AMX when the ``openvino`` extra is installed; onnxruntime in
    every other case (CUDA, fp32/fp16 graphs, other CPUs, no extra)."""
    if not AUTO_PICKS_OPENVINO:
        return AutoChoice(Backend.ONNXRUNTIME, "auto keeps onnxruntime (OpenVINO measured slower at batch 1)")
    if device != "cpu":
        return AutoChoice(Backend.ONNXRUNTIME, f"device {device}: OpenVINO runs only on the CPU here")
    if precision is not Precision.INT8:
        return AutoChoice(Backend.ONNXRUNTIME, f"{precision.value} graph: auto uses OpenVINO only for the int8 graph")
    present = isa_flags() if flags is None else flags
    wanted = [f for f in OPENVINO_AUTO_FLAGS if f in present]
    if not wanted or platform.machine().lower() not in ("x86_64", "amd64"):
        return AutoChoice(Backend.ONNXRUNTIME, f"CPU lacks {' and '.join(OPENVINO_AUTO_FLAGS)}")
    if not openvino_installed():
        return AutoChoice(Backend.ONNXRUNTIME, f"openvino not installed ({OPENVINO_INSTALL})")
    return AutoChoice(Backend.OPENVINO, f"int8 graph, CPU has {wanted[0]}, openvino installed")
