"""A folder job's state on disk: ``_job.json`` when it starts, finished shards, ``_SUCCESS`` at the end.

Resuming reads this state back and refuses, saying why, when the input, the model or an option that shapes the
output changed since the job started.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.corpus.errors import CorpusError
from runtime.corpus.outputs import SHARD_PREFIX, SHARD_SUFFIX, ShardInfo, read_shard_info, shard_name, write_json

FORMAT = "runtime.corpus/1"
JOB_FILE = "_job.json"
SUCCESS_FILE = "_SUCCESS"

log = logging.getLogger("runtime.corpus")


@dataclass
class Job:
    """A folder job as ``_job.json`` records it; ``id`` names it in every shard's footer."""

    spec: dict[str, Any]
    id: str = field(init=False)

    def __post_init__(self) -> None:
        identity = {k: self.spec[k] for k in ("format", "model", "options")}
        identity["input"] = self.spec["input"]["fingerprint"]  # contents, not file names
        self.id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def shards(self) -> int:
        """Shards the job writes."""
        return int(self.spec["shard_count"])


def read_job(folder: Path) -> dict[str, Any] | None:
    """The ``_job.json`` of ``folder``, or None when no job was started there."""
    path = folder / JOB_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path}: unreadable job record ({err}); the folder cannot be resumed") from err
    found = data.get("format") if isinstance(data, dict) else None
    if found != FORMAT:
        raise CorpusError(f"{path}: job format {found!r}, this runtime writes {FORMAT}; start a new output folder")
    return dict(data)


def start(folder: Path, job: Job) -> None:
    """Record a new job in ``folder``."""
    write_json(folder / JOB_FILE, job.spec)


def refuse_foreign(folder: Path, previous: dict[str, Any] | None, resume: bool) -> None:
    """A folder is started empty, or resumed with ``resume``; anything else is refused."""
    if previous is not None and not resume:
        done = len(list(folder.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")))
        complete = ", complete" if (folder / SUCCESS_FILE).exists() else ""
        raise CorpusError(
            f"{folder}: holds a corpus job ({done} of {previous.get('shard_count')} shards written{complete}); "
            "pass --resume to finish it, or choose another output folder"
        )
    if previous is None and any(not name.startswith(".") for name in os.listdir(folder)):
        raise CorpusError(f"{folder}: folder is not empty and holds no corpus job; choose an empty or new folder")


def why_not_resumable(old: dict[str, Any], new: dict[str, Any], asked: dict[str, Any]) -> str | None:
    """Why a job recorded as ``old`` cannot be finished as ``new`` (None: it can)."""
    for name, value in asked.items():
        if value is not None and old["options"].get(name) != value:
            return f"option {name} was {old['options'].get(name)!r} when the job started, {value!r} now"
    old_files, new_files = old["input"]["files"], new["input"]["files"]
    if len(old_files) != len(new_files):
        return f"the input has {len(new_files)} files now, the job read {len(old_files)}"
    for a, b in zip(old_files, new_files, strict=True):
        if a["sha256"] != b["sha256"] or a["kind"] != b["kind"]:
            return (
                f"the input changed: {b['path']} ({b['bytes']} bytes, sha256 {b['sha256'][:12]}) differs from "
                f"{a['path']} as the job read it ({a['bytes']} bytes, sha256 {a['sha256'][:12]})"
            )
    for key, value in old["model"].items():
        if new["model"].get(key) != value:
            return f"the model changed: {key} was {value!r} when the job started, {new['model'].get(key)!r} now"
    return None


def finished_shards(folder: Path, job: Job) -> dict[int, ShardInfo]:
    """Shards of this job already in ``folder`` (each whole: shards are renamed into place when complete)."""
    done: dict[int, ShardInfo] = {}
    for path in sorted(folder.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
        try:
            info = read_shard_info(path)
        except CorpusError as err:
            log.warning("%s; it will be written again", err)
            continue
        if info.job != job.id or info.shard >= job.shards or path.name != shard_name(info.shard):
            log.warning("%s: not a shard of this job; it will be written again", path)
            continue
        done[info.shard] = info
    return done


def succeed(folder: Path, job: Job, infos: list[ShardInfo], **extra: Any) -> dict[str, Any]:
    """Write ``_SUCCESS``: the job record, row counts and every shard with its size and sha256."""
    summary = {
        **job.spec,
        "job": job.id,
        "records": sum(i.end - i.first for i in infos),
        "rows": sum(i.rows for i in infos),
        "bad_rows": sum(i.bad_rows for i in infos),
        "shards": [i.to_dict() for i in infos],
        "completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    write_json(folder / SUCCESS_FILE, summary)
    return summary


def read_success(folder: Path) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest of a finished folder job."""
    path = folder / SUCCESS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{folder}: no {SUCCESS_FILE}: the job has not finished (resume it with --resume)") from None
    except (OSError, ValueError) as err:
        raise CorpusError(f"{path}: unreadable ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorpusError(f"{path}: not a {FORMAT} manifest")
    return dict(data)


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder, so that two jobs never write into one folder at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CorpusError(f"{folder}: another job is writing into this folder") from None
        yield
    finally:
        os.close(fd)
