"""Command line: ``python -m runtime encode | check | info``.

The model options (--model, --provider, --precision, --backend) may come before or after the subcommand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import runtime
from runtime.artifact import MANIFEST_FILE
from runtime.quantization import OUTPUT_PRECISIONS
from runtime.server.options import add_arguments as add_serve_arguments


def _model_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every subcommand shares; ``default`` is SUPPRESS on the subcommand's copy, so a value given
    before the subcommand is not reset by the subcommand's defaults."""
    parser.add_argument(
        "--model", type=Path, default=default, help=f"artifact folder (with {MANIFEST_FILE}); default: the shipped one"
    )
    parser.add_argument("--provider", default=default, choices=[p.value for p in runtime.Provider])
    parser.add_argument("--precision", default=default, choices=[p.value for p in runtime.Precision])
    parser.add_argument(
        "--backend",
        default=default,
        choices=[b.value for b in runtime.Backend],
        help="inference engine (default: auto, per CPU class and text length: docs/backends.md); openvino needs the "
        "'openvino' extra",
    )


# ---- encode ----


def _add_encode(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "encode",
        parents=[common],
        help="embed .txt/.jsonl/.csv/.parquet files (or stdin: -) into .npy, .jsonl or a folder of Parquet shards",
        description="Streams the input in windows (bounded memory). A folder output gets part-NNNNN.parquet shards "
        "and a _SUCCESS manifest, and can be resumed after a crash.",
    )
    p.add_argument("input", nargs="+", help="files, folders or glob patterns; - reads stdin")
    p.add_argument("-o", "--output", type=Path, required=True, help="out.npy, out.jsonl, or a folder (shards)")
    p.add_argument("--column", help="jsonl field / csv or parquet column holding the text (default: text)")
    p.add_argument("--id-column", help="field or column holding the id (default: the 0-based line/row number)")
    p.add_argument("--input-format", choices=["txt", "jsonl", "csv", "parquet"], help="override the file suffix")
    p.add_argument("--resume", action="store_true", help="finish the job a crash left in the output folder")
    p.add_argument("--skip-bad-rows", action="store_true", default=None, help="count and log bad rows, skip them")
    p.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray Data (ray.init(), or the cluster at ADDRESS; put it after the inputs)",
    )
    p.add_argument("--actors", type=int, help="Ray actors (default: cluster CPUs / --threads)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (per actor with --ray; default there: 1)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--window", type=int, help="texts read, sorted and encoded at a time (default: 2048)")
    p.add_argument(
        "--shard-rows",
        type=int,
        help="input lines/rows per shard (default: 102400; with --ray about 4 shards per actor)",
    )
    p.add_argument(
        "--output-precision",
        choices=list(OUTPUT_PRECISIONS),
        help="type of the written vectors (default: float32): int8/uint8 on the artifact's calibrated grid, "
        "binary/ubinary packed sign bits; --precision is the graph variant",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_encode)


def _encode(args: argparse.Namespace) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from runtime.corpus import encode_files
    from runtime.corpus.outputs import arrow_pool_env

    os.environ.update(arrow_pool_env())  # before pyarrow is imported (by the first shard)

    with logging_redirect_tqdm():
        result = encode_files(
            args.input,
            args.output,
            column=args.column,
            id_column=args.id_column,
            input_format=args.input_format,
            resume=args.resume,
            model=args.model,
            provider=args.provider,
            precision=args.precision,
            backend=args.backend,
            threads=args.threads,
            batch_size=args.batch_size,
            window=args.window,
            shard_rows=args.shard_rows,
            skip_bad_rows=args.skip_bad_rows,
            progress=False if args.quiet else None,
            ray=args.ray,
            actors=args.actors,
            output_precision=args.output_precision,
        )
    if not args.quiet:
        shards = f", {result.shards} shard(s), {result.resumed_shards} from before" if result.shards else ""
        print(
            f"{result.records:,} texts -> {result.output}: {result.rows:,} rows, {result.bad_rows:,} bad rows skipped"
            f"{shards}; {result.seconds:.1f} s, {result.texts_per_second:,.0f} texts/s",
            file=sys.stderr,
        )


# ---- check ----


def _add_check(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check",
        parents=[common],
        help="prove a folder job complete: every input id exactly once, vectors as the library's on a sample",
    )
    p.add_argument("output", type=Path, help="the job's output folder (with _SUCCESS)")
    p.add_argument("input", nargs="+", help="the job's input, as given to encode")
    p.add_argument("--sample", type=int, default=256, help="rows re-encoded and compared (default: 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max abs difference per component (default: 1e-5, or 2e-3 where the job's rule runs texts in bf16)",
    )
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> None:
    from runtime.corpus import check

    report = check(
        args.output, args.input, sample=args.sample, seed=args.seed, tolerance=args.tolerance, model=args.model
    )
    print(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        raise SystemExit(f"check failed: {len(report.problems)} problem(s), first: {report.problems[0]}")


# ---- info ----


def _add_info(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    sub.add_parser("info", parents=[common], help="show the model, providers and manifest metrics").set_defaults(
        func=_info
    )


def _info(args: argparse.Namespace) -> None:
    encoder = runtime.load(args.model, provider=args.provider, precision=args.precision, backend=args.backend)
    manifest = encoder.manifest
    info = {
        "artifact": str(encoder.folder),
        "name": manifest.name,
        "device": encoder.device,
        "precision": encoder.precision.value,
        "backend": encoder.backend,
        "engine": encoder.info,
        "dimension": manifest.dimension,
        "max_seq_length": manifest.max_seq_length,
        "available_providers": runtime.available_providers(),
        "variants": {
            p.value: {"file": v.graph.file, "present": (encoder.folder / v.graph.file).is_file(), "metrics": v.metrics}
            for p, v in manifest.variants.items()
        },
        "pytorch_reference": manifest.provenance.get("pytorch_reference"),
        "created": manifest.provenance.get("created"),
    }
    print(json.dumps(info, indent=2))


# ---- serve ----


def _add_serve(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve", parents=[common], help="OpenAI-compatible HTTP embedding server (needs the 'serve' extra)"
    )
    add_serve_arguments(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    try:
        from runtime.server.main import serve
    except ImportError as err:
        raise SystemExit(f"error: the server needs the 'serve' extra: pip install '.[serve]' ({err})") from err
    serve(args)


# Each subcommand: one _add_<name>(sub, common) that registers its parser and sets func.
SUBCOMMANDS: list[Callable[..., None]] = [_add_encode, _add_check, _add_info, _add_serve]


def main(argv: list[str] | None = None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    _model_options(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    _model_options(parser, argparse.SUPPRESS)
    parser.set_defaults(model=None, provider="auto", precision=None, backend="auto")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub, common)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    try:
        args.func(args)
    # ArtifactError and CorpusError are ValueErrors; a ValueError names a bad argument.
    except (runtime.ArtifactError, runtime.ProviderUnavailable, OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    except KeyboardInterrupt:
        hint = " (a folder job keeps its finished shards: rerun with --resume)" if args.command == "encode" else ""
        raise SystemExit(f"interrupted{hint}") from None


if __name__ == "__main__":
    main()
