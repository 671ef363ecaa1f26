"""One CLI corpus job in this process, its RSS recorded after each stage: ``python -m studies.corpus_memory SOURCE
OUT`` prints one JSON line. Run by ``python -m studies.corpus memory``; imports only the standard library before its
first mark, so the stages below are what a job adds to a bare interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MEMORY_STAGES = {
    "interpreter": "the Python interpreter",
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
    """The CLI's encode job in this process, with VmRSS/VmHWM recorded after each stage of MEMORY_STAGES
    (imports done eagerly, in the order a job needs them; pyarrow's pool comes from the environment)."""
    marks: list[dict[str, Any]] = []

    def mark(stage: str) -> None:
        fields = {k: proc_status_mib(k) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
        marks.append({"stage": stage, **{k: round(v, 1) for k, v in fields.items()}})

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


def proc_status_mib(key: str) -> float:
    """A /proc/self/status memory field in MiB (VmRSS: now, VmHWM: peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


if __name__ == "__main__":
    print(json.dumps(child_memory(Path(sys.argv[1]), Path(sys.argv[2]))))
