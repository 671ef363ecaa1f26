"""CTranslate2's ``Encoder``: the checkpoint's BERT converted with ``TransformersConverter``, token ids from the
checkpoint's own tokenizer, mean pooling over the attention mask and L2 normalisation done here on
``forward_batch``'s ``last_hidden_state`` (CTranslate2 returns token states only; pooling is the caller's).

CTranslate2 is, like this runtime, torch-free at inference: loading needs only ``ctranslate2`` and ``tokenizers``
(the conversion in :func:`prepare` needs transformers and torch). Its int8 is dynamic per token row: weights are
quantised per output channel at conversion, each activation row is quantised at run time (symmetric, shifted to
uint8) and multiplied by a u8s8 GEMM (oneDNN, or Intel MKL on GenuineIntel CPUs); attention and everything outside
the dense layers stay fp32. Compute type ``int8`` on a model with fp32 non-dense weights resolves to ``int8_float32``
(recorded in the notes): on a CPU the two are the same thing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.cache import cached, stamp
from benchmarks.config import Paths, Settings
from benchmarks.peers import Peer
from benchmarks.systems import System

FOLDER = "ctranslate2"
TOKENIZER_FILE = "tokenizer.json"
# system precision -> (the converter's weight quantisation, the folder it is saved in, the Encoder's compute_type)
VARIANTS = {"fp32": (None, "float32", "float32"), "int8": ("int8", "int8", "int8")}
TRANSFORMER_MODULE = "sentence_transformers.base.modules.transformer.Transformer"


def model_folder(paths: Paths) -> Path:
    """The converted models (``float32/`` and ``int8/``, each ``model.bin`` + ``config.json``) and the tokenizer."""
    return paths.cache / FOLDER


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """Convert (once per checkpoint) the checkpoint's transformer to CTranslate2, fp32 and int8 weights."""
    cached(model_folder(paths), paths.checkpoint, lambda tmp: _convert(paths.checkpoint, tmp))


def transformer_folder(checkpoint: Path) -> Path:
    """The folder of the checkpoint's Transformer module, after checking that its pipeline is Transformer ->
    mean pooling -> Normalize (what :func:`load` reimplements); anything else is refused, never embedded wrongly."""
    modules = json.loads((checkpoint / "modules.json").read_text(encoding="utf-8"))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(f"{checkpoint}: modules {kinds}, expected Transformer -> Pooling -> Normalize")
    pooling = json.loads((checkpoint / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    mode = pooling.get("pooling_mode")  # sentence-transformers 5.x; older checkpoints set one boolean per mode
    modes = (
        [mode]
        if isinstance(mode, str)
        else sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    )
    if modes not in (["mean"], ["pooling_mode_mean_tokens"]):
        raise ValueError(f"{checkpoint}: pooling {modes}, expected mean pooling only")
    return checkpoint / str(modules[0]["path"])


def _convert(checkpoint: Path, out: Path) -> dict[str, object]:
    import ctranslate2
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    folder = transformer_folder(checkpoint)
    max_seq_length = int(SentenceTransformer(str(checkpoint), device="cpu").max_seq_length)
    for quantization, name, _ in VARIANTS.values():
        converter = ctranslate2.converters.TransformersConverter(str(folder))
        converter.convert(str(out / name), quantization=quantization, force=True)
    # The checkpoint's tokenizer, truncating where sentence-transformers does, padding nothing (the batch is ragged).
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.save(str(out / TOKENIZER_FILE))
    hidden = json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    return {
        "ctranslate2": ctranslate2.__version__,
        "variants": {p: {"folder": name, "quantization": q} for p, (q, name, _) in VARIANTS.items()},
        "max_seq_length": max_seq_length,
        "hidden_size": hidden,
    }


def load(system: System, paths: Paths, threads: int) -> Peer:
    """``ctranslate2.Encoder`` with ``threads`` intra-op threads (one inter-op worker) and the converted tokenizer."""
    import ctranslate2
    from tokenizers import Tokenizer

    folder = model_folder(paths)
    record = stamp(folder)
    if record is None:
        raise RuntimeError(f"{folder} holds no converted model (run prepare first)")
    _, name, compute_type = VARIANTS[system.precision]
    with _ctranslate2_log() as log:
        encoder = ctranslate2.Encoder(
            str(folder / name), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
        )
    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    dimension = int(record["hidden_size"])

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first, as sentence-transformers does
        out = np.empty((len(ids), dimension), dtype=np.float32)
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            batch = [ids[i] for i in rows]
            hidden = np.asarray(encoder.forward_batch(batch).last_hidden_state)
            out[rows] = mean_pool_normalize(hidden, np.array([len(b) for b in batch]))
        return out

    notes = {
        "graph": f"{name}/model.bin",
        "max_seq_length": (tokenizer.truncation or {}).get("max_length"),
        "compute_type": encoder.compute_type,
        "intra_threads": threads,
        "ctranslate2_cpu": log,
    }
    return Peer(embed, (folder / name / "model.bin",), notes)


def mean_pool_normalize(hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean of each row's first ``lengths[i]`` token states of ``hidden`` (batch, tokens, dim), L2-normalised as
    sentence-transformers' Normalize does (norm floored at 1e-12)."""
    mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
    summed = np.einsum("btd,bt->bd", hidden, mask)
    mean = summed / lengths[:, None].astype(np.float32)
    norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return np.asarray(mean / norm, dtype=np.float32)


@contextmanager
def _ctranslate2_log() -> Iterator[dict[str, str]]:
    """What CTranslate2 logs at its first model load in a process: the CPU, the ISA of its own kernels, whether it
    uses Intel MKL, and its GEMM backends (int8 and fp32). The log goes to the process's stderr, so fd 2 is read back.
    """
    import ctranslate2

    facts: dict[str, str] = {}
    previous = ctranslate2.get_log_level()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        ctranslate2.set_log_level(logging.INFO)
        os.dup2(capture.fileno(), 2)
        try:
            yield facts
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            ctranslate2.set_log_level(previous)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
    facts.update(log_facts(text))


def log_facts(text: str) -> dict[str, str]:
    """``{"CPU": "AuthenticAMD (SSE4.1=true, ...)", "Selected ISA": "AVX2", "GEMM_S8 backend": "DNNL (...)", ...}``
    from CTranslate2's ``[info]`` log lines about the system (not those about the model)."""
    facts = {}
    for line in text.splitlines():
        _, marker, fact = line.partition("[info] ")
        key, colon, value = fact.strip(" -").partition(": ")
        if marker and colon and (key == "CPU" or key.endswith("backend") or key in ("Selected ISA", "Use Intel MKL")):
            facts[key] = value
    return facts
