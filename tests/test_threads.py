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
