"""How the product's results read on a docs page: the peer comparison per CPU class (``benchmarks.report``'s own
report), the GPU run (``benchmarks.gpu``'s), the server, and the tables drawn from several files (the README's
headline, the runtime's configurations, accuracy). Each renderer is ``(doc, stem, results) -> lines`` or, across
files, ``(results) -> lines``; ``benchmarks.docs_tables`` maps placeholders to them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "artifacts" / "minilm-l6-stsb" / "manifest.json"
MODEL_CARD = REPO / "MODEL_CARD.md"
IMAGES = "results"  # where the site serves benchmarks/results/*.png (docs/hooks.py)
HEADLINE_SYSTEM = "runtime-auto"  # the headline's "this runtime" column: runtime.load() with every default
FAITHFUL = 0.99  # a peer is faithful when its min cosine to PyTorch is at least this on dev AND on passages
NONE, TIMES = report.NONE, report.TIMES
MIB = 2**20

CPU_FILES = "cpu-*.json"  # the peer comparison, one file per CPU class (python -m benchmarks)

Doc = dict[str, Any]


def source(stem: str, when: str | None = None) -> str:
    """The caption under a table: which results file, which run."""
    return f"*From `benchmarks/results/{stem}.json`" + (f"; {when}" if when else "") + ".*"


def machine_label(doc: Doc) -> str:
    """The machine a results file was measured on, as a caption names it."""
    m = doc["machine"]
    return f"{m.get('cpu_model') or m.get('cpu')} ({m.get('isa_class') or m['name']})"


# ---- the peer comparison and the GPU run: their own reports ------------------------------------------------------


def demote(markdown: str, levels: int = 2) -> list[str]:
    """A whole results report as a section of a page: every heading ``levels`` deeper."""
    return [("#" * levels + line) if line.startswith("#") else line for line in markdown.splitlines()]


def chart(stem: str, results: Path) -> list[str]:
    """The results file's chart, when its run drew one."""
    return ["", f"![{stem}]({IMAGES}/{stem}.png)"] if (results / f"{stem}.png").is_file() else []


def cpu_section(doc: Doc, stem: str, results: Path) -> list[str]:
    """A CPU class's peer comparison: ``python -m benchmarks``'s report, then its chart."""
    return [*demote(report.markdown(doc)), *chart(stem, results)]


def gpu_section(doc: Doc, stem: str, results: Path) -> list[str]:
    """A GPU's comparison with PyTorch: ``benchmarks.gpu``'s report, then its chart."""
    from benchmarks.gpu import markdown  # imports numpy only, which the runtime needs anyway

    return [*demote(markdown(doc)), *chart(stem, results)]


# ---- server ------------------------------------------------------------------------------------------------------


def server_runs(doc: Doc, stem: str, results: Path) -> list[str]:
    """Server throughput and latency against the library's ``encode`` on the same core, in the same run."""
    lib = doc["library"]
    base = lib["best"]["corpus"]
    rows = [
        "| run | texts/s | ratio to the library | p50 / p99 ms | statuses |",
        "|---|---|---|---|---|",
        f"| library `encode` of {lib['corpus']['after']['texts']:,} texts, batch 32 | {base:,.0f} | 1.00 | {NONE} "
        f"| {NONE} |",
    ]
    for size in ("32", "1"):
        call, speed = lib["after"][size], lib["best"][size]
        rows.append(
            f"| library `encode` of {size} text(s) per call | {speed:,.0f} | {speed / base:.2f} "
            f"| {call['call_p50_ms']:.1f} / {call['call_p99_ms']:.1f} per call | {NONE} |"
        )
    bound = doc["setup"].get("latency_max_inflight_inputs")
    for name, run in doc["server"].items():
        if "inputs_per_s" in run:
            rows.append(_server_row(f"serve, {_run_name(name, run, bound)}", run, base, _statuses(run)))
    for run in doc.get("plain_client", {}).values():
        label = f"serve, plain aiohttp client, {run['concurrency']} clients {TIMES} {run['batch']} texts"
        rows.append(_server_row(label, run, base, f"{len(run['errors'])} errors"))
    setup = doc["setup"]
    when = (
        f"{machine_label(doc)}, {doc['created']}; server on core {setup['server_core']} with {setup['threads']} "
        f"thread, load generator on core {setup['client_core']}, {setup['encoding_format']} output"
    )
    return [*rows, "", source(stem, when)]


def _server_row(label: str, run: Doc, base: float, statuses: str) -> str:
    return (
        f"| {label} | {run['inputs_per_s']:,.0f} | {run['inputs_per_s'] / base:.2f} | "
        f"{run['p50_ms']:,.1f} / {run['p99_ms']:,.1f} | {statuses} |"
    )


def _run_name(name: str, run: Doc, bound: int | None) -> str:
    if run["mode"] == "closed":
        return f"{run['concurrency']} clients {TIMES} {run['batch']} texts, closed loop"
    share = re.search(r"(\d+)pct", name)
    limit = "the default admission bound" if name.endswith("default_bound") else f"admission bound {bound}"
    return f"open loop, {share.group(1) if share else '?'} % of capacity ({run['rate']:,.0f} req/s), {limit}"


def _statuses(run: Doc) -> str:
    counts = ", ".join(f"{n:,} {TIMES} {status}" for status, n in run["by_status"].items())
    refused = run.get("rejected_p99_ms")
    return counts + (f"; 429s answered in {refused:.1f} ms (p99)" if refused is not None else "")


def server_workers(doc: Doc, stem: str, results: Path) -> list[str]:
    """One and more inference workers, then the shutdown and soak checks of the same run."""
    w = doc["workers"]
    rows = [f"| workers | 64 {TIMES} 1 texts/s | 16 {TIMES} 32 texts/s | RSS MiB |", "|---|---|---|---|"]
    rows += [
        f"| {n} | {w[n]['closed_c64_b1']['inputs_per_s']:,.0f} | {w[n]['closed_c16_b32']['inputs_per_s']:,.0f} | "
        f"{w[n]['rss_mib']:.1f} |"
        for n in w
        if n.isdigit()
    ]
    sig, soak = doc["server"].get("sigterm_under_load"), doc.get("soak")
    if sig:
        rows += [
            "",
            f"SIGTERM under load ({sig['concurrency']} clients {TIMES} {sig['batch']} texts): "
            f"{sig['in_flight_at_signal']} requests in flight, {sig['failed']} failed, last answer "
            f"{sig['last_answer_after_signal_s']:.2f} s after the signal, exit status {sig['exit_code']} after "
            f"{sig['exit_after_signal_s']:.2f} s.",
        ]
    if soak:
        rows += [
            "",
            f"Soak, {soak['duration_s']:.0f} s open loop at {soak['rate']:,.0f} req/s: {_statuses(soak)}; p50 "
            f"{soak['p50_ms']:.1f} ms, p99 {soak['p99_ms']:,.0f} ms; RSS {soak['rss_after_warmup_mib']:.1f} MiB "
            f"after warm-up, {soak['rss_end_mib']:.1f} MiB at the end ({soak['rss_change_after_warmup_pct']:+.1f} %).",
        ]
    return [*rows, "", source(stem, f"workers on cores {w['cores']}, one thread each, {doc['created']}")]


# ---- tables over several files -----------------------------------------------------------------------------------


HEADLINE_FIGURES = (  # label, throughput or latency key, fidelity part, higher is better
    ("STS-B dev, 1 text per call, texts/s", "dev@1", "dev", True),
    ("STS-B dev, batch 32, texts/s", "dev@32", "dev", True),
    ("200-256-token passages, batch 32, texts/s", "long@32", "long", True),
    ("latency p50, 1 text, ms", "p50", "dev", False),
)


def headline(results: Path) -> list[str]:
    """Per CPU class: ``runtime.load()`` against PyTorch, the fastest faithful peer and the fastest peer of any
    fidelity, on each figure."""
    rows = [
        "| CPU class | figure | this runtime | PyTorch fp32 | fastest faithful peer | this runtime / it "
        "| fastest peer, any fidelity (its min cosine) |",
        "|---|---|---|---|---|---|---|",
    ]
    docs = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(results.glob(CPU_FILES))]
    for doc in sorted(docs, key=lambda d: -sum(1 for s in d["systems"].values() if s.get("best"))):
        rows += _headline_rows(doc)  # the classes with the most systems measured first
    return [
        *rows,
        "",
        "This runtime: `runtime.load()` as it runs on the class (`runtime-auto` where `auto` has an OpenVINO rule",
        f"for it, else `runtime-int8`). `(n{TIMES})`: its figure over PyTorch's, same machine, same run. Peers: every",
        "other system the run measured (sentence-transformers' ONNX exports, fastembed, OpenVINO, CTranslate2); a peer",
        f"is faithful when each of its vectors keeps cosine {FAITHFUL} or more to PyTorch fp32's on STS-B dev and on",
        "the passages.",
    ]


def headline_system(doc: Doc) -> str:
    """The results row that is ``runtime.load()`` as it runs today on the file's CPU class: ``runtime-auto`` where
    the class has an OpenVINO rule, else ``runtime-int8`` (what auto runs there: onnxruntime int8 for every text);
    whichever of the two the file measured if it lacks that one."""
    from runtime.backends import AUTO_OPENVINO_FROM

    systems = doc["systems"]
    wanted = HEADLINE_SYSTEM if AUTO_OPENVINO_FROM.get(doc["machine"]["isa_class"]) is not None else "runtime-int8"
    if (systems.get(wanted) or {}).get("best"):
        return wanted
    return next((n for n in (HEADLINE_SYSTEM, "runtime-int8") if (systems.get(n) or {}).get("best")), wanted)


def _headline_rows(doc: Doc) -> list[str]:
    m, systems = doc["machine"], doc["systems"]
    ours, base = systems.get(headline_system(doc), {}), systems.get(doc["baseline"], {})
    peers = {n: s for n, s in systems.items() if s.get("best") and not n.startswith("runtime-") and s is not base}
    faithful = {n: s for n, s in peers.items() if _faithful(s)}
    label = f"{m['cores']}-core {m['cpu_model'].replace('(R)', '')} ({m['isa_class']}), {doc['threads']} threads"
    rows = []
    for i, (name, key, part, higher) in enumerate(HEADLINE_FIGURES):
        digits = 0 if higher else 2
        mine, theirs = _figure(ours, key), _figure(base, key)
        ratio = f" ({mine / theirs:.2f}{TIMES})" if mine is not None and theirs else ""
        best_faithful, best_any = _fastest(faithful, key, higher), _fastest(peers, key, higher)
        versus = NONE
        if mine is not None and best_faithful is not None:
            versus = f"{(mine / best_faithful[0]) if higher else (best_faithful[0] / mine):.2f}{TIMES}"
        rows.append(
            f"| {label if i == 0 else ''} | {name} | {_num(mine, digits, bold=True)}{ratio} | {_num(theirs, digits)} "
            f"| {_peer(best_faithful, digits)} | {versus} "
            f"| {_peer(best_any, digits)}{f' ({_min_cosine(peers[best_any[1]], part)})' if best_any else ''} |"
        )
    fidelity = " / ".join(_min_cosine(ours, part) for part in ("dev", "long"))
    rows.append(f"|  | min cosine to PyTorch fp32, dev / passages | {fidelity} | {'1' if base else NONE} | | | |")
    return rows


def _faithful(system: Doc) -> bool:
    fidelity = system.get("fidelity_to_baseline") or {}
    return all(part in fidelity and fidelity[part]["min"] >= FAITHFUL for part in ("dev", "long"))


def _fastest(peers: dict[str, Doc], key: str, higher: bool) -> tuple[float, str] | None:
    ranked = sorted((value, n) for n, s in peers.items() if (value := _figure(s, key)) is not None)
    return (ranked[-1] if higher else ranked[0]) if ranked else None


def _peer(found: tuple[float, str] | None, digits: int) -> str:
    return f"{found[0]:,.{digits}f} ({found[1]})" if found else NONE


def _num(value: float | None, digits: int, bold: bool = False) -> str:
    if value is None:
        return NONE
    return f"**{value:,.{digits}f}**" if bold else f"{value:,.{digits}f}"


def _figure(system: Doc, key: str) -> float | None:
    best = system.get("best")
    if not best:
        return None
    value = best["latency_ms"].get(key) if key in ("p50", "p99") else best["throughput"].get(key)
    return float(value) if value is not None else None


def _min_cosine(system: Doc, part: str) -> str:
    fidelity = (system.get("fidelity_to_baseline") or {}).get(part)
    return f"{fidelity['min']:.4f}" if fidelity else NONE


def runtime_systems(results: Path) -> list[str]:
    """Per CPU class, every way this runtime ran (backends, graphs, ``auto``), side by side."""
    rows = [
        "| CPU class | system | dev b1 | dev b32 | long b32 | p50 ms | min cosine to PyTorch, dev / passages "
        "| batch 1 vs 32, min cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(results.glob(CPU_FILES)):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for name, s in doc["systems"].items():
            if not name.startswith("runtime-") or s["status"] == "skipped":
                continue
            if not s.get("best"):
                reason = " ".join(str(s["reason"]).split()).replace("|", "\\|")
                rows.append(f"| {doc['machine']['name']} | {name} | {s['status']}: {reason} | | | | | |")
                continue
            speed = " | ".join(_num(_figure(s, key), 0) for key in ("dev@1", "dev@32", "long@32"))
            fidelity = " / ".join(_min_cosine(s, part) for part in ("dev", "long"))
            rows.append(
                f"| {doc['machine']['name']} | {name} | {speed} | {_num(_figure(s, 'p50'), 2)} | {fidelity} | "
                f"{s['batch_1_vs_32_cosine']['min']:.5f} |"
            )
    return [*rows, "", "Texts/s, best of the run's rounds; each system in its own processes with the run's threads."]


def auto_rules(results: Path) -> list[str]:
    """backend="auto"'s rule per CPU class (runtime.backends.AUTO_OPENVINO_FROM), with the results behind it."""
    from runtime.backends import AUTO_OPENVINO_FROM  # the runtime is installed wherever the docs are built or tested

    rows = ["| CPU class | texts that run on OpenVINO | evidence |", "|---|---|---|"]
    for cpu_class, tokens in sorted(AUTO_OPENVINO_FROM.items()):
        files = sorted(p.stem for p in results.glob(f"*-{cpu_class}.json") if p.stem.startswith(("engines-", "cpu-")))
        evidence = ", ".join(f"`{stem}`" for stem in files) or NONE
        if tokens is None:
            engines = [json.loads((results / f"{s}.json").read_text(encoding="utf-8")) for s in files if s[0] == "e"]
            ratios = [c["openvino_over_onnxruntime"] for doc in engines for c in doc["cases"]]
            span = f"{min(ratios):.2f}\u2013{max(ratios):.2f}{TIMES}" if ratios else ""
            measured = f"OpenVINO ran {span} onnxruntime" if ratios else "measured"
            rows.append(f"| `{cpu_class}` | none: onnxruntime for every text ({measured}) | {evidence} |")
        else:
            texts = "every text" if tokens <= 1 else f"{tokens} tokens or more"
            rows.append(f"| `{cpu_class}` | {texts} (the rest on onnxruntime) | {evidence} |")
    rows.append(f"| every other class | none: onnxruntime for every text (not measured) | {NONE} |")
    return rows


def accuracy(results: Path) -> list[str]:
    """STS-B dev accuracy of every graph the export wrote (its manifest), beside the model card's and PyTorch's."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    card = _card_metrics()
    prov = manifest["provenance"]
    torch, epochs = prov["pytorch_reference"], prov["training"]["epochs"]
    per_epoch = ", ".join(f"{e['dev_spearman']:.4f}" for e in epochs)
    rows = [
        f"| model | spearman | pearson | min / mean cosine to PyTorch ({torch['sentences']:,} sentences) | graph |",
        "|---|---|---|---|---|",
        f"| model card | {card['spearman_cosine']:.4f} | {card['pearson_cosine']:.4f} | {NONE} | {NONE} |",
        f"| this fine-tune, PyTorch (epochs 1-{len(epochs)}: {per_epoch}) | {torch['dev_spearman']:.4f} | "
        f"{torch['dev_pearson']:.4f} | 1 | {NONE} |",
    ]
    for name, v in manifest["variants"].items():
        x = v["metrics"]
        label = f"**ONNX {name} (shipped)**" if name == "int8" else f"ONNX {name}"
        rows.append(
            f"| {label} | {x['dev_spearman']:.5f} | {x['dev_pearson']:.5f} | {x['min_cosine']:.6f} / "
            f"{x['mean_cosine']:.6f} | {v['graph']['bytes'] / MIB:.1f} MiB |"
        )
    return [
        *rows,
        "",
        f"*From `artifacts/minilm-l6-stsb/manifest.json` (export of {prov['created'][:10]}) and `MODEL_CARD.md`.*",
    ]


def _card_metrics() -> dict[str, float]:
    """The model card's first STS-B dev figures (its YAML front matter)."""
    found = re.findall(r"- type: (\w+)\n\s+value: ([0-9.]+)", MODEL_CARD.read_text(encoding="utf-8"))
    metrics: dict[str, float] = {}
    for name, value in found:
        metrics.setdefault(name, float(value))
    return metrics
