"""``python -m benchmarks [--quick] [--systems a,b] [--out DIR]``: run the benchmark, write json, md and png.

``--render FILE.json`` rewrites the md and png of an existing result document (after a change to the report) without
measuring anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from benchmarks import runner, summary
from benchmarks.chart import chart
from benchmarks.config import DEFAULT_CACHE, DEFAULT_CHECKPOINT, DEFAULT_OUT, FULL, QUICK, QUICK_OUT, Paths, Settings
from benchmarks.report import markdown
from benchmarks.systems import SYSTEMS, select


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 dev pairs, tiny counts, one round")
    parser.add_argument(
        "--systems",
        type=lambda s: [t for t in s.split(",") if t],
        help=f"comma-separated names or families (default all): {', '.join(s.name for s in SYSTEMS)}",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 2, or 1 with --quick)")
    parser.add_argument("--threads", type=int, help="thread budget of every system (default 2)")
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: tuple(int(t) for t in s.split(",")),
        help="dev batch sizes to time (default 1,32,128; must include 1 and 32) - for a shorter A/B, not the results",
    )
    parser.add_argument("--long-passages", type=int, help="long passages to time (default 128, or 4 with --quick)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder for <machine>.json/.md/.png (default {DEFAULT_OUT}, or {QUICK_OUT} with --quick)",
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="fine-tuned ST checkpoint")
    parser.add_argument("--artifact", type=Path, help="this runtime's artifact folder (default: the shipped model)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where peers' exports are built")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the md and png of this result file")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    given = (
        ("rounds", args.rounds),
        ("threads", args.threads),
        ("batch_sizes", args.batch_sizes),
        ("long_passages", args.long_passages),
    )
    return dataclasses.replace(base, **{k: v for k, v in given if v is not None})


def write(doc: dict[str, Any], out: Path, with_json: bool = True) -> list[Path]:
    """Write ``<machine>.json``, ``.md`` and ``.png`` into ``out`` (each via a .tmp file, then renamed), the machine
    name being the document's own (it includes the instruction-set class).

    The chart needs matplotlib (the ``bench`` extra); without it the run still writes json and md.
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = out / doc["machine"]["name"]
    written = []
    texts = ((".json", json.dumps(doc, indent=1) + "\n"),) if with_json else ()
    for suffix, text in (*texts, (".md", markdown(doc))):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        written.append(tmp.replace(stem.with_suffix(suffix)))
    if importlib.util.find_spec("matplotlib") is None:
        logging.getLogger(__name__).warning("matplotlib not installed: no chart (pip install '.[bench]')")
        return written
    tmp = chart(doc, stem.with_suffix(".png.tmp"))
    written.append(tmp.replace(stem.with_suffix(".png")))
    return written


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.render:
        doc = json.loads(args.render.read_text(encoding="utf-8"))
        if args.render.stem != doc["machine"]["name"]:
            raise SystemExit(f"{args.render}: file name differs from its machine name {doc['machine']['name']!r}")
        print("wrote " + ", ".join(str(f) for f in write(doc, args.render.parent, with_json=False)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from runtime.artifact import default_artifact_dir

    try:
        systems, settings = select(args.systems), settings_of(args)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    paths = Paths(args.checkpoint.resolve(), (args.artifact or default_artifact_dir()).resolve(), args.cache.resolve())
    doc = summary.document(runner.run(systems, settings, paths))
    files = write(doc, args.out)
    print(markdown(doc))
    print("wrote " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
