"""The runtime never pulls in torch, transformers or optimum, even indirectly; an installed wheel works anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
HEAVY = {"torch", "transformers", "optimum", "sentence_transformers", "pyarrow", "ray", "pandas", "tqdm"}
def heavy():
    return sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
import runtime
vec = runtime.load().encode(["hello"])
after_encode = heavy()
import runtime.corpus  # corpus jobs import pyarrow and ray only when a job needs them
print(json.dumps({"shape": list(vec.shape), "heavy": after_encode, "corpus": heavy(), "runtime": runtime.__file__}))
"""
REPO = Path(__file__).resolve().parents[1]


CLEAN_ENV = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}


def _installed(cwd: Path) -> bool:
    """Whether ``import runtime`` works from an unrelated folder without any path to the checkout."""
    done = subprocess.run([sys.executable, "-c", "import runtime"], cwd=cwd, env=CLEAN_ENV, capture_output=True)
    return done.returncode == 0


def test_import_and_encode_leave_torch_out(tmp_path: Path) -> None:
    # From an unrelated folder, with no path to the checkout when the package is installed: then the default model
    # must come from the installed package itself.
    env = dict(CLEAN_ENV)
    if not _installed(tmp_path):
        env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 384]
    assert result["heavy"] == []
    assert result["corpus"] == []


def test_installed_wheel_ships_the_default_model(tmp_path: Path) -> None:
    if not _installed(tmp_path):
        import pytest

        pytest.skip("package not installed")
    done = subprocess.run(
        [sys.executable, "-c", "import runtime.artifact as a; print(a.default_artifact_dir())"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert (folder / "model.int8.onnx").is_file() and (folder / "manifest.json").is_file()
    assert not (folder / "model.fp32.onnx").exists() or folder.is_relative_to(REPO), "wheels carry int8 only"
