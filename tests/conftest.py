"""Shared fixtures: the shipped default artifact, and a tiny random model exported through the real pipeline."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import runtime
from export.data import read_sts

MISSING_DEPENDENCY = re.compile(r"could not import|No module named|\bextra\b")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With MINILM_FORBID_SKIPS=1 (CI's full environment, which installs the extras) a test skipped for a missing
    module or extra fails the run: a check that silently stops running is a failure there, not a footnote. Deliberate
    skips (no CUDA device, an opt-in environment variable) stay skips."""
    if os.environ.get("MINILM_FORBID_SKIPS") != "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    missing = [r for r in skipped if MISSING_DEPENDENCY.search(str(r.longrepr))]
    if missing:
        lines = "\n".join(
            f"  {r.nodeid}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}" for r in missing
        )
        print(f"\nMINILM_FORBID_SKIPS: {len(missing)} test(s) skipped for a missing dependency:\n{lines}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def default_dir() -> Path:
    return runtime.artifact.default_artifact_dir()


@pytest.fixture(scope="session")
def encoder() -> runtime.Encoder:
    """The shipped default model on the portable path (int8 on onnxruntime, CPU), loaded once. What backend="auto"
    picks depends on the CPU class (tests/test_openvino.py covers it)."""
    return runtime.load(provider="cpu", backend="onnxruntime")


@pytest.fixture()
def damaged(default_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the default artifact to break."""
    copy = tmp_path / "artifact"
    shutil.copytree(default_dir, copy, ignore=shutil.ignore_patterns("model.fp32.onnx", "model.fp16.onnx", "__*"))
    return copy


@pytest.fixture(scope="session")
def dev_pairs():
    return read_sts("dev")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from export.graph import load_sentence_transformer

    return load_sentence_transformer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model through the whole export (all three variants), with gates loose enough for random weights."""
    from export.pipeline import ExportOptions, run_export
    from export.validate import Gates

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    gates = Gates(int8_max_spearman_drop=1.0, fp16_min_cosine=0.99, fp16_max_spearman_drop=1.0)
    run_export(tiny_model_dir, out, ExportOptions(gates=gates, dev_pairs=read_sts("dev")[:100]))
    return out
