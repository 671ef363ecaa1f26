"""The install story: CPU (minilm-stsb-onnx) and CUDA (minilm-stsb-onnx-gpu) distributions from one tree, never both
onnxruntime builds at once, and an environment where they clash is named at import with the exact fix.

The tests marked ``gpu_distribution`` run only where minilm-stsb-onnx-gpu is installed (CI builds that environment
from scratch: .ci/run); the rest run everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from runtime import install
from runtime.artifact import FileEntry, Precision, Variant, read_manifest

REPO = Path(__file__).resolve().parents[1]


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


gpu_distribution = pytest.mark.skipif(
    not _installed(install.GPU_DISTRIBUTION), reason=f"{install.GPU_DISTRIBUTION} not installed (CI's GPU env)"
)


def fake_dist(folder: Path, name: str, version: str) -> None:
    """The metadata pip leaves for an installed distribution (no code): enough for importlib.metadata."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def run_python(code: str, cwd: Path, pythonpath: list[Path] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# --- the two pyproject files stay one product -------------------------------------------------------------------


CPU_ONLY_EXTRAS = {"export", "bench"}  # torch, optimum and fastembed pull the CPU onnxruntime
GPU_ONLY_EXTRAS = {"cuda"}


def _package_dir(tool: dict, package: str) -> str:
    """Where setuptools takes ``package`` from: its own package-dir entry, else its parent's plus its name."""
    mapping = tool.get("package-dir", {})
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        parent = ".".join(parts[:cut])
        if parent in mapping:
            return "/".join([mapping[parent], *parts[cut:]])
    return "/".join(parts)


def test_gpu_distribution_is_the_cpu_one_on_onnxruntime_gpu() -> None:
    tomllib = pytest.importorskip("tomllib")
    cpu = tomllib.loads((REPO / "pyproject.toml").read_text())
    gpu = tomllib.loads((REPO / "gpu" / "pyproject.toml").read_text())
    assert gpu["build-system"] == cpu["build-system"]
    c, g = cpu["project"], gpu["project"]
    assert (c["name"], g["name"]) == (install.CPU_DISTRIBUTION, install.GPU_DISTRIBUTION)
    assert g["version"] == c["version"] and g["requires-python"] == c["requires-python"]

    def on_gpu(requirement: str) -> str:
        requirement = re.sub(r"^onnxruntime(?=[<>=~ ;\[]|$)", "onnxruntime-gpu", requirement)
        return requirement.replace(f"{install.CPU_DISTRIBUTION}[", f"{install.GPU_DISTRIBUTION}[")

    assert g["dependencies"] == [on_gpu(d) for d in c["dependencies"]]
    extras, gpu_extras = c["optional-dependencies"], g["optional-dependencies"]
    assert "gpu" not in extras, "a gpu extra keeps onnxruntime beside onnxruntime-gpu"
    assert set(gpu_extras) == (set(extras) - CPU_ONLY_EXTRAS) | GPU_ONLY_EXTRAS
    for name in set(extras) - CPU_ONLY_EXTRAS:
        assert gpu_extras[name] == [on_gpu(d) for d in extras[name]], f"extra {name!r} differs"
    for requirement in (d for e in gpu_extras.values() for d in e):
        assert not re.match(rf"(onnxruntime|{install.CPU_DISTRIBUTION})([<>=~ ;\[]|$)", requirement), requirement
    # the same runtime files: every package from the folder the CPU build takes it from, one level up
    c_tool, g_tool = cpu["tool"]["setuptools"], gpu["tool"]["setuptools"]
    assert set(g_tool["packages"]) == {p for p in c_tool["packages"] if p.split(".")[0] == "runtime"}
    for package in g_tool["packages"]:
        assert _package_dir(g_tool, package) == "../" + _package_dir(c_tool, package), package
    assert {k: v for k, v in c_tool["package-data"].items() if k in g_tool["packages"]} == g_tool["package-data"]


# --- clash detection on fake installs ----------------------------------------------------------------------------


def test_two_onnxruntime_builds_in_one_folder_name_the_exact_fix(tmp_path: Path) -> None:
    fake_dist(tmp_path, "onnxruntime", "1.32.0")
    fake_dist(tmp_path, "onnxruntime-gpu", "1.31.1")
    fake_dist(tmp_path, install.GPU_DISTRIBUTION, "0.1.0")
    (message,) = install.clashes([str(tmp_path)])
    pip = f"{sys.executable} -m pip"
    cuda = f"CUDA: {pip} uninstall -y onnxruntime && {pip} install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"
    cpu = f"CPU: {pip} uninstall -y onnxruntime-gpu && {pip} install --force-reinstall --no-deps onnxruntime==1.32.0"
    assert str(tmp_path.resolve()) in message
    lines = [line.strip() for line in message.splitlines()]
    assert lines.index(cuda) < lines.index(cpu), "the GPU distribution is installed: the CUDA fix comes first"


def test_cpu_distribution_puts_the_cpu_fix_first(tmp_path: Path) -> None:
    fake_dist(tmp_path, "onnxruntime-gpu", "1.31.1")
    fake_dist(tmp_path, "onnxruntime", "1.32.0")
    fake_dist(tmp_path, install.CPU_DISTRIBUTION, "0.1.0")
    (message,) = install.clashes([str(tmp_path)])
    lines = [line.strip() for line in message.splitlines()]
    first = next(line for line in lines if line.startswith(("CPU:", "CUDA:")))
    assert first.startswith("CPU:")


def test_both_runtime_distributions_in_one_folder_clash(tmp_path: Path) -> None:
    fake_dist(tmp_path, install.CPU_DISTRIBUTION, "0.1.0")
    fake_dist(tmp_path, install.GPU_DISTRIBUTION, "0.1.0")
    (message,) = install.clashes([str(tmp_path)])
    assert f"uninstall -y {install.CPU_DISTRIBUTION} {install.GPU_DISTRIBUTION}" in message


@pytest.mark.parametrize("layout", ["one build", "builds in separate folders"])
def test_sound_installs_report_nothing(tmp_path: Path, layout: str) -> None:
    fake_dist(tmp_path / "a", "onnxruntime-gpu", "1.31.1")
    if layout == "builds in separate folders":  # e.g. pip install --target: the first on sys.path wins, no overwrite
        fake_dist(tmp_path / "b", "onnxruntime", "1.32.0")
    assert install.clashes([str(tmp_path / "a"), str(tmp_path / "b")]) == []


def test_import_warns_with_the_fix(tmp_path: Path) -> None:
    fake_dist(tmp_path / "site", "onnxruntime", "1.32.0")
    fake_dist(tmp_path / "site", "onnxruntime-gpu", "1.31.1")
    done = run_python("import runtime", tmp_path, [tmp_path / "site", REPO])
    assert done.returncode == 0, done.stderr
    assert "InstallWarning" in done.stderr
    assert "install --force-reinstall --no-deps onnxruntime-gpu==1.31.1" in done.stderr


def test_broken_onnxruntime_import_names_the_clash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_dist(site, "onnxruntime", "1.32.0")
    fake_dist(site, "onnxruntime-gpu", "1.31.1")
    (site / "onnxruntime").mkdir()
    (site / "onnxruntime" / "__init__.py").write_text("raise ImportError('undefined symbol: OrtGetApiBase')\n")
    done = run_python("import runtime", tmp_path, [site, REPO])
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()
    assert any("undefined symbol" in line for line in last)
    assert "conflicting installs in this environment" in done.stderr
    assert "install --force-reinstall --no-deps onnxruntime==1.32.0" in done.stderr


def test_sound_environment_imports_without_warning(tmp_path: Path) -> None:
    done = run_python("import warnings; warnings.simplefilter('error'); import runtime", tmp_path, [REPO])
    assert done.returncode == 0, done.stderr


# --- the CUDA distribution, as CI installs it from scratch --------------------------------------------------------


GPU_PROBE = """
import importlib.metadata, json, warnings
warnings.simplefilter("error")  # an install clash would raise here
import onnxruntime, runtime
out = {"providers": onnxruntime.get_available_providers(), "runtime": runtime.__file__}
out["installed"] = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
out["requires"] = importlib.metadata.requires(runtime.install.GPU_DISTRIBUTION)
enc = runtime.load(provider="auto")
out["auto"] = [enc.device, enc.precision.value]
v = enc.encode(["A man is playing a guitar.", "A man plays the guitar.", "The stock market fell."])
sim = enc.similarity(v, v)
out["sim"] = [float(sim[0, 1]), float(sim[0, 2])]
try:
    runtime.load(provider="cuda")
    out["cuda"] = "loaded"
except runtime.ProviderUnavailable as err:
    out["cuda"] = str(err)
print(json.dumps(out))
"""


@gpu_distribution
def test_gpu_distribution_lists_cuda_and_still_runs_on_the_cpu(tmp_path: Path) -> None:
    done = run_python(GPU_PROBE, tmp_path)  # from an unrelated folder: the installed wheel, not the checkout
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "site-packages" in out["runtime"] and not out["runtime"].startswith(str(REPO / "runtime"))
    assert "onnxruntime-gpu" in out["installed"] and install.GPU_DISTRIBUTION in out["installed"]
    assert "onnxruntime" not in out["installed"], "the CPU onnxruntime must not be installed beside onnxruntime-gpu"
    assert install.CPU_DISTRIBUTION not in out["installed"]
    names = {re.split(r"[\s<>=~!;\[]", r, maxsplit=1)[0] for r in out["requires"] if "extra ==" not in r}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    assert "CUDAExecutionProvider" in out["providers"]
    assert out["auto"] == ["cpu", "int8"], "the shipped model is int8 only: auto runs it on the CPU"
    assert out["sim"][0] > 0.8 > out["sim"][1]
    if runtime.session.cuda_driver_problem() is None:
        pytest.skip("this machine has a CUDA device: the refusal below is for machines without one")
    assert out["cuda"].startswith("provider='cuda' cannot be used: no NVIDIA driver"), out["cuda"]


def _gpu_capable_artifact(folder: Path) -> Path:
    """The default artifact plus a 'fp16' graph (a copy of the int8 one): a model that provider='auto' would run on
    CUDA. What the graph computes does not matter here, only that onnxruntime is asked for a CUDA session."""
    source = runtime.artifact.default_artifact_dir()
    manifest = read_manifest(source)
    folder.mkdir()
    for name in ("tokenizer.json", "model.int8.onnx"):
        shutil.copy(source / name, folder / name)
    shutil.copy(source / "model.int8.onnx", folder / "model.fp16.onnx")
    variants = {
        Precision.INT8: manifest.variants[Precision.INT8],
        Precision.FP16: Variant(Precision.FP16, FileEntry.of(folder / "model.fp16.onnx")),
    }
    dataclasses.replace(manifest, variants=variants).write(folder)
    return folder


FALLBACK_PROBE = """
import json, logging, sys
import runtime, runtime.session
runtime.session.cuda_driver_problem = lambda: None  # as on a machine with a driver and a device but no CUDA libraries
logging.basicConfig(level=logging.WARNING)
out = {}
try:
    runtime.load(sys.argv[1], provider="cuda")
    out["cuda"] = "loaded"
except runtime.ProviderUnavailable as err:
    out["cuda"] = str(err)
enc = runtime.load(sys.argv[1], provider="auto")
out["auto"] = [enc.device, enc.precision.value]
print(json.dumps(out))
"""


@gpu_distribution
def test_cuda_session_that_falls_back_to_cpu_is_refused(tmp_path: Path) -> None:
    if runtime.session.cuda_driver_problem() is None:
        pytest.skip("this machine has a CUDA device: its session would not fall back")
    artifact = _gpu_capable_artifact(tmp_path / "artifact")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_PROBE, str(artifact)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "could not create its CUDA provider" in out["cuda"] and "[cuda]" in out["cuda"], out["cuda"]
    assert out["auto"] == ["cpu", "int8"]
    assert "provider='auto' uses the CPU" in done.stderr


@gpu_distribution
@pytest.mark.skipif(os.environ.get("MINILM_CI_MUTATE_GPU_ENV") != "1", reason="installs onnxruntime into this env")
def test_real_clash_is_reported_and_its_printed_fix_works(tmp_path: Path) -> None:
    """What another package's `onnxruntime` requirement does to a CUDA environment, and the fix the warning prints."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "onnxruntime"]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    done = run_python("import runtime", tmp_path)
    assert "InstallWarning" in done.stderr, done.stderr
    fix = next(line.strip()[len("CUDA: ") :] for line in done.stderr.splitlines() if line.strip().startswith("CUDA: "))
    subprocess.run(fix, shell=True, check=True, capture_output=True, timeout=600)
    done = run_python(GPU_PROBE, tmp_path)
    assert done.returncode == 0, done.stderr  # warnings are errors in the probe: the clash is gone
    assert "CUDAExecutionProvider" in json.loads(done.stdout.strip().splitlines()[-1])["providers"]
    assert not _installed("onnxruntime")
