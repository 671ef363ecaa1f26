"""The runtime's exceptions: each names the path or item at fault and what is wrong with it."""


class ArtifactError(ValueError):
    """A model artifact is missing, damaged, or does not match its manifest."""


class ProviderUnavailable(RuntimeError):
    """An explicitly requested execution provider cannot be used on this machine."""


class InstallWarning(RuntimeWarning):
    """The environment holds two onnxruntime builds (or both runtime distributions) that overwrite each other."""


class BackendUnavailable(ProviderUnavailable):
    """An explicitly requested inference backend (``backend="openvino"``) cannot be used: not installed, or it cannot
    run the requested device or graph."""
