"""The CTranslate2 benchmark peer embeds what sentence-transformers embeds: on the tiny random BERT, its vectors match
the PyTorch model's text by text (fp32 to float error, int8 within its quantisation error)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.config import QUICK, Paths
from export.data import dev_sentences

pytest.importorskip("ctranslate2", reason="the CTranslate2 peer needs the bench extra")

REPO = Path(__file__).resolve().parents[1]

# Mixed lengths in every batch (so padding must be masked out), and one passage past the 256-token window (so the
# peer must truncate where sentence-transformers does).
LONG = " ".join(["a man is playing a guitar on a stage in front of a large crowd"] * 30)
TEXTS = [*dev_sentences()[:40], LONG, "hi"]


@pytest.fixture(scope="module")
def converted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    from benchmarks.peers import ctranslate2_encoder
    from benchmarks.systems import BY_NAME

    paths = Paths(tiny_model_dir, tiny_model_dir, tmp_path_factory.mktemp("ct2-cache"))
    ctranslate2_encoder.prepare(BY_NAME["ctranslate2-int8"], paths, QUICK)
    return paths


@pytest.fixture(scope="module")
def pytorch_vectors(tiny_model_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    return np.asarray(model.encode(TEXTS, batch_size=8, convert_to_numpy=True), dtype=np.float32)


def test_fp32_vectors_equal_sentence_transformers(converted: Paths, pytorch_vectors: np.ndarray) -> None:
    """Fails if pooling averages padding, normalisation is left out, ids are shifted, truncation differs from
    sentence-transformers', or rows come back in the length-sorted order instead of the caller's."""
    from benchmarks.peers import ctranslate2_encoder
    from benchmarks.systems import BY_NAME

    peer = ctranslate2_encoder.load(BY_NAME["ctranslate2-fp32"], converted, threads=2)
    vectors = peer.embed(TEXTS, 8)
    assert vectors.shape == pytorch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, pytorch_vectors, atol=2e-5)
    assert peer.notes["compute_type"] == "float32" and peer.notes["max_seq_length"] == 256
    assert peer.model_files == (ctranslate2_encoder.model_folder(converted) / "float32" / "model.bin",)


def test_int8_vectors_stay_within_quantisation_error(converted: Paths, pytorch_vectors: np.ndarray) -> None:
    """int8 per-row quantisation moves the tiny model's vectors by ~1e-5 in cosine and ~2e-3 per dimension; the
    bugs above move them by 0.02-0.5 in cosine or ~1 per dimension (measured on this model)."""
    from benchmarks.peers import ctranslate2_encoder
    from benchmarks.systems import BY_NAME

    peer = ctranslate2_encoder.load(BY_NAME["ctranslate2-int8"], converted, threads=2)
    vectors = peer.embed(TEXTS, 8)
    cosines = np.sum(vectors.astype(np.float64) * pytorch_vectors, axis=1)
    assert cosines.min() >= 0.9995, cosines.min()
    assert np.abs(vectors - pytorch_vectors).max() <= 0.01
    assert not np.array_equal(
        vectors, ctranslate2_encoder.load(BY_NAME["ctranslate2-fp32"], converted, 2).embed(TEXTS, 8)
    )
    # "int8" on a CPU is CTranslate2's int8 weights with fp32 everything else; its int8 weights are on disk.
    assert peer.notes["compute_type"] == "int8_float32"
    folder = ctranslate2_encoder.model_folder(converted)
    assert (folder / "int8" / "model.bin").stat().st_size < 0.7 * (folder / "float32" / "model.bin").stat().st_size


def test_checkpoints_pooled_otherwise_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The peer reimplements mean pooling + Normalize, so a checkpoint built otherwise must not be converted."""
    from benchmarks.peers.ctranslate2_encoder import transformer_folder

    assert transformer_folder(tiny_model_dir) == tiny_model_dir
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    pooling = copy / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode": "cls"}))
    with pytest.raises(ValueError, match="pooling"):
        transformer_folder(copy)
    modules = json.loads((tiny_model_dir / "modules.json").read_text())
    (copy / "modules.json").write_text(json.dumps(modules[:2]))
    with pytest.raises(ValueError, match="Transformer -> Pooling -> Normalize"):
        transformer_folder(copy)


def test_serving_loads_no_torch_and_records_the_gemm_backends(converted: Paths) -> None:
    """In a fresh process (CTranslate2 logs its CPU facts once per process): the loaded peer imports neither torch
    nor transformers, and its notes hold the backends CTranslate2 chose, read from its own log."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from benchmarks.config import Paths\n"
        "from benchmarks.peers import ctranslate2_encoder\n"
        "from benchmarks.systems import BY_NAME\n"
        f"paths = Paths.from_dict({json.dumps(converted.as_dict())})\n"
        "peer = ctranslate2_encoder.load(BY_NAME['ctranslate2-int8'], paths, 1)\n"
        "peer.embed(['a man is playing a guitar.'], 1)\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps({'notes': peer.notes, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["heavy"] == []
    facts = found["notes"]["ctranslate2_cpu"]
    assert {"CPU", "Selected ISA", "Use Intel MKL", "SGEMM backend", "GEMM_S8 backend"} <= set(facts), facts
    assert facts["GEMM_S8 backend"].split(" ")[0] in ("MKL", "DNNL"), facts
    assert done.stderr.count("[info]") == 0, "the captured log does not leak to stderr"
