"""The default thread count respects the CPUs the process was given (taskset, a container's cpuset)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime import cpu, session

REPO = Path(__file__).resolve().parents[1]


def _fake_sysfs(root: Path, online: str, siblings: dict[int, str], name: str = "core_cpus_list") -> Path:
    """A /sys/devices/system/cpu with ``online`` and, per CPU, the list of CPUs sharing its core."""
    (root / "online").parent.mkdir(parents=True, exist_ok=True)
    (root / "online").write_text(online + "\n")
    for number, cpus in siblings.items():
        topology = root / f"cpu{number}" / "topology"
        topology.mkdir(parents=True)
        (topology / name).write_text(f"{cpus}\n")
    return root


# Four logical CPUs on two physical cores: 0 and 2 are SMT siblings, so are 1 and 3 (Linux's usual numbering).
SMT = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ({0, 1, 2, 3}, None),  # the whole machine: onnxruntime's own default stands
        ({0, 2}, 1),  # two siblings of one core
        ({0, 1}, 2),  # one thread of each core
        ({1}, 1),
    ],
)
def test_restricted_cores_counts_physical_cores_of_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: set[int], expected: int | None
) -> None:
    monkeypatch.setattr(cpu, "SYS_CPU", _fake_sysfs(tmp_path / "cpu", "0-3", SMT))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: allowed, raising=False)
    assert cpu.restricted_cores() == expected


def test_restricted_cores_reads_older_kernels_sibling_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "SYS_CPU", _fake_sysfs(tmp_path / "cpu", "0-3", SMT, name="thread_siblings_list"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 3}, raising=False)
    assert cpu.restricted_cores() == 2


def test_restricted_cores_parses_ranges_and_falls_back_to_logical_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_sysfs(tmp_path / "cpu", "0-1,4-5", {})  # no topology files
    monkeypatch.setattr(cpu, "SYS_CPU", root)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
    assert cpu.restricted_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 4, 5}, raising=False)
    assert cpu.restricted_cores() is None
    (root / "online").write_text("garbled\n")
    assert cpu.restricted_cores() is None  # an unreadable file never breaks runtime.load()


def test_session_options_take_the_restricted_count_only_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "restricted_cores", lambda: 3)
    assert session.session_options(None).intra_op_num_threads == 3
    assert session.session_options(2).intra_op_num_threads == 2  # an explicit count wins
    monkeypatch.setattr(session, "restricted_cores", lambda: None)
    assert session.session_options(None).intra_op_num_threads == 0  # onnxruntime's own default


PROBE = textwrap.dedent(
    """
    import time
    from pathlib import Path
    import runtime
    encoder = runtime.load()  # default threads
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        encoder.encode(["a sentence for the affinity probe"] * 64)
    for task in Path("/proc/self/task").iterdir():
        status = (task / "status").read_text().splitlines()
        print(next(line.split()[1] for line in status if line.startswith("Cpus_allowed_list")))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is Linux's")
def test_default_session_stays_on_the_cpus_it_was_given() -> None:
    online = cpu._online_cpus() or []
    if len(online) < 2 or shutil.which("taskset") is None:
        pytest.skip("needs two online CPUs and taskset")
    first = str(online[0])
    done = subprocess.run(
        ["taskset", "-c", first, sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    # Without the cpuset-aware default, onnxruntime's pool pins a thread to another core (seen: "1" under taskset -c 0).
    assert set(done.stdout.split()) == {first}, done.stdout


def _fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc_cgroup: str, files: dict[str, str]) -> None:
    """A /proc/self/cgroup and a /sys/fs/cgroup tree holding ``files`` (paths relative to the mount)."""
    (tmp_path / "proc-cgroup").write_text(proc_cgroup)
    for name, text in files.items():
        (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / name).write_text(text + "\n")
    monkeypatch.setattr(cpu, "PROC_CGROUP", tmp_path / "proc-cgroup")
    monkeypatch.setattr(cpu, "CGROUP", tmp_path / "fs")


@pytest.mark.parametrize(
    ("proc_cgroup", "files", "expected"),
    [
        # cgroup v2: the process's own cpu.max, and the tightest of its ancestors'
        ("0::/app.slice/svc\n", {"app.slice/svc/cpu.max": "150000 100000"}, 1.5),
        ("0::/app.slice/svc\n", {"app.slice/svc/cpu.max": "max 100000", "app.slice/cpu.max": "300000 100000"}, 3.0),
        ("0::/a/b\n", {"a/b/cpu.max": "400000 100000", "a/cpu.max": "200000 100000"}, 2.0),
        ("0::/a\n", {"a/cpu.max": "max 100000"}, None),
        ("0::/\n", {"cpu.max": "250000 100000"}, 2.5),  # a container's namespace: its limit at the mount's root
        # cgroup v1: quota / period of the cpu controller's hierarchy; -1 is no limit
        (
            "4:cpu,cpuacct:/docker/x\n3:memory:/docker/x\n",
            {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000"},
            0.5,
        ),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ("2:cpuset:/\n", {}, None),  # no cpu controller listed
    ],
)
def test_cgroup_cpu_limit_reads_v1_and_v2_quotas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc_cgroup: str, files: dict[str, str], expected: float | None
) -> None:
    _fake_cgroup(tmp_path, monkeypatch, proc_cgroup, files)
    assert cpu.cgroup_cpu_limit() == expected


def test_cgroup_cpu_limit_survives_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cgroup(tmp_path, monkeypatch, "0::/a\n", {"a/cpu.max": "garbled"})
    assert cpu.cgroup_cpu_limit() is None
    monkeypatch.setattr(cpu, "PROC_CGROUP", tmp_path / "missing")
    assert cpu.cgroup_cpu_limit() is None


@pytest.mark.parametrize(("limit", "expected"), [(None, 2), (8.0, 2), (1.5, 1), (0.5, 1)])
def test_usable_cores_caps_the_affinity_by_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: float | None, expected: int
) -> None:
    monkeypatch.setattr(cpu, "SYS_CPU", _fake_sysfs(tmp_path / "cpu", "0-3", SMT))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: limit)
    assert cpu.core_groups() == [[0, 2], [1, 3]]  # four logical CPUs, two physical cores
    assert cpu.usable_cores() == expected
