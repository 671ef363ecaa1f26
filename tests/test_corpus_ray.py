"""Corpus jobs on Ray Data (a real local Ray instance, 2 CPUs): equal to a local run, exactly once when an actor
is killed mid-job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.data import dev_sentences
from runtime.corpus import JobResult, check, encode_files

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

# CI size: a few thousand texts keep this file near a minute on 2 cores; RUNTIME_CORPUS_RAY_TEXTS=20000 for the
# issue's size (measured in benchmarks/results/corpus-*.md).
TEXTS = int(os.environ.get("RUNTIME_CORPUS_RAY_TEXTS", "4000"))
SHARD_ROWS = 250
WINDOW = 250
ACTOR = "MapWorker(MapBatches(ShardEncoder))"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = (dev_sentences() * (TEXTS // 3000 + 1))[:TEXTS]
    path = tmp_path_factory.mktemp("ray") / "in.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local(source: Path) -> Path:
    """The local run the Ray runs must equal."""
    out = source.parent / "local"
    encode_files(source, out, provider="cpu", shard_rows=SHARD_ROWS)
    return out


def _vectors(folder: Path) -> tuple[list[object], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(folder.glob("part-*.parquet")))
    return table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and ACTOR in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_ray_output_equals_the_local_run_vector_for_vector(cluster: None, source: Path, tmp_path: Path) -> None:
    local_default = tmp_path / "local"
    encode_files(source, local_default, provider="cpu", window=WINDOW)
    out = tmp_path / "ray"
    result = encode_files(source, out, provider="cpu", ray=True, actors=2, window=WINDOW)
    assert result.shards == 8, "shards are sized for the actors (about 4 each, in whole windows)"
    ids, vectors = _vectors(out)
    local_ids, local_vectors = _vectors(local_default)
    # shard sizes differ (one local shard here), but windows start at the same positions: the same bytes per vector
    assert ids == local_ids == list(range(TEXTS))
    assert np.array_equal(vectors, local_vectors)
    assert check(out, source, sample=64).ok


def test_killing_an_actor_mid_job_still_writes_each_shard_once(
    cluster: None, source: Path, local: Path, tmp_path: Path, encoder: runtime.Encoder
) -> None:
    out = tmp_path / "ray"
    outcome: list[JobResult | BaseException] = []

    def job() -> None:
        try:
            outcome.append(encode_files(source, out, provider="cpu", ray=True, actors=2, shard_rows=SHARD_ROWS))
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=job)
    worker.start()
    deadline = time.monotonic() + 180
    while len(list(out.glob("part-*.parquet"))) < 2 or not _actor_pids():
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    victim = _actor_pids()[0]
    shards_at_kill = len(list(out.glob("part-*.parquet")))
    os.kill(victim, signal.SIGKILL)
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert isinstance(outcome[0], JobResult), outcome[0]
    assert shards_at_kill < outcome[0].shards, "the kill landed mid-job"
    assert victim not in _actor_pids()
    assert _shards(out) == _shards(local)  # every shard once, each byte as the local run wrote it
    summary = json.loads((out / "_SUCCESS").read_text())
    assert [s["shard"] for s in summary["shards"]] == list(range(outcome[0].shards))
    assert not [p for p in os.listdir(out) if p.startswith(".")], "no temporary file left behind"
    assert check(out, source, sample=64).ok


def test_a_bad_row_in_an_actor_is_reported_by_file_and_line(cluster: None, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n' * 5 + '{"text": 5}\n', encoding="utf-8")
    with pytest.raises(runtime.corpus.CorpusError, match=r"bad\.jsonl:6: field 'text' is int"):
        encode_files(path, tmp_path / "out", provider="cpu", ray=True, actors=1)
