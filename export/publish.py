"""Publishing a folder whole: it is built in a temporary sibling and swapped in only when complete.

Used by the export (``artifacts/<name>/``) and by the benchmark's peer cache (``build/bench-cache/<peer>/``). Only the
standard library is used, so importing this costs nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A fresh empty folder beside ``out_dir`` to build into.

    When the block completes, the folder replaces ``out_dir``; when it raises (or the process is killed), ``out_dir``
    is untouched and the folder is removed (by :func:`recover_interrupted` at the next run, after a kill).
    """
    recover_interrupted(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _swap(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_interrupted(out_dir: Path) -> None:
    """Clean up after runs that were killed: drop their temporary folders, and if one died mid-swap (the old folder
    moved aside, the new one not yet in place), put the old folder back."""
    if not out_dir.parent.is_dir():
        return
    for leftover in sorted(out_dir.parent.glob(f".{out_dir.name}.*-*")):
        kind, _, pid = leftover.name.rpartition("-")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if kind.endswith(".old") and not out_dir.exists():
            log.warning("restoring %s from an interrupted run (%s)", out_dir, leftover.name)
            leftover.rename(out_dir)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` with ``tmp``: the old folder is moved aside first and removed only after the swap."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
