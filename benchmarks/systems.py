"""The systems under test, declared once as data, and whether this environment can run each."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from benchmarks.config import Paths
from benchmarks.machine import cpu_flags


@dataclass(frozen=True)
class System:
    """One embedding system: which peer adapter runs it, at what precision, and what it needs installed.

    ``distributions`` are the roots of the installed size estimate (extras in brackets count their dependencies).
    """

    name: str
    label: str
    adapter: str
    precision: str
    modules: tuple[str, ...]
    distributions: tuple[str, ...]
    device: str = "cpu"
    needs_checkpoint: bool = True
    backend: str | None = None  # this runtime's backend= ("auto", "onnxruntime", "openvino"); None for peers


ST = ("sentence_transformers", "torch")
ST_DIST = "sentence-transformers"
ORT_MODULES, ORT_DISTS = (*ST, "optimum.onnxruntime"), (ST_DIST, "optimum-onnx[onnxruntime]")
FE_MODULES = ("fastembed", *ORT_MODULES)  # fastembed runs the fp32 graph that sentence-transformers + optimum export
OV_MODULES, OV_DISTS = (*ST, "optimum.intel", "openvino", "nncf"), (ST_DIST, "optimum-intel[openvino]")
# CTranslate2 serves with ctranslate2 + tokenizers only; its conversion (prepare) needs transformers and torch.
CT2_MODULES, CT2_DISTS = ("ctranslate2", "tokenizers", *ST, "transformers"), ("ctranslate2", "tokenizers")


def _runtime(precision: str, device: str = "cpu", distributions: tuple[str, ...] = ("minilm-stsb-onnx",)) -> System:
    name = f"runtime-{precision}" if device == "cpu" else f"runtime-{device}-{precision}"
    return System(
        name, "this runtime", "this_runtime", precision, ("runtime",), distributions, device, False, "onnxruntime"
    )


OV_RUNTIME = ("minilm-stsb-onnx[openvino]",)


SYSTEMS: tuple[System, ...] = (
    System("pytorch-fp32", "PyTorch sentence-transformers", "pytorch_st", "fp32", ST, (ST_DIST,)),
    System("st-onnx-fp32", "sentence-transformers ONNX", "st_onnx", "fp32", ORT_MODULES, ORT_DISTS),
    System("st-onnx-int8", "sentence-transformers ONNX dynamic int8", "st_onnx", "int8", ORT_MODULES, ORT_DISTS),
    System("fastembed-fp32", "fastembed, fp32 graph", "fastembed_onnx", "fp32", FE_MODULES, ("fastembed",)),
    System("openvino-fp32", "sentence-transformers OpenVINO", "st_openvino", "fp32", OV_MODULES, OV_DISTS),
    System("openvino-bf16", "sentence-transformers OpenVINO, bf16", "st_openvino", "bf16", OV_MODULES, OV_DISTS),
    System("openvino-int8", "sentence-transformers OpenVINO static int8", "st_openvino", "int8", OV_MODULES, OV_DISTS),
    _runtime("fp32"),
    _runtime("int8"),
    System(
        "runtime-openvino-int8",
        "this runtime, OpenVINO backend",
        "this_runtime",
        "int8",
        ("runtime", "openvino"),
        OV_RUNTIME,
        needs_checkpoint=False,
        backend="openvino",
    ),
    # runtime.load() with every default: "auto" precision means precision=None (the device's best present graph).
    System(
        "runtime-auto",
        "this runtime, runtime.load() defaults",
        "this_runtime",
        "auto",
        ("runtime",),
        OV_RUNTIME,
        needs_checkpoint=False,
        backend="auto",
    ),
    System("pytorch-cuda-fp32", "PyTorch sentence-transformers", "pytorch_st", "fp32", ST, (ST_DIST,), device="cuda"),
    _runtime("fp16", "cuda", ("minilm-stsb-onnx", "onnxruntime-gpu")),
    System("ctranslate2-fp32", "CTranslate2 Encoder", "ctranslate2_encoder", "fp32", CT2_MODULES, CT2_DISTS),
    System(
        "ctranslate2-int8", "CTranslate2 Encoder, dynamic int8", "ctranslate2_encoder", "int8", CT2_MODULES, CT2_DISTS
    ),
)
BY_NAME = {s.name: s for s in SYSTEMS}


def select(tokens: list[str] | None) -> list[System]:
    """Systems named by ``tokens`` (a full name, or a family prefix such as ``runtime`` or ``openvino``), in order."""
    if not tokens:
        return list(SYSTEMS)
    unknown = [t for t in tokens if not any(_matches(s, t) for s in SYSTEMS)]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; choose from {[s.name for s in SYSTEMS]}")
    return [s for s in SYSTEMS if any(_matches(s, t) for t in tokens)]


def _matches(system: System, token: str) -> bool:
    return system.name == token or system.name.startswith(token + "-")


def unavailable_reason(system: System, paths: Paths) -> str | None:
    """Why ``system`` cannot run here (a missing library, model file or GPU), or None when it can."""
    missing = [m for m in system.modules if not _importable(m)]
    if missing:
        return f"not installed: {', '.join(missing)} (install the 'bench' extra)"
    if system.device == "cuda" and shutil.which("nvidia-smi") is None:
        return "no CUDA device on this machine"
    if system.precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & set(cpu_flags()):
        return "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"
    if system.needs_checkpoint and not (paths.checkpoint / "modules.json").is_file():
        return f"fine-tuned checkpoint {paths.checkpoint} missing (python -m export train)"
    if (
        system.adapter == "this_runtime"
        and system.precision != "auto"
        and not (paths.artifact / f"model.{system.precision}.onnx").is_file()
    ):
        return f"{paths.artifact / f'model.{system.precision}.onnx'} missing (python -m export onnx)"
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
