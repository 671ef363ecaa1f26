"""Torch-free runtime for all-MiniLM-L6-v2 fine-tuned on STS-B: ``runtime.load().encode(texts)``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TypeVar

from runtime import install
from runtime.errors import ArtifactError, BackendUnavailable, InstallWarning, ProviderUnavailable

# Before anything imports onnxruntime (runtime.backends and runtime.encoder do): two of its builds in one folder can
# make that import fail.
install.warn_on_clash()
try:
    from runtime.artifact import Manifest, Precision, default_artifact_dir
    from runtime.backends import Backend
    from runtime.encoder import Encoder
    from runtime.session import Provider, available_providers
except ImportError as err:
    _clashes = install.clashes()
    if _clashes:
        raise ImportError(f"{err}\n\nconflicting installs in this environment:\n" + "\n\n".join(_clashes)) from err
    raise

__all__ = [
    "ArtifactError",
    "Backend",
    "BackendUnavailable",
    "Encoder",
    "InstallWarning",
    "Manifest",
    "Precision",
    "Provider",
    "ProviderUnavailable",
    "available_providers",
    "load",
]

E = TypeVar("E", bound=Enum)


def load(
    path: str | Path | None = None,
    provider: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> Encoder:
    """Load an artifact folder (default: the shipped int8 model) and return its Encoder.

    ``provider``: "auto" (CUDA when onnxruntime offers it and the artifact has an fp16/fp32 graph, else CPU), "cpu"
    or "cuda" (raises ProviderUnavailable if it cannot be honoured). ``precision``: "int8", "fp32", "fp16" or None
    for the device's best present graph. ``threads``: intra-op threads (None: one per physical core the process may
    run on, onnxruntime's default on an unrestricted machine). ``backend``: "onnxruntime" (the exact, portable path:
    the same vectors on every CPU), "openvino" (needs the ``openvino`` extra; CPU only; raises BackendUnavailable
    without it) or "auto": per text by its token count, OpenVINO from the length measured faster on this CPU class
    (``runtime.backends.AUTO_OPENVINO_FROM``) when openvino is installed, else onnxruntime (``Encoder.rule`` says
    which engine embeds which texts, ``Encoder.info`` why).
    """
    folder = default_artifact_dir() if path is None else Path(path)
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return Encoder(
        folder,
        _choice(Provider, provider, "provider"),
        _precision(precision),
        threads,
        _choice(Backend, backend, "backend"),
    )


def _choice(enum: type[E], value: str, name: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {[e.value for e in enum]}, got {value!r}") from None


def _precision(value: str | None) -> Precision | None:
    if value is None:
        return None
    try:
        return Precision(value)
    except ValueError:
        raise ValueError(f"precision must be one of {[p.value for p in Precision]} or None, got {value!r}") from None
