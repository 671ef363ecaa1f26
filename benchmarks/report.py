"""The markdown report of a result document: one table of figures with ratios to the baseline, one of fidelity."""

from __future__ import annotations

from typing import Any

SPEED_COLUMNS = ("dev@1", "dev@32", "dev@128", "long@32")
NONE = "\u2013"  # en dash: not measured
TIMES = "\u00d7"
CONTENTION_SHARE = 0.02  # other processes' CPU-s per timed second above which a round is flagged ...
CONTENTION_FLOOR_S = 0.5  # ... if also above this (/proc/stat counts in 10 ms ticks)


def markdown(doc: dict[str, Any]) -> str:
    """The whole ``<machine>.md``."""
    m, w = doc["machine"], doc["workloads"]
    lines = [
        f"# Benchmark: {m['name']}",
        "",
        f"{m['cpu_model']}, {m['cores']} cores ({', '.join(m['isa'])}), {doc['threads']} threads for every system, "
        f"each system in its own processes, {doc['settings']['rounds']} interleaved round(s), best of rounds shown. "
        f"Run took {doc['elapsed_s']:.0f} s.",
        "",
        f"Workloads: STS-B dev, {w['dev']['texts']} sentences (mean {w['dev']['mean_tokens']:.1f} tokens); "
        f"long passages, {w['long']['texts']} texts (mean {w['long']['mean_tokens']:.0f} tokens). "
        f"Cells read `value (ratio to {doc['baseline']})`: throughput in texts/s (higher is better), "
        "latency, cold start, memory and size (lower is better). Cold start: new process to first embedding. "
        "Peak RSS: the process that ran all the throughput and latency work. Installed MB: the distributions the "
        "system needs, as installed here.",
        "",
        *_figures_table(doc),
        "",
        *_notes_lines(doc),
        "## Fidelity and model files",
        "",
        *_fidelity_table(doc),
        "",
        "## Machine ceiling",
        "",
        *_ceiling_lines(doc),
        "",
        *_status_lines(doc),
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
        "",
    ]
    return "\n".join(lines)


def _cell(value: float | None, ratio: float | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    text = f"{value:,.{digits}f}"
    return f"{text} ({ratio:.2f}{TIMES})" if ratio is not None else text


def _measured(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, s) for name, s in doc["systems"].items() if s.get("best")]


def _figures_table(doc: dict[str, Any]) -> list[str]:
    head = (
        "| system | dev b1 | dev b32 | dev b128 | long b32 | p50 ms | p99 ms | cold start s | peak RSS MB "
        "| installed MB | STS-B spearman | roofline b32 |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in _measured(doc):
        best, ratios = s["best"], s.get("ratios", {})
        cells = [_cell(best["throughput"].get(k), ratios.get(k)) for k in SPEED_COLUMNS]
        cells += [_cell(best["latency_ms"][k], ratios.get(f"latency_{k}"), 2) for k in ("p50", "p99")]
        cells.append(_cell(best["cold_start_s"], ratios.get("cold_start_s"), 2))
        cells.append(_cell(best["peak_rss_mb"], ratios.get("peak_rss_mb")))
        cells.append(_cell(s.get("installed_mb"), ratios.get("installed_mb")))
        cells.append(f"{s['accuracy']['spearman']:.4f}")
        roof = s.get("roofline_pct", {}).get("dev@32")
        cells.append(_percent(roof))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _fidelity_table(doc: dict[str, Any]) -> list[str]:
    rows = [
        f"Cosine of each system's vectors to {doc['baseline']}'s for the same text (mean / min); batch 1 vs 32: "
        "cosine of a text's vector embedded alone vs in a batch of 32 (1.0 = batch-invariant).",
        "",
        "| system | graph | model MB | max tokens | dev cosine | long cosine | batch 1 vs 32 (min) | roofline long |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in _measured(doc):
        fid = s.get("fidelity_to_baseline") or {}
        dev, long = (fid.get(p) for p in ("dev", "long"))
        roof = s.get("roofline_pct", {}).get("long@32")
        notes = s["notes"]
        rows.append(
            f"| {name} | {notes.get('graph', NONE)} | {s['model_mb']:.1f} | {notes.get('max_seq_length', NONE)} "
            f"| {_pair(dev)} | {_pair(long)} | {s['batch_1_vs_32_cosine']['min']:.5f} | {_percent(roof)} |"
        )
    return rows


def _pair(cos: dict[str, float] | None) -> str:
    return f"{cos['mean']:.5f} / {cos['min']:.5f}" if cos else NONE


def _percent(value: float | None) -> str:
    return f"{value:.0f} %" if value is not None else NONE


def _ceiling_lines(doc: dict[str, Any]) -> list[str]:
    c = doc["ceiling"]
    rates = ", ".join(f"{k.replace('_', ' ')} {v:,.0f} G-ops/s" for k, v in c["gops"].items())
    flops = c["flops_per_text"]
    return [
        f"Best GEMM rates with {doc['threads']} threads: {rates}.",
        f"Model FLOPs per text (2 x {c['model']['dense_params'] / 1e6:.1f} M dense weights x tokens + attention "
        f"4 T² H per layer): dev {flops['dev'] / 1e9:.2f} GFLOP, long {flops['long'] / 1e9:.2f} GFLOP. "
        "Roofline = throughput / (best GEMM rate of the system's precision / FLOPs per text): fp32 systems against "
        "the best fp32 rate, int8 systems against the best int8 rate; FLOPs count real tokens only (no padding), "
        "up to the system's own truncation.",
    ]


def _notes_lines(doc: dict[str, Any]) -> list[str]:
    """Facts that change how a row reads: truncation shorter than the model's window, the actual compute precision."""
    window = max((s["notes"].get("max_seq_length") or 0) for _, s in _measured(doc)) if _measured(doc) else 0
    lines = []
    for name, s in _measured(doc):
        notes, fid = s["notes"], s.get("fidelity_to_baseline") or {}
        limit = notes.get("max_seq_length")
        if limit and limit < window:
            long = f" (long-passage cosine to the baseline {fid['long']['mean']:.3f})" if "long" in fid else ""
            lines.append(f"- {name} truncates at {limit} tokens, not {window}: long passages lose their tail{long}.")
        if "inference_precision" in notes and notes.get("backend", "openvino") == "openvino":
            lines.append(f"- {name} computes in {notes['inference_precision']} (OpenVINO's INFERENCE_PRECISION_HINT).")
        elif notes.get("backend"):
            lines.append(f"- {name} ran on {notes['backend']}, {notes.get('inference_precision', '?')} inference.")
        lines += _contention_lines(name, s["rounds"])
    return [*lines, ""] if lines else []


def _contention_lines(name: str, rounds: list[dict[str, Any]]) -> list[str]:
    """Rounds during which other processes took more than 2 % of the machine: their figures may be low."""
    lines = []
    for number, r in enumerate(rounds, start=1):
        other, wall = r["timed"]["other_cpu_s"], r["timed"]["wall_s"]
        if other is not None and other > max(CONTENTION_FLOOR_S, CONTENTION_SHARE * wall):
            lines.append(
                f"- {name}, round {number}: other processes used {other:.1f} CPU-s during its {wall:.0f} s of timing "
                "(best of rounds shown)."
            )
    return lines


def _status_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    for name, s in doc["systems"].items():
        if s["status"] != "ok":
            lines.append(f"- **{name}** {s['status']}: {s['reason']}")
    return ["## Not measured", "", *lines, ""] if lines else []
