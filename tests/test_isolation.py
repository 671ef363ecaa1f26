"""The runtime never pulls in torch, transformers or optimum (nor the server stack), even indirectly; an installed
wheel works anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest

import runtime

PROBE = """
import json, sys
HEAVY = {"torch", "transformers", "optimum", "sentence_transformers", "pyarrow", "ray", "pandas", "tqdm"}
def heavy():
    return sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
import runtime
vec = runtime.load().encode(["hello"])
after_encode = heavy()
SERVER = {"uvicorn", "starlette", "prometheus_client", "orjson", "httpx", "aiohttp"}
server = sorted(m for m in sys.modules if m.split(".")[0] in SERVER or m.startswith("runtime.server"))
import runtime.corpus  # corpus jobs import pyarrow and ray only when a job needs them
print(json.dumps({"shape": list(vec.shape), "heavy": after_encode, "corpus": heavy(), "server": server,
                  "runtime": runtime.__file__}))
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
    assert result["server"] == [], "import runtime must not load the HTTP server stack (the 'serve' extra)"
    assert result["corpus"] == []


OPENVINO_PROBE = """
import json, sys
import runtime
after_import = "openvino" in sys.modules
runtime.load(backend="onnxruntime").encode(["hello"])
print(json.dumps({"import": after_import, "onnxruntime_backend": "openvino" in sys.modules}))
"""


def test_openvino_is_imported_only_when_its_backend_is_built(tmp_path: Path) -> None:
    """``import runtime`` and the onnxruntime backend leave openvino (the optional extra) unimported."""
    env = dict(CLEAN_ENV)
    if not _installed(tmp_path):
        env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", OPENVINO_PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"import": False, "onnxruntime_backend": False}


DISTRIBUTION = "minilm-stsb-onnx"
MODEL = "runtime/artifacts/minilm-l6-stsb"


def test_tests_import_the_installed_runtime(tmp_path: Path) -> None:
    """The runtime these tests import is the one a user's interpreter imports: the wheel's in CI's runtime-only
    environment (not the checkout, which pytest or ``python -m`` could put first on sys.path), the source tree in an
    editable one."""
    if not _installed(tmp_path):
        pytest.skip(f"{DISTRIBUTION} is not installed in this environment")
    done = subprocess.run(
        [sys.executable, "-c", "import runtime; print(runtime.__file__)"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(runtime.__file__).resolve() == Path(done.stdout.strip()).resolve()


def _installed_distribution() -> Distribution | None:
    """The distribution pip installed into this interpreter's site-packages (not a ``*.egg-info`` that an editable
    install leaves in the checkout, which importlib.metadata would find first when the checkout is on sys.path)."""
    site = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    found = [d for d in distributions(path=sorted(site)) if d.metadata["Name"] == DISTRIBUTION]
    return found[0] if found else None


def _wheel_files(dist: Distribution, tmp_path: Path) -> list[str]:
    """The files the wheel installs: the installed wheel's RECORD, or (editable installs) the contents of a wheel
    built from a clean copy of this checkout (a source tree's stale build/lib would otherwise leak into it)."""
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct_url.get("dir_info", {}).get("editable"):
        return [str(f) for f in dist.files or []]
    scratch = ("build", "dist", ".git", ".venv*", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*scratch))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_the_runtime_and_the_int8_model_only(tmp_path: Path) -> None:
    dist = _installed_distribution()
    if dist is None:
        pytest.skip(f"{DISTRIBUTION} is not installed in this environment")
    files = [f for f in _wheel_files(dist, tmp_path) if ".dist-info/" not in f and "__pycache__" not in f]
    packages = {f.split("/")[0] for f in files if "/" in f}
    assert packages == {"runtime"}, f"the wheel ships {sorted(packages)}: export/ needs data/ and the build extras"
    assert {f"{MODEL}/{name}" for name in ("manifest.json", "tokenizer.json", "model.int8.onnx")} <= set(files)
    assert not [f for f in files if f.endswith((".fp32.onnx", ".fp16.onnx"))], "wheels carry the int8 graph only"
    assert {"runtime/__init__.py", "runtime/py.typed"} <= set(files)
