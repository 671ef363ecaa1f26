"""Command line: ``python -m runtime encode INPUT -o OUTPUT`` and ``python -m runtime info``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

import runtime
from runtime.artifact import MANIFEST_FILE
from runtime.server.options import add_arguments as add_serve_arguments

PROGRESS_FROM = 1000  # inputs with at least this many texts show progress on stderr


def read_texts(path: Path, column: str) -> list[str]:
    """Texts from .txt (one per line), .jsonl (field ``column``) or .csv (column ``column``)."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".txt":
            return [line.rstrip("\r\n") for line in f]
        if suffix == ".jsonl":
            return [_jsonl_text(line, column, path, n) for n, line in enumerate(f, start=1) if line.strip()]
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise SystemExit(
                    f"{path}: no column {column!r} (columns: {reader.fieldnames}); choose one with --column"
                )
            return [row[column] for row in reader]
    raise SystemExit(f"{path}: unsupported input type {suffix!r} (use .txt, .jsonl or .csv)")


def _jsonl_text(line: str, field: str, path: Path, line_no: int) -> str:
    try:
        value = json.loads(line)[field]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SystemExit(f"{path}:{line_no}: expected a JSON object with a string field {field!r} ({err})") from err
    if not isinstance(value, str):
        raise SystemExit(f"{path}:{line_no}: field {field!r} is {type(value).__name__}, expected a string")
    return value


def write_embeddings(path: Path, texts: list[str], embeddings: np.ndarray) -> None:
    """Write .npy (float32 matrix) or .jsonl (one {"text", "embedding"} object per line)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, embeddings)
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for text, vec in zip(texts, embeddings, strict=True):
                f.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vec]}) + "\n")
    else:
        raise SystemExit(f"{path}: unsupported output type {suffix!r} (use .npy or .jsonl)")


def _encode(args: argparse.Namespace) -> None:
    texts = read_texts(args.input, args.column)
    encoder = runtime.load(args.model, provider=args.provider, precision=args.precision, threads=args.threads)
    embeddings = encoder.encode(texts, batch_size=args.batch_size, show_progress_bar=len(texts) >= PROGRESS_FROM)
    write_embeddings(args.output, texts, embeddings)
    print(
        f"{len(texts)} texts -> {args.output} {embeddings.shape} ({encoder.device}, {encoder.precision.value})",
        file=sys.stderr,
    )


def _info(args: argparse.Namespace) -> None:
    encoder = runtime.load(args.model, provider=args.provider, precision=args.precision)
    manifest = encoder.manifest
    info = {
        "artifact": str(encoder.folder),
        "name": manifest.name,
        "device": encoder.device,
        "precision": encoder.precision.value,
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


def _serve(args: argparse.Namespace) -> None:
    try:
        from runtime.server.main import serve
    except ImportError as err:
        raise SystemExit(f"error: the server needs the 'serve' extra: pip install '.[serve]' ({err})") from err
    serve(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    parser.add_argument(
        "--model", type=Path, default=None, help=f"artifact folder (with {MANIFEST_FILE}); default: shipped"
    )
    parser.add_argument("--provider", default="auto", choices=[p.value for p in runtime.Provider])
    parser.add_argument("--precision", default=None, choices=[p.value for p in runtime.Precision])
    sub = parser.add_subparsers(dest="command", required=True)
    p_encode = sub.add_parser("encode", help="embed a .txt/.jsonl/.csv file into .npy or .jsonl")
    p_encode.add_argument("input", type=Path)
    p_encode.add_argument("-o", "--output", type=Path, required=True)
    p_encode.add_argument("--column", default="text", help="jsonl field / csv column holding the text (default: text)")
    p_encode.add_argument("--batch-size", type=int, default=32)
    p_encode.add_argument("--threads", type=int, default=None)
    p_encode.set_defaults(func=_encode)
    sub.add_parser("info", help="show the model, providers and manifest metrics").set_defaults(func=_info)
    p_serve = sub.add_parser("serve", help="OpenAI-compatible HTTP embedding server (needs the 'serve' extra)")
    add_serve_arguments(p_serve)
    p_serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (runtime.ArtifactError, runtime.ProviderUnavailable, OSError) as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
