"""The peers' model folders under build/bench-cache/, built once from the checkpoint and rebuilt when it changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

STAMP = "bench-source.json"


def fingerprint(checkpoint: Path) -> str:
    """sha256 over the checkpoint's weight files, so a retrained model invalidates every cached export."""
    digest = hashlib.sha256()
    for path in sorted(checkpoint.glob("*.safetensors")) + sorted(checkpoint.glob("*.bin")):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cached(folder: Path, checkpoint: Path, build: Callable[[Path], dict[str, object]]) -> Path:
    """``folder`` as built by ``build(tmp_folder)`` from ``checkpoint``; reused while the checkpoint is unchanged.

    ``build`` returns a record of how the files were made, kept in ``folder/bench-source.json``.
    """
    source = fingerprint(checkpoint)
    stamp = folder / STAMP
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")).get("checkpoint_sha256") == source:
        return folder
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        record = build(tmp)
        (tmp / STAMP).write_text(
            json.dumps({"checkpoint": str(checkpoint), "checkpoint_sha256": source, **record}, indent=2) + "\n",
            encoding="utf-8",
        )
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
