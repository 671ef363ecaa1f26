"""Which engine embeds which text, on which device and graph: decided once, here, and recorded with the reasons.

:func:`decide` resolves a load request (provider, precision, backend) into a :class:`Decision` without building
anything; :func:`choose` also builds the runner it names, and falls back (CUDA to CPU, OpenVINO to onnxruntime) only
where the request left the choice to ``auto``, recording why. ``Encoder`` calls :func:`choose`; corpus jobs call
:func:`decide` to describe a model without loading it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.artifact import Manifest, Precision, verify
from runtime.cpu import isa_class, isa_flags
from runtime.errors import ArtifactError, BackendUnavailable, ProviderUnavailable
from runtime.install import OPENVINO_INSTALL
from runtime.session import OnnxRuntimeRunner, Provider, cuda_problem

log = logging.getLogger("runtime.encoder")


# backend="auto" on the CPU, per instruction-set class (runtime.cpu.isa_class): texts of this many tokens or more run
# on OpenVINO (the OpenVINO form of the int8 graph: runtime.openvino_form), shorter ones on onnxruntime int8; None:
# measured, and onnxruntime for every text. Only classes where both engines were measured side by side (python -m
# studies.engines), and any OpenVINO path passed the fidelity gates, are listed; every other class keeps onnxruntime
# for every text, unmeasured. (docs/decisions.md, 2026-12-06.)
# - amx: 2-core Intel Xeon with AMX, 2 threads, benchmarks/results/engines-cpu-2core-intel-xeon-amx.json: OpenVINO bf16
#   is faster at batch 32 from 8 tokens on (1.07-1.23x up to 24 tokens, 1.5-1.7x from 48) but slower at batch 1 below
#   32 tokens (0.60x at 8, 0.76x at 16, 0.83x at 20); 20 is where the two, weighted equally, reach parity within the
#   machine's 5 % noise.
# - avx2: 2-core AMD EPYC without AVX-512, 2 threads, engines-cpu-2core-amd-epyc-avx2.json: OpenVINO runs f32 there (no
#   bf16) and was 0.49-0.84x onnxruntime int8 at every length and batch size.
AUTO_OPENVINO_FROM: dict[str, int | None] = {"amx": 20, "avx2": None}
# CPU flags with which OpenVINO computes bf16 natively (its CPU plugin's own default precision there).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# The OpenVINO inference precision: bf16 where the CPU has it, else f32; the variable overrides (f32 or bf16).
PRECISION_ENV = "MINILM_OPENVINO_INFERENCE_PRECISION"
OPENVINO_PRECISIONS = ("bf16", "f32")


class Backend(str, Enum):
    """The inference engine asked for: ``auto`` follows the rule of :func:`decide`; ``onnxruntime`` is the exact,
    portable path (the same vectors on every CPU); ``openvino`` runs every text on OpenVINO (CPU only)."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Runner(Protocol):
    """What the Encoder needs of an engine: one padded batch in, one float32 (n, dim) array out; thread-safe."""

    # True when the engine's vectors depend on padding, so runs must hold texts of one token length only.
    equal_lengths: bool
    # Token counts a run may not straddle (a rule's engine boundaries); empty for a single engine.
    cuts: tuple[int, ...]

    def tokens_per_run(self, width: int) -> int | None:
        """Padded tokens a run whose longest row has ``width`` tokens should hold at most, or None for the device's
        default (runtime.batching.TOKENS_PER_RUN)."""
        ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def info(self) -> dict[str, object]: ...


# Precision preference per device: int8 (MatMulInteger) is a CPU format; GPUs want fp16.
PREFERENCE = {
    "cpu": (Precision.INT8, Precision.FP32, Precision.FP16),
    "cuda": (Precision.FP16, Precision.FP32, Precision.INT8),
}


@dataclass(frozen=True)
class Decision:
    """How an encoder computes: device, graph, and which engine embeds a text of each length, with the reasons.

    ``openvino_from`` is the token count from which texts run on OpenVINO: None means onnxruntime for every text,
    1 means OpenVINO for every text.
    """

    device: str
    precision: Precision
    openvino_from: int | None = None
    openvino_precision: str | None = None
    asked: Backend = Backend.AUTO
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def backend(self) -> str:
        """The engines that run: ``onnxruntime``, ``openvino`` or ``onnxruntime+openvino`` (split by length)."""
        if self.openvino_from is None:
            return Backend.ONNXRUNTIME.value
        return Backend.OPENVINO.value if self.openvino_from <= 1 else "onnxruntime+openvino"

    @property
    def rule(self) -> str:
        """Which engine embeds which texts, in words; a corpus job refuses to resume under another rule."""
        portable = f"onnxruntime {self.precision.value}"
        if self.openvino_from is None:
            return f"{portable}, every text"
        from runtime.openvino_form import VERSION

        openvino = f"openvino {self.openvino_precision} (OpenVINO form v{VERSION} of the {self.precision.value} graph)"
        if self.openvino_from <= 1:
            return f"{openvino}, every text"
        return f"{portable} below {self.openvino_from} tokens, {openvino} from {self.openvino_from} tokens"

    @property
    def portable(self) -> bool:
        """Whether the vectors are the same on every CPU (onnxruntime int8 alone: exact integer arithmetic)."""
        return self.openvino_from is None and self.precision is Precision.INT8 and self.device == "cpu"


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def openvino_precision(flags: tuple[str, ...] | None = None) -> str:
    """OpenVINO's inference precision: ``MINILM_OPENVINO_INFERENCE_PRECISION`` if set, else bf16 on CPUs with
    AMX-BF16 or AVX512_BF16, else f32."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    if value:
        if value not in OPENVINO_PRECISIONS:
            raise ValueError(f"{PRECISION_ENV} must be one of {list(OPENVINO_PRECISIONS)}, got {value!r}")
        return value
    present = isa_flags() if flags is None else flags
    return "bf16" if any(f in present for f in BF16_FLAGS) else "f32"


def decide(
    manifest: Manifest,
    folder: Path,
    provider: Provider,
    precision: Precision | None,
    backend: Backend,
    flags: tuple[str, ...] | None = None,
) -> Decision:
    """The device, graph and length rule for a load request. Explicit requests that cannot be honoured raise, never
    fall back: ``provider="cuda"`` without CUDA, a precision whose graph is absent, ``backend="openvino"`` with CUDA."""
    if backend is Backend.OPENVINO and provider is Provider.CUDA:
        raise BackendUnavailable(
            "backend='openvino' runs on the CPU only; provider='cuda' needs backend='onnxruntime' (or 'auto')"
        )
    device, chosen, reasons = _device_and_graph(
        manifest, folder, Provider.CPU if backend is Backend.OPENVINO else provider, precision
    )
    decision = Decision(device, chosen, asked=backend, reasons=tuple(reasons))
    if backend is Backend.ONNXRUNTIME:
        return _because(decision, "backend='onnxruntime' asked for")
    if backend is Backend.OPENVINO:
        return replace(decision, openvino_from=1, openvino_precision=openvino_precision(flags))
    threshold, why = _auto_openvino_from(device, chosen, flags)
    if threshold is None:
        return _because(decision, why)
    return _because(replace(decision, openvino_from=threshold, openvino_precision=openvino_precision(flags)), why)


def _auto_openvino_from(device: str, precision: Precision, flags: tuple[str, ...] | None) -> tuple[int | None, str]:
    """backend="auto": the token count from which OpenVINO runs texts, or None for onnxruntime alone; and why."""
    if device != "cpu":
        return None, f"auto: onnxruntime on {device} (OpenVINO runs on the CPU only here)"
    if precision is not Precision.INT8:
        return None, f"auto: onnxruntime for the {precision.value} graph (the length rule is for the int8 graph)"
    present = isa_flags() if flags is None else flags
    cpu_class = isa_class(present)
    if cpu_class not in AUTO_OPENVINO_FROM or platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"auto: onnxruntime (no OpenVINO rule measured for CPU class {cpu_class})"
    threshold = AUTO_OPENVINO_FROM[cpu_class]
    if threshold is None:
        return None, f"auto: onnxruntime (OpenVINO measured slower at every text length on CPU class {cpu_class})"
    if not openvino_installed():
        return None, f"auto: onnxruntime (openvino not installed: {OPENVINO_INSTALL})"
    where = "every text" if threshold <= 1 else f"texts of {threshold}+ tokens"
    return threshold, f"auto: OpenVINO for {where} on CPU class {cpu_class} (measured faster, within the gates)"


def _device_and_graph(
    manifest: Manifest, folder: Path, provider: Provider, precision: Precision | None
) -> tuple[str, Precision, list[str]]:
    reasons = []
    problem = cuda_problem() if provider is not Provider.CPU else None
    if provider is Provider.CUDA and problem is not None:
        raise ProviderUnavailable(f"provider='cuda' cannot be used: {problem}")
    present = [p for p in manifest.variants if (folder / p.file_name).is_file()]
    if precision is not None:
        if precision not in manifest.variants:
            raise ArtifactError(
                f"{folder}: no {precision.value} variant in the manifest (has {_names(manifest.variants)})"
            )
        if precision not in present:
            raise ArtifactError(
                f"{folder / precision.file_name}: {precision.value} graph not present (the export pipeline "
                "regenerates it: python -m export onnx)"
            )
    if provider is Provider.AUTO:
        gpu_variant = any(p in present for p in (Precision.FP16, Precision.FP32))
        wanted_gpu = precision in (Precision.FP16, Precision.FP32) if precision else gpu_variant
        device = "cuda" if problem is None and wanted_gpu else "cpu"
        if device == "cpu" and problem is not None:
            reasons.append(f"provider auto: CPU ({problem})")
    else:
        device = provider.value
    if precision is None:
        choices = [p for p in PREFERENCE[device] if p in present]
        if not choices:
            raise ArtifactError(f"{folder}: none of the manifest's graphs {_names(manifest.variants)} is present")
        precision = choices[0]
    return device, precision, reasons


def choose(
    manifest: Manifest,
    folder: Path,
    provider: Provider,
    precision: Precision | None,
    backend: Backend,
    threads: int | None,
) -> tuple[Runner, Decision]:
    """Decide (:func:`decide`) and build the runner. Where the request left the choice to ``auto``, a CUDA session
    that fails to build falls back to the CPU, and OpenVINO that fails to compile falls back to onnxruntime, logged
    and recorded in the decision's reasons; explicit requests raise instead."""
    decision = decide(manifest, folder, provider, precision, backend)
    try:
        return _build(decision, folder, manifest, threads)
    except ProviderUnavailable as err:
        if provider is not Provider.AUTO or decision.device != "cuda":
            raise
        log.warning("CUDA unusable, provider='auto' uses the CPU: %s", err)
        runner, fallback = _build(decide(manifest, folder, Provider.CPU, precision, backend), folder, manifest, threads)
        return runner, _because(fallback, f"provider auto: CPU (CUDA failed: {err})")


def _build(decision: Decision, folder: Path, manifest: Manifest, threads: int | None) -> tuple[Runner, Decision]:
    graph = verify(folder, manifest.variants[decision.precision].graph)
    openvino: Runner | None = None
    if decision.openvino_from is not None:
        try:
            openvino = _openvino_runner(graph, manifest.dimension, threads, decision)
        except (BackendUnavailable, ArtifactError) as err:
            if decision.asked is not Backend.AUTO:
                raise
            log.warning("OpenVINO unusable, backend='auto' uses onnxruntime: %s", err)
            decision = _because(
                replace(decision, openvino_from=None, openvino_precision=None), f"OpenVINO failed: {err}"
            )
        else:
            if decision.openvino_from is not None and decision.openvino_from <= 1:
                return openvino, decision
    portable = OnnxRuntimeRunner.create(graph, manifest.dimension, decision.device, threads)
    if openvino is None or decision.openvino_from is None:
        return portable, decision
    return LengthRouter(portable, openvino, decision.openvino_from), decision


def _because(decision: Decision, reason: str) -> Decision:
    return replace(decision, reasons=(*decision.reasons, reason))


def _openvino_runner(graph: Path, dimension: int, threads: int | None, decision: Decision) -> Runner:
    from runtime.openvino_backend import OpenVINORunner  # imports openvino: only when this backend is asked for

    assert decision.openvino_precision is not None
    return OpenVINORunner(graph, dimension, threads, decision.openvino_precision)


def _names(variants: object) -> list[str]:
    return [p.value for p in variants]  # type: ignore[attr-defined]


class LengthRouter:
    """Two engines behind one runner: rows of fewer than ``cut`` tokens run on ``short``, the others on ``long``.

    A batch holding both kinds (the planner keeps them apart; a caller's own run may not) is split, each part cut to
    its own longest row, so an engine never sees padding the other part's rows would have added.
    """

    def __init__(self, short: Runner, long: Runner, cut: int) -> None:
        self.short, self.long, self.cut = short, long, cut
        self.cuts: tuple[int, ...] = (cut,)
        self.equal_lengths = short.equal_lengths or long.equal_lengths

    def tokens_per_run(self, width: int) -> int | None:
        """The run size of the engine that runs rows of ``width`` tokens."""
        return (self.long if width >= self.cut else self.short).tokens_per_run(width)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embed a right-padded batch -> float32 (n, dim), each row on its length's engine."""
        lengths = attention_mask.sum(axis=1)
        is_long = lengths >= self.cut
        if is_long.all():
            return self.long.run(input_ids, attention_mask)
        if not is_long.any():
            return self.short.run(input_ids, attention_mask)
        parts = []
        for engine, rows in ((self.long, np.flatnonzero(is_long)), (self.short, np.flatnonzero(~is_long))):
            width = int(lengths[rows].max())
            ids = np.ascontiguousarray(input_ids[rows, :width])
            mask = np.ascontiguousarray(attention_mask[rows, :width])
            parts.append((rows, engine.run(ids, mask)))
        out = np.empty((len(lengths), parts[0][1].shape[1]), dtype=np.float32)
        for rows, vectors in parts:
            out[rows] = vectors
        return out

    def info(self) -> dict[str, object]:
        """Both engines' details, under the lengths each one runs."""
        return {
            "backend": "onnxruntime+openvino",
            f"below {self.cut} tokens": self.short.info(),
            f"from {self.cut} tokens": self.long.info(),
        }
