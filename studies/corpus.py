"""Corpus jobs measured: streaming vs in-process encode (throughput, RSS curve), Ray Data layouts on this machine's
cores, and actor scaling (for a many-core machine). Texts are STS-B dev sentences repeated to the size asked for.

python -m studies.corpus local [--texts 1000000] [--round-texts 100000] [--rounds 2]
python -m studies.corpus ray [--texts 100000] [--rounds 2]
python -m studies.corpus scale --out DIR [--actors 1,2,4,8] [--texts-per-actor 10000] [--threads 1]
python -m studies.corpus memory [--texts 10000,60000] [--pools system,mimalloc]

local and ray write into ``--out`` (default benchmarks/results) ``corpus-<machine>.{json,md}``, each keeping the
other's section; scale writes ``DIR/corpus-scale-<machine>.{json,md}``, memory ``corpus-memory-<machine>.{json,md}``
(where a CLI job's peak RSS goes, stage by stage; no timing). Every measurement runs in a fresh child process
(``python -m studies.corpus child ...``) that prints one JSON line; rounds alternate the systems, so a load
change on a shared machine hits all of them alike. The load average is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.config import DEFAULT_OUT, REPO
from benchmarks.machine import cores, cpu_flags, cpu_model, library_versions, machine_name
from benchmarks.procs import loadavg, peak_rss_mib, rss_mib

SAMPLE_S = 0.5


# ---- children: one measurement each ----


def child_inprocess(source: Path) -> dict[str, Any]:
    """``runtime.load().encode(all texts)``: the in-process baseline."""
    import runtime

    texts = source.read_text(encoding="utf-8").splitlines()
    encoder = runtime.load(provider="cpu")
    before = rss_mib()
    start = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=32)
    seconds = time.perf_counter() - start
    return {
        "texts": len(vectors),
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
    }


def child_local(source: Path, out: Path) -> dict[str, Any]:
    """``encode_files`` into a folder of shards, sampling RSS and finished shards every SAMPLE_S seconds."""
    from runtime.corpus import encode_files

    curve: list[tuple[float, int, float]] = []
    done = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            shards = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
            curve.append((round(time.perf_counter() - start, 1), shards, round(rss_mib(), 1)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = encode_files(source, out, provider="cpu", progress=False)
    done.set()
    sampler.join()
    import pyarrow

    return {
        "arrow_pool": pyarrow.default_memory_pool().backend_name,
        "texts": result.rows,
        "seconds": result.seconds,
        "first_shard_s": result.first_shard_seconds,
        "shards": result.shards,
        "peak_rss_mib": peak_rss_mib(),
        "curve": curve,
    }


def child_ray(source: Path, out: Path, actors: int, threads: int, cpus: int, window: int | None) -> dict[str, Any]:
    """A Ray Data job on a fresh local Ray instance of ``cpus`` CPUs (its start-up timed apart)."""
    import ray

    from runtime.corpus import encode_files

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start
    try:
        result = encode_files(
            source, out, provider="cpu", ray=True, actors=actors, threads=threads, window=window, progress=False
        )
    finally:
        ray.shutdown()
    return {
        "texts": result.rows,
        "seconds": result.seconds,
        "first_shard_s": result.first_shard_seconds,
        "shards": result.shards,
        "ray_init_s": init_s,
    }


# ---- the parent: data, rounds, results ----


def corpus_file(folder: Path, texts: int) -> Path:
    """STS-B dev sentences repeated to ``texts`` lines."""
    from export.data import dev_sentences

    path = folder / f"dev-{texts}.txt"
    if not path.exists():
        base = dev_sentences()
        lines = (base * (texts // len(base) + 1))[:texts]
        path.write_text("".join(t + "\n" for t in lines), encoding="utf-8")
    return path


def run_child(kind: str, *args: str, timeout: float = 7200) -> dict[str, Any]:
    """Run one measurement in a fresh process (with the environment the CLI gives a job: Arrow on malloc); returns
    its JSON with the load before and after."""
    from runtime.corpus.outputs import arrow_pool_env

    before = loadavg()
    done = subprocess.run(
        [sys.executable, "-m", "studies.corpus", "child", kind, *args],
        cwd=REPO,
        env={**os.environ, **arrow_pool_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} {args} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(load_before=before, load_after=loadavg())
    result["texts_per_s"] = result["texts"] / result["seconds"]
    print(
        f"  {kind} {' '.join(args[2:])}: {result['texts_per_s']:,.0f} texts/s, load {before} -> {result['load_after']}",
        file=sys.stderr,
    )
    return result


def machine() -> dict[str, Any]:
    """What ran the measurement."""
    return {
        "name": machine_name(),
        "cpu": cpu_model(),
        "cores": cores(),
        "isa": cpu_flags(),
        "libraries": library_versions(),
        "python": sys.version.split()[0],
    }


def measure_local(work: Path, texts: int, round_texts: int, rounds: int, full_inprocess: bool) -> dict[str, Any]:
    """Throughput ratio in alternating rounds of ``round_texts``, then one local job of ``texts`` (RSS curve) and,
    with ``full_inprocess``, one in-process encode of the same ``texts``."""
    small = corpus_file(work, round_texts)
    rows: dict[str, list[dict[str, Any]]] = {"local": [], "inprocess": []}
    for _ in range(rounds):
        out = work / "out"
        rows["local"].append(run_child("local", str(small), str(out)))
        shutil.rmtree(out)
        rows["inprocess"].append(run_child("inprocess", str(small)))
    big = corpus_file(work, texts)
    out = work / "out"
    full = {"texts": texts, "local": run_child("local", str(big), str(out))}
    shutil.rmtree(out)
    if full_inprocess:
        full["inprocess"] = run_child("inprocess", str(big))
    rate = {k: statistics.median(r["texts_per_s"] for r in v) for k, v in rows.items()}
    curve = full["local"]["curve"]
    return {
        "round_texts": round_texts,
        "rounds": rows,
        "median_texts_per_s": rate,
        "throughput_ratio": rate["local"] / rate["inprocess"],
        "full": full,
        "full_throughput_ratio": (
            full["local"]["texts_per_s"] / full["inprocess"]["texts_per_s"] if full_inprocess else None
        ),
        "rss_after_first_shard_mib": next((rss for _, shards, rss in curve if shards >= 1), None),
        "rss_at_end_mib": curve[-1][2] if curve else None,
        "peak_rss_mib": full["local"]["peak_rss_mib"],
    }


def measure_ray(work: Path, texts: int, rounds: int) -> dict[str, Any]:
    """Local mode vs Ray 1 actor x 2 threads vs 2 actors x 1 thread, on 2 CPUs, in alternating rounds."""
    source = corpus_file(work, texts)
    layouts = {"local": None, "ray 1x2": (1, 2), "ray 2x1": (2, 1)}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in layouts}
    for _ in range(rounds):
        for name, layout in layouts.items():
            out = work / "out"
            if layout is None:
                rows[name].append(run_child("local", str(source), str(out)))
            else:
                rows[name].append(run_child("ray", str(source), str(out), str(layout[0]), str(layout[1]), "2"))
            shutil.rmtree(out)
    rate = {k: statistics.median(r["texts_per_s"] for r in v) for k, v in rows.items()}
    first = {k: statistics.median(r["first_shard_s"] for r in v) for k, v in rows.items()}
    return {
        "texts": texts,
        "rounds": rows,
        "median_texts_per_s": rate,
        "overhead_vs_local": {k: 1 - rate[k] / rate["local"] for k in rate if k != "local"},
        "median_first_shard_s": first,
        "median_ray_init_s": {
            k: statistics.median(r["ray_init_s"] for r in v) for k, v in rows.items() if k != "local"
        },
    }


def measure_scale(work: Path, actors: list[int], per_actor: int, threads: int, window: int) -> dict[str, Any]:
    """Ray jobs of ``per_actor`` texts per actor on ``a`` actors of ``threads`` threads; efficiency vs linear."""
    rows = {}
    for a in actors:
        source = corpus_file(work, per_actor * a)
        out = work / "out"
        rows[a] = run_child("ray", str(source), str(out), str(a), str(threads), str(cores()), str(window))
        shutil.rmtree(out)
    base = rows[actors[0]]["texts_per_s"] / actors[0]
    return {
        "texts_per_actor": per_actor,
        "threads_per_actor": threads,
        "window": window,
        "runs": {str(a): r for a, r in rows.items()},
        "efficiency_vs_linear": {str(a): r["texts_per_s"] / (base * a) for a, r in rows.items()},
    }


def measure_memory(work: Path, sizes: list[int], pools: list[str]) -> dict[str, Any]:
    """One CLI job per size with Arrow's pool ``pools[0]`` (the CLI's), then the first size with each other pool."""
    runs = []
    for texts, pool in [(t, pools[0]) for t in sizes] + [(sizes[0], p) for p in pools[1:]]:
        out = work / "out"
        from runtime.corpus.outputs import arrow_pool_env

        env = {**os.environ, **arrow_pool_env(), "ARROW_DEFAULT_MEMORY_POOL": pool}
        command = [sys.executable, "-m", "studies.corpus_memory", str(corpus_file(work, texts)), str(out)]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=7200)
        if done.returncode != 0:
            raise RuntimeError(f"memory child {texts} {pool} failed:\n{done.stderr[-4000:]}")
        shutil.rmtree(out)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {texts:,} texts, Arrow on {pool}: peak {runs[-1]['peak_rss_mib']:.1f} MiB", file=sys.stderr)
    return {"runs": runs}


# ---- reports ----


def local_md(section: dict[str, Any]) -> list[str]:
    lines = [
        "## Streaming job vs in-process encode (dev sentences repeated; int8, CPU, default threads)",
        "",
        f"Throughput, median of {len(section['rounds']['local'])} alternating rounds of "
        f"{section['round_texts']:,} texts: local job **{section['median_texts_per_s']['local']:,.0f}** texts/s, "
        f"in-process **{section['median_texts_per_s']['inprocess']:,.0f}** texts/s, ratio "
        f"**{section['throughput_ratio']:.3f}**.",
        "",
        "| run | texts | seconds | texts/s | peak RSS MiB | load before → after |",
        "|---|---|---|---|---|---|",
    ]
    runs = [
        (f"{k} round {i + 1}", section["round_texts"], r) for k, v in section["rounds"].items() for i, r in enumerate(v)
    ]
    runs += [(f"{k} (full)", section["full"]["texts"], r) for k, r in section["full"].items() if k != "texts"]
    for name, texts, r in runs:
        lines.append(
            f"| {name} | {texts:,} | {r['seconds']:.0f} | {r['texts_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} | "
            f"{r['load_before'][0]} → {r['load_after'][0]} |"
        )
    ratio = section["full_throughput_ratio"]
    return [
        *lines,
        "",
        ("" if ratio is None else f"Full-size throughput ratio {ratio:.3f}. ")
        + f"Local job RSS after the first shard (102,400 texts): {section['rss_after_first_shard_mib']} MiB; at "
        f"the end ({section['full']['texts']:,} texts): {section['rss_at_end_mib']} MiB; peak "
        f"{section['peak_rss_mib']:.0f} MiB. RSS curve (seconds, shards written, MiB) in the JSON file.",
        "",
    ]


def ray_md(section: dict[str, Any]) -> list[str]:
    lines = [
        f"## Ray Data on 2 CPUs ({section['texts']:,} texts; median of {len(section['rounds']['local'])} "
        "alternating rounds; a fresh Ray instance per run, its start-up apart)",
        "",
        "| layout | texts/s | overhead vs local | time to first shard s | ray.init s |",
        "|---|---|---|---|---|",
    ]
    for name, rate in section["median_texts_per_s"].items():
        overhead = section["overhead_vs_local"].get(name)
        init = section["median_ray_init_s"].get(name)
        lines.append(
            f"| {name} | {rate:,.0f} | {'-' if overhead is None else f'{100 * overhead:+.1f} %'} | "
            f"{section['median_first_shard_s'][name]:.1f} | {'-' if init is None else f'{init:.1f}'} |"
        )
    return [*lines, ""]


def scale_md(section: dict[str, Any]) -> list[str]:
    lines = [
        f"## Ray actors on one machine ({section['texts_per_actor']:,} texts per actor, "
        f"{section['threads_per_actor']} thread(s) each)",
        "",
        "| actors | texts | texts/s | efficiency vs linear | time to first shard s | load before → after |",
        "|---|---|---|---|---|---|",
    ]
    for a, run in section["runs"].items():
        lines.append(
            f"| {a} | {run['texts']:,} | {run['texts_per_s']:,.0f} | {section['efficiency_vs_linear'][a]:.2f} | "
            f"{run['first_shard_s']:.1f} | {run['load_before'][0]} → {run['load_after'][0]} |"
        )
    return [*lines, ""]


def memory_md(section: dict[str, Any]) -> list[str]:
    from studies.corpus_memory import MEMORY_STAGES

    runs = section["runs"]
    head = " | ".join(f"{r['texts']:,} texts, Arrow on {r['arrow_pool']}" for r in runs)
    lines = [
        "## Where a CLI job's peak RSS goes (int8, CPU, default threads; MiB = 2^20 bytes)",
        "",
        "Each row: how much the stage raised the process's peak RSS (VmHWM), so the rows add up to the peak.",
        "",
        f"| stage | {head} |",
        "|---|" + "---|" * len(runs),
    ]
    for i, (key, what) in enumerate(MEMORY_STAGES.items()):
        cells = []
        for r in runs:
            stages = {m["stage"]: m for m in r["stages"]}
            previous = r["stages"][r["stages"].index(stages[key]) - 1]["VmHWM"] if i else 0.0
            cells.append(f"{stages[key]['VmHWM'] - previous:+.1f}" if i else f"{stages[key]['VmHWM']:.1f}")
        lines.append(f"| {what} | {' | '.join(cells)} |")
    peaks = " | ".join(f"**{r['peak_rss_mib']:.1f} MiB = {r['peak_rss_mib'] * 2**20 / 1e6:.0f} MB**" for r in runs)
    ends = " | ".join(f"{r['stages'][-1]['RssAnon']:.0f} / {r['stages'][-1]['RssFile']:.0f}" for r in runs)
    return [*lines, f"| peak RSS | {peaks} |", f"| at the end: anonymous / file-backed (libraries) MiB | {ends} |", ""]


def write(doc: dict[str, Any], stem: Path) -> None:
    """``stem``.json and ``stem``.md, each through a temporary file."""
    m = doc["machine"]
    md = [
        f"# Corpus jobs on {m['cpu']} ({m['cores']} cores, {', '.join(m['isa'])})",
        "",
        f"Measured {doc['date']}; Python {m['python']}; {json.dumps(m['libraries'])}.",
        "",
    ]
    renderers = {"local": local_md, "ray": ray_md, "scale": scale_md, "memory": memory_md}
    for key, render in renderers.items():
        if key in doc:
            md += render(doc[key])
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(doc, indent=1) + "\n"), (".md", "\n".join(md))):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(stem.with_suffix(suffix))
    print(stem.with_suffix(".md").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("local")
    p.add_argument("--texts", type=int, default=1_000_000)
    p.add_argument("--round-texts", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--full-inprocess", action="store_true", help="also encode all --texts in-process (GiBs of RSS)")
    p = sub.add_parser("ray")
    p.add_argument("--texts", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p = sub.add_parser("scale")
    p.add_argument("--actors", default="1,2,4,8")
    p.add_argument("--texts-per-actor", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--window", type=int, default=1000)
    p = sub.add_parser("memory")
    p.add_argument("--texts", default="10000,60000", help="job sizes, comma-separated")
    p.add_argument(
        "--pools",
        default="system,mimalloc",
        help="Arrow pools: the first for every size, the others for the first size only",
    )
    for name, p in list(sub.choices.items()):
        p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
        p.add_argument("--out", type=Path, required=name == "scale", default=DEFAULT_OUT, help="results folder")
    p = sub.add_parser("child")
    p.add_argument("kind", choices=["inprocess", "local", "ray"])
    p.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
    if args.mode == "child":
        print(json.dumps(_child(args.kind, args.args)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        doc: dict[str, Any] = {}
        if args.mode == "scale":
            stem = args.out / f"corpus-scale-{machine_name()}"
            section = measure_scale(
                work, [int(a) for a in args.actors.split(",")], args.texts_per_actor, args.threads, args.window
            )
        elif args.mode == "memory":
            stem = args.out / f"corpus-memory-{machine_name()}"
            section = measure_memory(work, [int(t) for t in args.texts.split(",")], args.pools.split(","))
        else:
            stem = args.out / f"corpus-{machine_name()}"
            doc = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
            if args.mode == "local":
                section = measure_local(work, args.texts, args.round_texts, args.rounds, args.full_inprocess)
            else:
                section = measure_ray(work, args.texts, args.rounds)
        doc.update({args.mode: section, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")})
        write(doc, stem)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _child(kind: str, args: list[str]) -> dict[str, Any]:
    if kind == "inprocess":
        return child_inprocess(Path(args[0]))
    if kind == "local":
        return child_local(Path(args[0]), Path(args[1]))
    window = int(args[5]) if len(args) > 5 else None
    return child_ray(Path(args[0]), Path(args[1]), int(args[2]), int(args[3]), int(args[4]), window)


if __name__ == "__main__":
    main()
