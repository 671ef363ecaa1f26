"""Command line: ``python -m export train | onnx | all | calibrate-outputs | pack-tokens``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

DEFAULT_CHECKPOINT = Path("build/minilm-l6-stsb")
DEFAULT_ARTIFACT = Path("artifacts/minilm-l6-stsb")


def _train(args: argparse.Namespace) -> None:
    from export.train import Recipe, train

    train(args.checkpoint, Recipe(epochs=args.epochs, seed=args.seed))


def _onnx(args: argparse.Namespace) -> None:
    from export.pipeline import run_export
    from runtime.artifact import Precision

    manifest = run_export(args.checkpoint, args.out)
    for precision, variant in manifest.variants.items():
        print(f"{precision.value}: {variant.graph.bytes / 2**20:.1f} MiB  {variant.metrics}")
    missing = {Precision.FP32, Precision.INT8, Precision.FP16} - set(manifest.variants)
    if missing:
        raise SystemExit(f"variants that failed their gate and were not written: {sorted(p.value for p in missing)}")


def _calibrate_outputs(args: argparse.Namespace) -> None:
    from export.calibrate import add_output_ranges
    from runtime.artifact import Precision

    graph = None if args.graph is None else Precision(args.graph)
    manifest = add_output_ranges(args.out, graph, args.method, args.percentile, args.sentences)
    assert manifest.output_ranges is not None
    print(f"{args.out}: int8/uint8 output ranges written, {manifest.output_ranges.calibration}")


def _pack_tokens(args: argparse.Namespace) -> None:
    from export.data import dev_sentences
    from export.pack import pack_artifact
    from runtime.artifact import Precision

    manifest = pack_artifact(args.out, dev_sentences())
    graph = manifest.variants[Precision.INT8].graph
    print(f"{args.out}: int8 graph packed, vectors bit-identical on STS-B dev; {graph.file} sha256 {graph.sha256}")


def _all(args: argparse.Namespace) -> None:
    _train(args)
    _onnx(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="fine-tune all-MiniLM-L6-v2 on STS-B (the model card's recipe)")
    p_train.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="where to save the model")
    p_train.add_argument("--epochs", type=int, default=4)
    p_train.add_argument("--seed", type=int, default=42)
    p_train.set_defaults(func=_train)
    p_onnx = sub.add_parser("onnx", help="export a sentence-transformers folder to a validated ONNX artifact")
    p_onnx.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="sentence-transformers folder")
    p_onnx.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT, help="artifact folder to (re)place")
    p_onnx.set_defaults(func=_onnx)
    p_cal = sub.add_parser(
        "calibrate-outputs",
        help="measure the int8/uint8 output ranges of an existing artifact and add them to its manifest.json",
    )
    p_cal.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT, help="artifact folder to update")
    p_cal.add_argument("--graph", choices=["int8", "fp32", "fp16"], help="graph to measure with (default: int8)")
    p_cal.add_argument(
        "--method",
        choices=["symmetric", "minmax"],
        default="symmetric",
        help="symmetric (default): one scale, int8 = round(x / s); minmax: each dimension's min and max",
    )
    p_cal.add_argument("--percentile", type=float, default=0.0, help="0 (default): the extremes")
    p_cal.add_argument("--sentences", type=int, help="first N unique STS-B train sentences (default: all 10,566)")
    p_cal.set_defaults(func=_calibrate_outputs)
    p_pack = sub.add_parser(
        "pack-tokens",
        help="rewrite an existing artifact's int8 graph to skip padding (export.pack); refuses unless its vectors "
        "stay bit-identical on STS-B dev",
    )
    p_pack.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT, help="artifact folder to update")
    p_pack.set_defaults(func=_pack_tokens)
    p_all = sub.add_parser("all", help="train, then onnx")
    p_all.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p_all.add_argument("--out", type=Path, default=DEFAULT_ARTIFACT)
    p_all.add_argument("--epochs", type=int, default=4)
    p_all.add_argument("--seed", type=int, default=42)
    p_all.set_defaults(func=_all)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    outcome = "failed after"
    try:
        args.func(args)
        outcome = "finished in"
    finally:
        print(f"python -m export {args.command} {outcome} {_elapsed(time.perf_counter() - start)}", flush=True)


def _elapsed(seconds: float) -> str:
    """``17 min 05 s`` (or ``42.3 s`` under a minute)."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {int(rest):02d} s" if minutes else f"{seconds:.1f} s"


if __name__ == "__main__":
    main()
