"""Corpus shards on a Ray Data actor pool: one Encoder per actor, loaded once; each task writes one whole shard.

The unit of work is a shard of the plan, not a block of Ray's own readers: a shard's bytes then depend only on the
plan (ids are input positions, which Ray's readers cannot number), so the output equals a local run's byte for
byte, and a task that Ray retries after an actor died rewrites the same file under the same name (exactly once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.corpus.encoding import ModelArgs, Progress, describe_model, encode_shard
from runtime.corpus.errors import CorpusError
from runtime.corpus.inputs import Plan
from runtime.corpus.outputs import ShardInfo, arrow_pool_env


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise CorpusError("Ray mode needs Ray Data: pip install 'minilm-stsb-onnx[ray]'") from err
    return ray


@contextlib.contextmanager
def connected(address: bool | str) -> Iterator[int]:
    """Use the caller's Ray session, or join ``address`` (True: ``ray.init()``'s own choice); yields cluster CPUs.

    A session started here is shut down on exit.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=None if address is True else str(address), log_to_driver=True, logging_level=logging.WARNING)
        started = True
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        if started:
            ray.shutdown()


class ShardEncoder:
    """A Ray Data actor: loads the model once with ``threads`` intra-op threads, then writes whole shards."""

    def __init__(
        self,
        plan: Plan,
        job: str,
        folder: str,
        args: ModelArgs,
        options: dict[str, Any],
        model: dict[str, Any],
        threads: int,
    ) -> None:
        self.plan, self.job, self.folder, self.options = plan, job, Path(folder), options
        # Ray sets OMP_NUM_THREADS for the actor, which onnxruntime ignores: its thread count is set here.
        self.encoder = args.load(threads)
        found = describe_model(self.encoder)
        if found != model:
            raise CorpusError(f"actor loaded a different model than the job's: {found} vs {model}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        infos = [
            encode_shard(self.plan, int(k), self.job, self.folder, self.encoder, self.options, _no_progress)
            for k in batch["shard"]
        ]
        return {"info": [json.dumps(i.to_dict()) for i in infos]}


def _no_progress(_: int) -> None:
    pass


def run_shards(
    plan: Plan,
    todo: list[int],
    job: str,
    folder: Path,
    args: ModelArgs,
    options: dict[str, Any],
    actors: int,
    bar: Progress,
) -> dict[int, tuple[ShardInfo, float]]:
    """Write the shards ``todo`` on ``actors`` actors of ``args.threads`` (default 1) CPUs; returns each with the
    time (perf_counter) the driver learnt it was published."""
    ray = _ray()
    if not todo:
        return {}
    threads = args.threads or 1
    ray_data_log = logging.getLogger("ray.data")  # this job's own bar and summary say what Ray Data would log
    level = ray_data_log.level
    ray_data_log.setLevel(logging.ERROR)
    try:
        return _run(ray, plan, todo, job, folder, args, options, actors, threads, bar)
    finally:
        ray_data_log.setLevel(level)


def _run(
    ray: Any,
    plan: Plan,
    todo: list[int],
    job: str,
    folder: Path,
    args: ModelArgs,
    options: dict[str, Any],
    actors: int,
    threads: int,
    bar: Progress,
) -> dict[int, tuple[ShardInfo, float]]:
    written: dict[int, tuple[ShardInfo, float]] = {}
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    items = ray.data.from_items([{"shard": k} for k in todo], override_num_blocks=len(todo))
    results = items.map_batches(
        ShardEncoder,
        fn_constructor_kwargs={
            "plan": plan,
            "job": job,
            "folder": str(folder.resolve()),
            "args": args,
            "options": options,
            "model": args.describe(),
            "threads": threads,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(actors, len(todo))),
        num_cpus=threads,
        # tokenizers' Rust thread pool would otherwise use every core of the node in each actor.
        runtime_env={
            "env_vars": {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true", **arrow_pool_env()}
        },
    )
    try:
        for row in results.iter_rows():
            info = ShardInfo(**json.loads(row["info"]))
            if info.shard not in written:  # a retried task rewrites the same file; count it once
                bar(info.end - info.first)
            written[info.shard] = (info, time.perf_counter())
    except Exception as err:
        raise _user_error(err) from err
    missing = sorted(set(todo) - set(written))
    if missing:
        raise CorpusError(f"Ray returned no result for shards {missing[:10]}; resume the job to write them")
    return written


def _user_error(err: BaseException) -> BaseException:
    """The CorpusError inside Ray's wrappers (a bad row met by an actor), else ``err`` itself."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, CorpusError):
            return CorpusError(str(seen))
        seen = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__
    # Ray may carry the actor's exception only as text in its traceback.
    prefix = f"{CorpusError.__module__}.{CorpusError.__name__}: "
    found = [line[len(prefix) :] for line in str(err).splitlines() if line.startswith(prefix)]
    return CorpusError(found[-1]) if found else err
