"""One CLI corpus job in this process, its RSS recorded after each stage: ``python -m studies.corpus_memory SOURCE
OUT`` prints one JSON line. Run by ``python -m studies.corpus memory``; imports only the standard library and psutil
(which takes the readings, about 3 MiB) before its first mark, so that mark is the interpreter and the stages below
are what a job adds to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil

from benchmarks.procs import MIB, peak_rss_mib

MEMORY_STAGES = {
    "interpreter": "the Python interpreter (and psutil, which takes the readings)",
    "numpy": "import numpy",
    "onnxruntime": "import onnxruntime",
    "tokenizers": "import tokenizers",
    "runtime": "import runtime, runtime.corpus (hashlib, tqdm, ...)",
    "pyarrow": "import pyarrow, pyarrow.parquet",
    "model": "load the model: tokenizer, onnxruntime session of the int8 graph",
    "tokenised 1": "first window tokenised (2,048 texts)",
    "encoded 1": "first window encoded: onnxruntime's arena for 1,024-token runs",
    "written 1": "first window written: Parquet writer, pyarrow modules it loads",
    "job done": "the other windows and shards, until the job returns",
}


def child_memory(source: Path, out: Path) -> dict[str, Any]:
    """The CLI's encode job in this process, with its memory (``readings``) recorded after each stage of
    MEMORY_STAGES (imports done eagerly, in the order a job needs them; pyarrow's pool comes from the environment)."""
    marks: list[dict[str, Any]] = []

    def mark(stage: str) -> None:
        marks.append({"stage": stage, **{k: round(v, 1) for k, v in readings().items()}})

    mark("interpreter")
    import numpy  # noqa: F401

    mark("numpy")
    import onnxruntime  # noqa: F401

    mark("onnxruntime")
    import tokenizers  # noqa: F401

    mark("tokenizers")
    import runtime.__main__ as cli
    import runtime.corpus
    from runtime.corpus import outputs
    from runtime.encoder import Encoder

    mark("runtime")
    import pyarrow
    import pyarrow.parquet

    mark("pyarrow")
    # the job's own steps, marked by wrapping the function or method each one ends in
    calls = {"model": 0, "tokenised": 0, "encoded": 0, "written": 0}
    load, encodings, encode, write = runtime.load, Encoder._encodings, Encoder.encode, outputs.ShardWriter.write

    def once(name: str) -> None:
        calls[name] += 1
        if calls[name] == 1:
            mark(name if name == "model" else f"{name} 1")

    def load_(*a: Any, **k: Any) -> Any:
        found = load(*a, **k)
        once("model")
        return found

    def encodings_(self: Any, texts: Any) -> Any:
        found = encodings(self, texts)
        once("tokenised")
        return found

    def encode_(self: Any, texts: Any, **k: Any) -> Any:
        found = encode(self, texts, **k)
        once("encoded")
        return found

    def write_(self: Any, rows: Any, vectors: Any) -> None:
        write(self, rows, vectors)
        once("written")

    runtime.load = load_  # type: ignore[assignment]
    Encoder._encodings, Encoder.encode, outputs.ShardWriter.write = encodings_, encode_, write_  # type: ignore[method-assign]
    cli.main(["encode", str(source), "-o", f"{out}/", "--provider", "cpu", "-q"])
    mark("job done")
    texts = sum(1 for _ in source.open(encoding="utf-8"))
    return {
        "texts": texts,
        "stages": marks,
        "peak_rss_mib": marks[-1]["VmHWM"],
        "arrow_pool": pyarrow.default_memory_pool().backend_name,
    }


def readings() -> dict[str, float]:
    """This process's memory in MiB, named as /proc/self/status names it (Linux): VmRSS resident now, VmHWM its peak,
    RssFile the resident file-backed and shared pages (the libraries; psutil's ``shared``), RssAnon the rest."""
    now = psutil.Process().memory_info()
    return {
        "VmRSS": now.rss / MIB,
        "VmHWM": peak_rss_mib(),
        "RssAnon": (now.rss - now.shared) / MIB,
        "RssFile": now.shared / MIB,
    }


if __name__ == "__main__":
    print(json.dumps(child_memory(Path(sys.argv[1]), Path(sys.argv[2]))))
