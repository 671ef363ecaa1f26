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
    """The int8 kernel class: ``amx``, ``avx512vnni``, ``avxvnni``, ``avx512``, ``avx2``, ``sse4``, ``arm64``,
    ``unknown``.

    ``amx`` (Intel Xeon with AMX-INT8): onnxruntime's u8 x s8 GEMMs run on AMX tiles, and OpenVINO's bf16 ones on
    AMX-BF16. On the x86 classes without VNNI (``avx512``, ``avx2``, ``sse4``) onnxruntime's u8 x s8 kernels sum pairs
    of products in saturating int16; the shipped int8 graph is built so that they cannot saturate.
    """
    f = set(isa_flags() if flags is None else flags)
    if "amx_int8" in f:
        return "amx"
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
    allowed = getaffinity(0)
    online = _online_cpus()
    if not allowed or online is None or set(online) <= set(allowed):
        return None
    return len(core_groups(allowed))


def core_groups(cpus: set[int] | None = None) -> list[list[int]]:
    """The given CPUs (default: this process's affinity) grouped by physical core, SMT siblings together, in CPU
    order; each CPU alone where the kernel does not list its core's CPUs."""
    if cpus is None:
        getaffinity = getattr(os, "sched_getaffinity", None)
        cpus = set(getaffinity(0)) if getaffinity is not None else set(range(os.cpu_count() or 1))
    groups: dict[str, list[int]] = {}
    for cpu in sorted(cpus):
        # The CPUs sharing this one's core, as the kernel lists them (core_id alone can repeat across dies).
        topology = SYS_CPU / f"cpu{cpu}" / "topology"
        key = f"cpu{cpu}"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                key = (topology / name).read_text().strip()
                break
            except OSError:
                continue
        groups.setdefault(key, []).append(cpu)
    return list(groups.values())


CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def cgroup_cpu_limit() -> float | None:
    """CPUs' worth of time this process's cgroup CPU quota allows per period (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), the smallest along its cgroup's ancestors; None when unlimited or
    unknown."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "" and path:  # cgroup v2
            for folder in _ancestors(CGROUP, path):
                limits += _v2_limit(folder / "cpu.max")
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own hierarchy
            for mount in (CGROUP / controllers, CGROUP / "cpu,cpuacct", CGROUP / "cpu"):
                if mount.is_dir():
                    for folder in _ancestors(mount, path):
                        limits += _v1_limit(folder)
                    break
    return min(limits) if limits else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and its parents up to ``mount``; inside a cgroup namespace the path may not exist below the
    mount, whose own files then describe this process's cgroup."""
    parts = [p for p in path.split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(file: Path) -> list[float]:
    try:
        quota, _, period = file.read_text().strip().partition(" ")
        if quota == "max":
            return []
        return [int(quota) / int(period or "100000")]
    except (OSError, ValueError, ZeroDivisionError):
        return []


def _v1_limit(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


def usable_cores() -> int:
    """Physical cores this process can keep busy: those of its CPU affinity, capped by its cgroup CPU quota (whole
    CPUs' worth, rounded down, at least one)."""
    cores = len(core_groups())
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, int(limit)))
    return max(1, cores)


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
