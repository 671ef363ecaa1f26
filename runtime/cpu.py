"""Which instruction-set class this CPU is: it decides which onnxruntime integer kernels run the int8 graph."""

from __future__ import annotations

import os
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


SYS_CPU = Path("/sys/devices/system/cpu")


def restricted_cores() -> int | None:
    """Physical cores this process may run on, when its CPU affinity (taskset, a container's cpuset) leaves out some
    of the machine's online CPUs; None when nothing is left out or the platform cannot say."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    allowed = sorted(getaffinity(0))
    online = _online_cpus()
    if not allowed or online is None or set(online) <= set(allowed):
        return None
    cores = set()
    for cpu in allowed:
        # The CPUs sharing this one's core, as the kernel lists them (core_id alone can repeat across dies).
        topology = SYS_CPU / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                cores.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            return len(allowed)  # no topology: count logical CPUs
    return len(cores)


def _online_cpus() -> list[int] | None:
    """The machine's online CPU numbers (Linux ``/sys/devices/system/cpu/online``, e.g. ``0-3,8``). Where a container
    virtualises this file to its own CPUs (lxcfs), nothing looks left out and onnxruntime's default stands."""
    try:
        text = (SYS_CPU / "online").read_text().strip()
        cpus: list[int] = []
        for part in filter(None, text.split(",")):
            first, _, last = part.partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    except (OSError, ValueError):
        return None
    return cpus
