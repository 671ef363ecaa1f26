"""Which engine is faster for a text of each length: onnxruntime int8 against OpenVINO (the int8 graph's OpenVINO
form, at the inference precision ``backend="openvino"`` picks on this CPU), the evidence behind ``backend="auto"``'s
per-class rule (``runtime.backends.AUTO_OPENVINO_FROM``).

    python -m studies.engines [--threads 2] [--rounds 3] [--lengths 8,12,...] [--quick] [--out STEM]

For each token count n, runs at batch 1 and at batch 32 of rows of n - 1, n and n + 1 tokens in turn (slices of STS-B
train text between [CLS] and [SEP]; consecutive runs differ in shape, as real traffic does, and OpenVINO pays for
each change of input shape), each batch cut into engine runs as ``encode`` cuts it (``Encoder.batch_plan``: each
engine's own token bound) and embedded by ``Encoder.embed_ids`` of one encoder per engine, in interleaved rounds
(best of rounds, wall clock, both engines with the same threads). The rule is per text, so a length's engine must serve
single-text calls and batches alike: the suggested threshold is the smallest token count from which, for that length
and every longer one, OpenVINO's speed over onnxruntime's, batch 1 and batch 32 weighted equally (their geometric
mean), is at least 1 - ``--slack`` (default 0.05, the run-to-run noise of these machines).
``--render FILE.json`` recomputes the suggestion and rewrites the md of an existing result without measuring.
Writes ``benchmarks/results/engines-<machine>.{json,md}`` (``--quick``: few lengths, ``build/bench-quick/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import runtime
from benchmarks.config import DEFAULT_OUT, QUICK_OUT, write_study
from benchmarks.machine import describe, library_versions
from export.data import read_sts

LENGTHS = (8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)
BATCHES = (1, 32)
ENGINES = ("onnxruntime", "openvino")


def token_runs(encoder: runtime.Encoder, length: int, batch: int, count: int) -> list[list[list[int]]]:
    """``count`` texts in runs of ``batch`` rows, the runs of ``length`` - 1, ``length`` and ``length`` + 1 tokens
    in turn (within 2..max_seq_length): [CLS], a slice of STS-B train text, [SEP]."""
    sentences = list(dict.fromkeys(p.s1 for p in read_sts("train")))[:3000]
    stream = [t for ids in encoder.tokenize(sentences) for t in ids[1:-1]]
    cls, sep = encoder.tokenize([""])[0]
    widths = sorted({min(max(n, 2), encoder.max_seq_length) for n in (length - 1, length, length + 1)})
    runs = []
    for r in range(count // batch):
        width = widths[r % len(widths)]
        run = []
        for k in range(batch):
            start = ((r * batch + k) * 131 + width * 7) % (len(stream) - width)
            run.append([cls, *stream[start : start + width - 2], sep])
        runs.append(run)
    return runs


def _rate(encoder: runtime.Encoder, batches: list[list[list[int]]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        for rows in encoder.batch_plan(batch, len(batch)):
            encoder.embed_ids([batch[i] for i in rows])
    return sum(map(len, batches)) / (time.perf_counter() - started)


def measure(threads: int, rounds: int, lengths: tuple[int, ...], tokens: int) -> dict[str, Any]:
    """Texts/s per engine, length and batch size (best of ``rounds``), with each round's figures."""
    encoders = {name: runtime.load(provider="cpu", threads=threads, backend=name) for name in ENGINES}
    cases: list[dict[str, Any]] = []
    for length in lengths:
        for batch in BATCHES:
            count = max(batch * 6, (tokens // length) // batch * batch)
            runs = token_runs(encoders["onnxruntime"], length, batch, count)
            for encoder in encoders.values():
                for run in runs[:3]:
                    encoder.embed_ids(run)  # warm: the first call at each shape
            per_round: dict[str, list[float]] = {name: [] for name in ENGINES}
            for _ in range(rounds):
                for name, encoder in encoders.items():
                    per_round[name].append(_rate(encoder, runs))
            best = {name: max(values) for name, values in per_round.items()}
            cases.append(
                {
                    "tokens": length,
                    "batch": batch,
                    "texts": count,
                    "texts_per_s": best,
                    "openvino_over_onnxruntime": best["openvino"] / best["onnxruntime"],
                    "rounds": per_round,
                }
            )
            print(
                f"{length:4d} tokens  batch {batch:2d}: onnxruntime {best['onnxruntime']:8.1f}/s  "
                f"openvino {best['openvino']:8.1f}/s  ratio {best['openvino'] / best['onnxruntime']:.2f}",
                file=sys.stderr,
                flush=True,
            )
    return {"cases": cases, "openvino": encoders["openvino"].info, "onnxruntime": encoders["onnxruntime"].info}


def suggested_threshold(cases: list[dict[str, Any]], slack: float) -> int | None:
    """The smallest token count from which OpenVINO's speed over onnxruntime's, the geometric mean of its batch-1 and
    batch-32 ratios, is at least ``1 - slack``, for that length and every longer one; None when no length qualifies."""
    ratio = {(c["tokens"], c["batch"]): c["openvino_over_onnxruntime"] for c in cases}
    lengths = sorted({c["tokens"] for c in cases})
    ok = [(ratio[(n, 1)] * ratio[(n, 32)]) ** 0.5 >= 1.0 - slack for n in lengths]
    best = None
    for i in range(len(lengths) - 1, -1, -1):
        if not ok[i]:
            break
        best = lengths[i]
    return best


def markdown(doc: dict[str, Any]) -> str:
    """The per-length table of a result document."""
    m = doc["machine"]
    lines = [
        f"# Engines per text length, {m['cpu_model']} ({m['isa_class']}), {doc['threads']} threads",
        "",
        f"onnxruntime int8 vs OpenVINO {doc['openvino_precision']} (the int8 graph's OpenVINO form), texts/s, best of "
        f"{doc['rounds']} interleaved rounds. Suggested threshold (OpenVINO from this many tokens): "
        + (
            f"**{doc['suggested_threshold']}**"
            if doc["suggested_threshold"] is not None
            else "**none**: onnxruntime for every length"
        )
        + f" (geometric mean of the batch-1 and batch-32 ratios >= {1 - doc['slack']:.2f} from there on).",
        "",
        "| tokens | batch | onnxruntime | openvino | openvino / onnxruntime |",
        "|---|---|---|---|---|",
    ]
    for c in doc["cases"]:
        rates = c["texts_per_s"]
        lines.append(
            f"| {c['tokens']} | {c['batch']} | {rates['onnxruntime']:,.1f} | {rates['openvino']:,.1f} | "
            f"{c['openvino_over_onnxruntime']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, write json and md, print the md."""
    parser = argparse.ArgumentParser(prog="python -m studies.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per case and round (default 4096)")
    parser.add_argument("--slack", type=float, default=0.05, help="noise margin of the threshold (default 0.05)")
    parser.add_argument("--quick", action="store_true", help="three lengths, one round, few tokens")
    parser.add_argument("--out", type=Path, default=None, help="output stem (default: results/engines-<machine>)")
    parser.add_argument("--render", type=Path, default=None, help="recompute and rewrite an existing FILE.json's md")
    args = parser.parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text(encoding="utf-8"))
        doc.pop("b1_slack", None)
        doc["slack"] = args.slack
        doc["suggested_threshold"] = suggested_threshold(doc["cases"], args.slack)
        write_study(args.render.with_suffix(""), doc, markdown(doc))
        print(markdown(doc))
        return 0
    lengths = tuple(int(x) for x in args.lengths.split(",") if x)
    rounds, tokens = args.rounds, args.tokens
    if args.quick:
        lengths, rounds, tokens = (8, 64, 256), 1, 512
    machine = describe()
    found = measure(args.threads, rounds, lengths, tokens)
    doc = {
        "kind": "engines",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "libraries": library_versions(),
        "threads": args.threads,
        "rounds": rounds,
        "slack": args.slack,
        "openvino_precision": found["openvino"]["inference_precision"],
        "suggested_threshold": suggested_threshold(found["cases"], args.slack),
        "cases": found["cases"],
        "engines": {"onnxruntime": found["onnxruntime"], "openvino": found["openvino"]},
    }
    stem = args.out or ((QUICK_OUT if args.quick else DEFAULT_OUT) / f"engines-{machine['name']}")
    write_study(stem, doc, markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
