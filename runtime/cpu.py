"""Which instruction-set class this CPU is: it decides which onnxruntime integer kernels run the int8 graph."""

from __future__ import annotations

import platform
import re
from functools import cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# Flags that change which kernels onnxruntime (MLAS) dispatches to, in the order they are reported.
ISA_FLAGS = (
    "sse4_1",
    "avx",
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
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


@cache
def cpu_model() -> str:
    """The CPU's marketing name (``model name`` of /proc/cpuinfo), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@cache
def isa_flags() -> tuple[str, ...]:
    """The instruction-set extensions of :data:`ISA_FLAGS` this CPU reports (empty where /proc/cpuinfo is absent)."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split())
    return tuple(f for f in ISA_FLAGS if f in flags)


def isa_class(flags: tuple[str, ...] | None = None) -> str:
    """The int8 kernel class: ``avx512vnni``, ``avxvnni``, ``avx512``, ``avx2``, ``sse4``, ``arm64``, ``unknown``.

    On the x86 classes without VNNI (``avx512``, ``avx2``, ``sse4``) onnxruntime's u8 x s8 kernels sum pairs of
    products in saturating int16; the shipped int8 graph is built so that they cannot saturate.
    """
    f = set(isa_flags() if flags is None else flags)
    if "avx512_vnni" in f:
        return "avx512vnni"
    if "avx_vnni" in f:
        return "avxvnni"
    if "avx512bw" in f:
        return "avx512"
    if "avx2" in f:
        return "avx2"
    if "sse4_1" in f:
        return "sse4"
    if "asimd" in f or platform.machine() in ("aarch64", "arm64"):
        return "arm64"
    return "unknown"
