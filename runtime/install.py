"""Is the installed onnxruntime sound? Two of its builds in one environment clash; say exactly how to fix it.

onnxruntime, onnxruntime-gpu and the other builds all install the same ``onnxruntime/`` package folder, and pip
lets them sit side by side (onnxruntime-gpu >= 1.20 no longer declares that it provides onnxruntime). Installed into
the same site-packages they overwrite each other's files: the CUDA provider silently disappears, or ``import
onnxruntime`` breaks (microsoft/onnxruntime#26996, qdrant/fastembed#608). The same holds for this project's two
distributions, ``minilm-stsb-onnx`` (CPU) and ``minilm-stsb-onnx-gpu`` (CUDA), which both install ``runtime/``.
``import runtime`` calls :func:`warn_on_clash` before anything imports onnxruntime.
"""

from __future__ import annotations

import importlib.metadata
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InstallWarning

# Distributions that install the `onnxruntime` package (PyPI names).
ONNXRUNTIME_BUILDS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
    "ort-nightly",
    "ort-nightly-gpu",
)
CPU_DISTRIBUTION = "minilm-stsb-onnx"
GPU_DISTRIBUTION = "minilm-stsb-onnx-gpu"
GPU_INSTALL_HINT = f"pip install {GPU_DISTRIBUTION} (from a checkout of this project: pip install ./gpu)"
OPENVINO_INSTALL = f"pip install '{CPU_DISTRIBUTION}[openvino]'"


@dataclass(frozen=True)
class Installed:
    """One installed distribution and the folder (site-packages) that holds its metadata."""

    name: str
    version: str
    location: Path


def installed(names: Sequence[str], path: Sequence[str] | None = None) -> list[Installed]:
    """The distributions among ``names`` installed on ``path`` (default ``sys.path``), each folder once."""
    found: dict[tuple[str, Path], Installed] = {}
    for name in names:
        search = {"name": name} if path is None else {"name": name, "path": list(path)}
        for dist in importlib.metadata.distributions(**search):
            location = Path(str(dist.locate_file(""))).resolve()
            found.setdefault((name, location), Installed(name, dist.version, location))
    return list(found.values())


def clashes(path: Sequence[str] | None = None) -> list[str]:
    """One message per clash (two onnxruntime builds, or both runtime distributions, in one folder); [] if sound."""
    dists = installed((*ONNXRUNTIME_BUILDS, CPU_DISTRIBUTION, GPU_DISTRIBUTION), path)
    wants_gpu = any(d.name == GPU_DISTRIBUTION for d in dists)
    messages = []
    for location in sorted({d.location for d in dists}):
        here = [d for d in dists if d.location == location]
        builds = [d for d in here if d.name in ONNXRUNTIME_BUILDS]
        if len(builds) > 1:
            messages.append(_builds_message(builds, location, wants_gpu))
        ours = [d for d in here if d.name in (CPU_DISTRIBUTION, GPU_DISTRIBUTION)]
        if len(ours) > 1:
            messages.append(_runtime_message(location))
    return messages


def warn_on_clash() -> None:
    """Emit an :class:`InstallWarning` naming the fix when the environment holds a clash."""
    messages = clashes()
    if messages:
        warnings.warn("\n\n".join(messages), InstallWarning, stacklevel=2)


def _pip() -> str:
    return f"{sys.executable} -m pip"


def _builds_message(builds: list[Installed], location: Path, wants_gpu: bool) -> str:
    names = ", ".join(f"{d.name} {d.version}" for d in builds)
    preferred = "onnxruntime-gpu" if wants_gpu else "onnxruntime"
    keep_order = sorted(builds, key=lambda d: (d.name != preferred, d.name))
    lines = [
        f"{names} are installed in the same folder {location}. They share its onnxruntime/ folder, so each "
        "overwrote the other's files: the CUDA provider may be missing or `import onnxruntime` broken. Keep one:",
    ]
    for keep in keep_order:
        drop = " ".join(d.name for d in builds if d is not keep)
        label = "CUDA" if keep.name == "onnxruntime-gpu" else "CPU" if keep.name == "onnxruntime" else keep.name
        lines.append(
            f"  {label}: {_pip()} uninstall -y {drop} && "
            f"{_pip()} install --force-reinstall --no-deps {keep.name}=={keep.version}"
        )
    lines.append(
        f"Then keep any package that depends on another onnxruntime build out of this environment; this runtime "
        f"installs as {CPU_DISTRIBUTION} (onnxruntime) or {GPU_DISTRIBUTION} (onnxruntime-gpu)."
    )
    return "\n".join(lines)


def _runtime_message(location: Path) -> str:
    return (
        f"{CPU_DISTRIBUTION} and {GPU_DISTRIBUTION} are both installed in {location}; both install the package "
        f"runtime/, so removing one later deletes the other's files. Keep one: {_pip()} uninstall -y "
        f"{CPU_DISTRIBUTION} {GPU_DISTRIBUTION}, then install {GPU_DISTRIBUTION} (CUDA) or {CPU_DISTRIBUTION} (CPU) "
        "again (from a checkout of this project: pip install ./gpu, or pip install .)."
    )
