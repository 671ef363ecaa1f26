"""Cross-CPU fidelity: the same text embedded on this CPU and on an emulated AVX2 CPU, by every int8 system.

    python -m studies.crosscpu [--cpu Haswell] [--texts 64] [--systems runtime-int8,st-onnx-int8,...]

Users who embed on a mixed fleet into one vector index need to know whether a text's vector depends on the CPU that
made it. Each system embeds the same texts twice, in fresh processes: natively, and under ``qemu-x86_64 -cpu CPU``
(Haswell: AVX2 + FMA, no VNNI, no AVX-512). Reports min/mean cosine and the largest per-dimension difference, and
writes ``crosscpu-<machine>.{json,md}`` (the machine name ends in its ISA class) under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.config import DEFAULT_CACHE, DEFAULT_CHECKPOINT, DEFAULT_OUT, QUICK, REPO, Paths
from benchmarks.machine import describe
from benchmarks.peers import adapter
from benchmarks.systems import BY_NAME, unavailable_reason
from export.data import dev_sentences
from runtime.cpu import isa_class

# fastembed has no int8 graph of its own for this model (see benchmarks/peers/fastembed_onnx.py); the dynamic int8
# graph it used to be measured on is sentence-transformers', st-onnx-int8 below. runtime-fp32 is the float control.
# CTranslate2 picks its GEMM library from the CPU's vendor string (Intel MKL on GenuineIntel, oneDNN elsewhere), and
# qemu's Haswell reports GenuineIntel: its emulated row is the MKL AVX2 path (the notes record both sides' backends).
SYSTEMS = ("runtime-int8", "st-onnx-int8", "openvino-int8", "ctranslate2-int8", "runtime-fp32")
LONG_TEXT = " ".join(["a man is playing a guitar on a stage in front of a large crowd"] * 20)
TIMEOUT_S = 3600


def texts(count: int) -> list[str]:
    """The first ``count`` STS-B dev sentences and one passage truncated at 256 tokens."""
    return [*dev_sentences()[:count], LONG_TEXT]


def embed_main(system_name: str, count: int, out: Path, paths: Paths) -> None:
    """Embed the texts with one system, one text per call (no batch-mate effects), and save them as .npy, the
    adapter's notes (what it found on this CPU) beside them as .json."""
    system = BY_NAME[system_name]
    peer = adapter(system.adapter).load(system, paths, 1)
    np.save(out, np.stack([peer.embed([t], 1)[0] for t in texts(count)]).astype(np.float32))
    out.with_suffix(".json").write_text(json.dumps(peer.notes, default=str), encoding="utf-8")


def _run(command: list[str]) -> str | None:
    """Run one embedding process; the reason it failed, or None."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1][-300:]


def compare(native: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Cosine and largest per-dimension difference between the same texts' vectors."""
    a = native / np.linalg.norm(native, axis=1, keepdims=True)
    b = other / np.linalg.norm(other, axis=1, keepdims=True)
    cos = np.sum(a.astype(np.float64) * b, axis=1)
    return {
        "min_cosine": round(float(cos.min()), 7),
        "mean_cosine": round(float(cos.mean()), 7),
        "max_abs_diff": float(np.abs(native - other).max()),
        "identical_vectors": int(np.sum(np.all(native == other, axis=1))),
    }


def measure(systems: list[str], cpu: str, count: int, paths: Paths, work: Path) -> dict[str, object]:
    """Embed with each system natively and under qemu; compare."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("qemu-x86_64 not found: apt-get install qemu-user")
    rows: dict[str, object] = {}
    for name in systems:
        reason = unavailable_reason(BY_NAME[name], paths)
        if reason is not None:
            rows[name] = {"error": reason}
            continue
        module = adapter(BY_NAME[name].adapter)
        if hasattr(module, "prepare"):
            module.prepare(BY_NAME[name], paths, QUICK)  # build the peer's model files natively, once
        outs = {"native": work / f"{name}-native.npy", cpu: work / f"{name}-{cpu}.npy"}
        base = [sys.executable, "-m", "studies.crosscpu", "--embed", name, "--texts", str(count)]
        base += ["--checkpoint", str(paths.checkpoint), "--artifact", str(paths.artifact), "--cache", str(paths.cache)]
        start = time.perf_counter()
        errors = {
            "native": _run([*base, "--out", str(outs["native"])]),
            cpu: _run([qemu, "-cpu", cpu, *base, "--out", str(outs[cpu])]),
        }
        failed = {k: v for k, v in errors.items() if v}
        if failed:
            rows[name] = {"error": "; ".join(f"{k}: {v}" for k, v in failed.items())}
        else:
            notes = {side: _flat_notes(path.with_suffix(".json")) for side, path in outs.items()}
            differ = sorted(k for k in {*notes["native"], *notes[cpu]} if notes["native"].get(k) != notes[cpu].get(k))
            rows[name] = {
                **compare(np.load(outs["native"]), np.load(outs[cpu])),
                "notes_that_differ": {k: {side: notes[side].get(k) for side in notes} for k in differ},
            }
        print(name, rows[name], f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def _flat_notes(path: Path) -> dict[str, object]:
    """An adapter's notes with nested dicts spread out as ``outer.inner`` keys."""
    flat: dict[str, object] = {}
    for key, value in json.loads(path.read_text(encoding="utf-8")).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def markdown(result: dict[str, object]) -> str:
    """The fidelity table."""
    cpu, native = result["emulated_cpu"], result["native_isa_class"]
    lines = [
        f"# Cross-CPU fidelity: {native} (native) vs {cpu} under qemu (AVX2 + FMA, no VNNI)",
        "",
        f"{result['texts']} texts (STS-B dev + one 256-token passage), each embedded alone, in fresh processes.",
        "",
        "| system | min cosine | mean cosine | max abs diff | identical vectors |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["systems"].items():  # type: ignore[attr-defined]
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} | | | |")
        else:
            ident = f"{row['identical_vectors']}/{result['texts']}"
            lines.append(
                f"| {name} | {row['min_cosine']:.7f} | {row['mean_cosine']:.7f} | {row['max_abs_diff']:.2e} | {ident} |"
            )
    differ = [
        f"- {name} `{key}`: " + "; ".join(f"{side}: {value}" for side, value in sides.items())
        for name, row in result["systems"].items()  # type: ignore[attr-defined]
        for key, sides in row.get("notes_that_differ", {}).items()
    ]
    if differ:
        lines += ["", "What the systems found on each CPU, where it differs:", "", *differ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m studies.crosscpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", default="Haswell", help="qemu CPU model to compare with (default: Haswell = AVX2)")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--artifact", type=Path, default=REPO / "artifacts" / "minilm-l6-stsb")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--embed", default=None, help=argparse.SUPPRESS)  # internal: one system, one process
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    paths = Paths(args.checkpoint, args.artifact, args.cache)
    if args.embed:
        embed_main(args.embed, args.texts, args.out, paths)
        return
    with tempfile.TemporaryDirectory(prefix="crosscpu-") as tmp:
        rows = measure(args.systems.split(","), args.cpu, args.texts, paths, Path(tmp))
    machine = describe()
    result = {
        "machine": machine,
        "native_isa_class": isa_class(),
        "emulated_cpu": args.cpu,
        "texts": args.texts + 1,
        "systems": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    stem = args.out_dir / f"crosscpu-{machine['name']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
