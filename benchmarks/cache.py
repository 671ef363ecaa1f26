"""The peers' model folders under build/bench-cache/, built once from the checkpoint and rebuilt when it changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.publish import staged
from runtime.artifact import sha256_file

STAMP = "bench-source.json"


def fingerprint(checkpoint: Path) -> dict[str, str]:
    """sha256 of each of the checkpoint's weight files, so a retrained model invalidates every cached export."""
    weights = sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("*.bin"))
    return {path.name: sha256_file(path) for path in weights}


def cached(
    folder: Path, checkpoint: Path, build: Callable[[Path], dict[str, Any]], key: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build ``folder`` with ``build(tmp_folder)`` from ``checkpoint`` unless a build with the same checkpoint weights
    and ``key`` (e.g. the CPU's quantisation preset) is already there; return the build's record.

    ``build`` returns a record of how the files were made; it is kept in ``folder/bench-source.json`` beside the
    checkpoint's fingerprint and ``key``. The folder is replaced whole: a failed build leaves the previous one.
    """
    source = {"checkpoint_weights_sha256": fingerprint(checkpoint), "key": key or {}}
    found = stamp(folder)
    if found is not None and all(found.get(k) == v for k, v in source.items()):
        return found
    with staged(folder) as tmp:
        record = {"checkpoint": str(checkpoint), **source, **build(tmp)}
        (tmp / STAMP).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def stamp(folder: Path) -> dict[str, Any] | None:
    """The record of the build in ``folder``, or None when there is none (never built, or unreadable)."""
    try:
        record: dict[str, Any] = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record
