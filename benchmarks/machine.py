"""The machine a run measured: CPU model, cores, instruction sets, library versions, a file-name slug."""

from __future__ import annotations

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version

from runtime.cpu import cpu_model, isa_class, isa_flags

LIBRARIES = (
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "torch",
    "transformers",
    "sentence-transformers",
    "optimum",
    "optimum-onnx",
    "optimum-intel",
    "openvino",
    "nncf",
    "fastembed",
    "ctranslate2",
    "minilm-stsb-onnx",
    "pyarrow",  # corpus jobs
    "ray",
)


def cpu_flags() -> list[str]:
    """The instruction-set extensions this CPU reports (those that decide onnxruntime's kernels)."""
    return list(isa_flags())


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_name() -> str:
    """``cpu-<cores>core-<cpu slug>-<isa class>``, e.g. ``cpu-2core-amd-epyc-avx2``: results of one instruction-set
    class never overwrite another's, even when the CPUs share a marketing name."""
    name = re.sub(r"\((R|TM|tm)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", " ", cpu_model())
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"
    return f"cpu-{cores()}core-{slug}-{isa_class()}"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries the systems use (absent ones left out)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def describe() -> dict[str, object]:
    """Everything about the machine a result file records."""
    return {
        "name": machine_name(),
        "isa_class": isa_class(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "isa": cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": _memory_gb(),
    }


def _memory_gb() -> float | None:
    if not hasattr(os, "sysconf"):
        return None
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
