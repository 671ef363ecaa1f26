"""The machine a run measured: CPU model, cores, instruction sets, library versions, a file-name slug."""

from __future__ import annotations

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
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
    "minilm-stsb-onnx",
    "pyarrow",  # corpus jobs
    "ray",
)
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
)


def _cpuinfo_field(name: str) -> str | None:
    if not CPUINFO.is_file():
        return None
    match = re.search(rf"^{name}\s*:\s*(.*)$", CPUINFO.read_text(encoding="utf-8", errors="replace"), re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` of /proc/cpuinfo), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set extensions of :data:`ISA_FLAGS` this CPU reports."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split())
    return [f for f in ISA_FLAGS if f in flags]


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_name() -> str:
    """``cpu-<cores>core-<cpu slug>``, e.g. ``cpu-2core-amd-epyc``."""
    name = re.sub(r"\((R|TM|tm)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", " ", cpu_model())
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"
    return f"cpu-{cores()}core-{slug}"


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
