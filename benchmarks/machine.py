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
)
ISA_FLAGS = (
    "sse4_1",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
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


def isa_class() -> str:
    """The instruction-set class that decides which int8 kernels onnxruntime runs here: ``avx512vnni``, ``avxvnni``
    (AVX2 with VNNI), ``avx512``, ``avx2``, ``sse4``, ``arm64`` or ``unknown``."""
    flags = set(cpu_flags())
    for flag, name in (
        ("avx512_vnni", "avx512vnni"),
        ("avx_vnni", "avxvnni"),
        ("avx512bw", "avx512"),
        ("avx2", "avx2"),
    ):
        if flag in flags:
            return name
    if "sse4_1" in flags:
        return "sse4"
    if "asimd" in flags or platform.machine() in ("aarch64", "arm64"):
        return "arm64"
    return "unknown"


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
