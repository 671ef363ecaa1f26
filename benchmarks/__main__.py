"""``python -m benchmarks [--quick] [--systems a,b] [--out DIR]``: run the benchmark, write json, md and png."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path

from benchmarks import runner, summary
from benchmarks.chart import chart
from benchmarks.config import DEFAULT_CACHE, DEFAULT_CHECKPOINT, DEFAULT_OUT, FULL, QUICK, Paths, Settings
from benchmarks.machine import machine_name
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <machine>.json/.md/.png")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="fine-tuned ST checkpoint")
    parser.add_argument("--artifact", type=Path, help="this runtime's artifact folder (default: the shipped model)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where peers' exports are built")
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    changes = {k: v for k, v in (("rounds", args.rounds), ("threads", args.threads)) if v is not None}
    return dataclasses.replace(base, **changes)


def write(doc: dict[str, object], out: Path) -> list[Path]:
    """Write ``<machine>.json``, ``.md`` and ``.png`` into ``out`` (each via a .tmp file, then renamed).

    The chart needs matplotlib (the ``bench`` extra); without it the run still writes json and md.
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = out / machine_name()
    written = []
    for suffix, text in ((".json", json.dumps(doc, indent=1) + "\n"), (".md", markdown(doc))):
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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from runtime.artifact import default_artifact_dir

    try:
        systems = select(args.systems)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    paths = Paths(args.checkpoint.resolve(), (args.artifact or default_artifact_dir()).resolve(), args.cache.resolve())
    doc = summary.document(runner.run(systems, settings_of(args), paths))
    files = write(doc, args.out)
    print(markdown(doc))
    print("wrote " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
