"""How the studies' results read on a docs page: corpus jobs (local, Ray, memory), output types, int8 across CPUs,
kernels, profile and soak. Each renderer is ``(doc, stem, results) -> lines``: the compact table a guide page needs,
with a caption naming the results file and its run.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.docs_sections import NONE, TIMES, Doc, machine_label, source

# ---- corpus jobs -------------------------------------------------------------------------------------------------


def corpus_local(doc: Doc, stem: str, results: Path) -> list[str]:
    """A local job against in-process ``encode``, its memory over ten times the texts, and Ray on the same cores."""
    local, ray = doc["local"], doc["ray"]
    speed = local["median_texts_per_s"]
    full = local["full"]["local"] if local.get("full") else None
    end = f" of {full['texts']:,} texts" if full else ""
    inprocess_rss = max(r["peak_rss_mib"] for r in local["rounds"]["inprocess"])
    rows = [
        "| what | figure |",
        "|---|---|",
        f"| local job vs in-process `encode`, {local['round_texts']:,} texts | {speed['local']:,.0f} vs "
        f"{speed['inprocess']:,.0f} texts/s: **{local['throughput_ratio']:.2f}{TIMES}** |",
        f"| peak RSS, in-process `encode` of {local['round_texts']:,} texts | {inprocess_rss:,.0f} MiB |",
        f"| local job RSS after its first shard / at the end{end} / peak | {local['rss_after_first_shard_mib']:.0f} / "
        f"{local['rss_at_end_mib']:.0f} / {local['peak_rss_mib']:.0f} MiB |",
    ]
    for name, over in ray["overhead_vs_local"].items():
        actors, threads = re.findall(r"\d+", name)
        rows.append(
            f"| Ray Data, {actors} actor(s) {TIMES} {threads} thread(s), {ray['texts']:,} texts | "
            f"{ray['median_texts_per_s'][name]:,.0f} texts/s against the local job's "
            f"{ray['median_texts_per_s']['local']:,.0f}: overhead **{over:+.1%}**; first shard after "
            f"{ray['median_first_shard_s'][name]:.0f} s |"
        )
    return [*rows, "", source(stem, f"{machine_label(doc)}, {doc['date']}")]


def corpus_scale(doc: Doc, stem: str, results: Path) -> list[str]:
    """Ray actors on one many-core machine: texts/s and the share of linear scaling."""
    s = doc["scale"]
    rows = [f"| actors | texts | texts/s | {TIMES} linear | first shard s |", "|---|---|---|---|---|"]
    for n, run in s["runs"].items():
        rows.append(
            f"| {n} | {run['texts']:,} | {run['texts_per_s']:,.0f} | {s['efficiency_vs_linear'][n]:.2f} | "
            f"{run['first_shard_s']:.0f} |"
        )
    when = (
        f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores, {s['texts_per_actor']:,} texts per actor, "
        f"{s['threads_per_actor']} thread each, {doc['date']}"
    )
    return [*rows, "", source(stem, when)]


STAGES = {  # stage name in corpus-memory files -> what the row says was added
    "interpreter": "Python interpreter",
    "numpy": "`import numpy`",
    "onnxruntime": "`import onnxruntime`",
    "tokenizers": "`import tokenizers`",
    "runtime": "`import runtime, runtime.corpus`",
    "pyarrow": "`import pyarrow, pyarrow.parquet`",
    "model": "model load: tokenizer and onnxruntime session of the int8 graph",
    "tokenised 1": "first window tokenised",
    "encoded 1": "first window encoded (onnxruntime's CPU arena)",
    "written 1": "first window written (Parquet writer)",
    "job done": "the other windows and shards",
}


def corpus_memory(doc: Doc, stem: str, results: Path) -> list[str]:
    """What each stage of a CLI job adds to its peak RSS (VmHWM), for the first run of the file."""
    run = doc["memory"]["runs"][0]
    rows = ["| stage | adds to the peak, MiB |", "|---|---|"]
    before = 0.0
    for stage in run["stages"]:
        rows.append(f"| {STAGES.get(stage['stage'], stage['stage'])} | {stage['VmHWM'] - before:.1f} |")
        before = stage["VmHWM"]
    rows.append(f"| **peak** | **{run['peak_rss_mib']:.1f}** |")
    others = "; ".join(
        f"{r['texts']:,} texts, Arrow pool {r['arrow_pool']}: {r['peak_rss_mib']:.1f} MiB"
        for r in doc["memory"]["runs"][1:]
    )
    when = f"{machine_label(doc)}, {doc['date']}; a CLI job of {run['texts']:,} texts, Arrow pool {run['arrow_pool']}"
    return [
        *rows,
        "",
        *([f"Peak RSS of the other runs in the file: {others}.", ""] if others else []),
        source(stem, when),
    ]


# ---- studies: output types, int8 across CPUs, kernels, profile, soak ---------------------------------------------


def precision_types(doc: Doc, stem: str, results: Path) -> list[str]:
    """Each output type: accuracy with its own similarity, size, and exact top-10 search speed and recall."""
    r = doc["results"]
    rows = [
        "| type | compare with | bytes / vector | STS-B dev spearman | queries/s, top-10 | vs float32 | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        spearman = f"{row['dev_spearman']:.4f}" if row["dev_spearman"] is not None else NONE
        rows.append(
            f"| {row['precision']} | {row['similarity']} | {row['bytes_per_vector']:,} | {spearman} | "
            f"{row['queries_per_s']:,.0f} | {row['speed_vs_float32']:.2f}{TIMES} | {row['recall_at_10']:.3f} |"
        )
    c, model = r["corpus"], doc["model"]
    when = (
        f"{machine_label(doc)}, {doc['created']}, {doc['threads']} threads, {model['graph']} graph "
        f"{model['graph_sha256'][:8]}; {c['vectors']:,} vectors searched by {c['queries']:,} queries; uint8 "
        f"centred (u - 128): dev spearman {r['uint8_centred_dev_spearman']:.4f}"
    )
    return [*rows, "", source(stem, when)]


def precision_grids(doc: Doc, stem: str, results: Path) -> list[str]:
    """Candidate int8 grids: spearman of the codes' dot product (chosen on STS-B train, dev shown)."""
    rows = ["| grid for int8 (dot product of the codes) | STS-B train spearman | dev spearman |", "|---|---|---|"]
    rows += [f"| {g['grid']} | {g['train']:.5f} | {g['dev']:.5f} |" for g in doc["results"]["calibration"]]
    return [*rows, "", source(stem, doc["created"])]


def crosscpu(doc: Doc, stem: str, results: Path) -> list[str]:
    """The same texts embedded natively and on an emulated CPU, each int8 system: how far its vectors move."""
    rows = [
        "| system | min cosine | mean cosine | max abs diff | identical vectors |",
        "|---|---|---|---|---|",
    ]
    for name, s in doc["systems"].items():
        rows.append(
            f"| {name} | {s['min_cosine']:.7f} | {s['mean_cosine']:.7f} | {s['max_abs_diff']:.2e} | "
            f"{s['identical_vectors']}/{doc['texts']} |"
        )
    when = f"{doc['native_isa_class']} natively vs `qemu-x86_64 -cpu {doc['emulated_cpu']}`, {doc['created']}"
    return [*rows, "", source(stem, when)]


def kernels(doc: Doc, stem: str, results: Path) -> list[str]:
    """The int8 graph's GEMMs alone against the machine's int8 ceiling."""
    ceiling = doc["ceiling_gops"]
    rows = [f"| K {TIMES} N | rows | µs | G-ops/s | share of the int8 ceiling |", "|---|---|---|---|---|"]
    rows += [
        f"| {g['k']} {TIMES} {g['n']} | {g['m']} | {g['us']:.1f} | {g['gops']:,.0f} | {g['gops'] / ceiling:.0%} |"
        for g in doc["results"]["gemm"]
    ]
    when = f"{machine_label(doc)}, {doc['threads']} threads, ceiling {ceiling:,.0f} G-ops/s, {doc['created']}"
    return [*rows, "", source(stem, when)]


def profile(doc: Doc, stem: str, results: Path, top: int = 6) -> list[str]:
    """onnxruntime's profiler: the largest op types' shares of kernel time, per workload."""
    rows = ["| workload | kernel ms | largest op types (share of kernel time) |", "|---|---|---|"]
    for name, p in doc["profiles"].items():
        shares = sorted(p["op_share"].items(), key=lambda kv: -kv[1])[:top]
        rows.append(f"| {name} | {p['kernel_ms']:,.0f} | {', '.join(f'{op} {s:.0%}' for op, s in shares)} |")
    return [*rows, "", source(stem, f"{doc['threads']} threads")]


def engines(doc: Doc, stem: str, results: Path) -> list[str]:
    """onnxruntime int8 against OpenVINO per text length: the evidence behind auto's threshold on the class."""
    by_length: dict[int, dict[int, Doc]] = {}
    for case in doc["cases"]:
        by_length.setdefault(case["tokens"], {})[case["batch"]] = case
    rows = [
        "| tokens | batch 1: onnxruntime / OpenVINO, texts/s | ratio | batch 32: onnxruntime / OpenVINO, texts/s "
        "| ratio |",
        "|---|---|---|---|---|",
    ]
    for tokens, cases in sorted(by_length.items()):
        cells = []
        for batch in (1, 32):
            case = cases.get(batch)
            if case is None:
                cells += [NONE, NONE]
                continue
            rate = case["texts_per_s"]
            cells += [
                f"{rate['onnxruntime']:,.0f} / {rate['openvino']:,.0f}",
                f"{case['openvino_over_onnxruntime']:.2f}",
            ]
        rows.append(f"| {tokens} | {' | '.join(cells)} |")
    threshold = doc["suggested_threshold"]
    when = (
        f"{machine_label(doc)}, {doc['threads']} threads, OpenVINO {doc['openvino_precision']}, best of "
        f"{doc['rounds']} interleaved rounds, {doc['created']}; suggested threshold: "
        + (f"{threshold} tokens" if threshold is not None else "none (onnxruntime for every length)")
    )
    return [*rows, "", source(stem, when)]


def gates(doc: Doc, stem: str, results: Path) -> list[str]:
    """Every path auto may pick against the gates: spearman, fidelity to the fp32 reference, alone vs in a batch."""
    when = (
        f"{machine_label(doc)}, fp32 reference spearman {doc['reference_spearman']:.6f}, {doc['dev_sentences']:,} dev "
        f"sentences and {doc['passages']} passages, {doc['created']}"
    )
    return [*gate_rows(doc), "", source(stem, when)]


def gate_rows(doc: Doc) -> list[str]:
    """The gates table of a ``python -m studies.gates`` result: one row per path."""
    rows = [
        "| path | spearman | min cosine to fp32, dev / passages | a text alone vs in a padded batch of 32: min cosine, "
        "max abs |",
        "|---|---|---|---|",
    ]
    for name, p in doc["paths"].items():
        c, a = p["min_cosine_to_reference"], p["alone_vs_batch"]
        rows.append(
            f"| `{name}`: {p['rule']} | {p['dev_spearman']:.6f} | {c['dev']:.5f} / {c['long']:.5f} "
            f"| {a['min_cosine']:.7f}, {a['max_abs']:.1e} |"
        )
    return rows


def soak(doc: Doc, stem: str, results: Path) -> list[str]:
    """One encoder, many calls: does memory grow?"""
    return [
        "| texts | calls | seconds | RSS at start / after warm-up / at the end, MiB | growth after warm-up |",
        "|---|---|---|---|---|",
        f"| {doc['texts']:,} | {doc['calls']:,} | {doc['seconds']:,.0f} | {doc['rss_start_mib']:.1f} / "
        f"{doc['rss_after_warmup_mib']:.1f} / {doc['rss_end_mib']:.1f} | {doc['growth_after_warmup_pct']:+.2f} % |",
        "",
        source(stem),
    ]
