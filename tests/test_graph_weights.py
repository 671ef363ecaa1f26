"""tools/graph_weights.py: the fp16 checkpoint rebuilt from the fp16 graph is model.half(), bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.graph_weights import digest, main, rebuild, remainder, weights_from_graph


@pytest.fixture(scope="module")
def half(tiny_model_dir: Path) -> dict[str, np.ndarray]:
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    return {k: v.half().numpy() for k, v in load_file(str(tiny_model_dir / "model.safetensors")).items()}


def test_graph_holds_every_encoder_weight(half: dict[str, np.ndarray], tiny_artifact: Path) -> None:
    graph = tiny_artifact / "model.fp16.onnx"
    recovered = weights_from_graph(graph)
    assert set(half) - set(recovered) == {"pooler.dense.weight", "pooler.dense.bias"}  # unused by mean pooling
    extra = remainder(half, graph)
    assert set(extra) == {"pooler.dense.weight", "pooler.dense.bias"}, "every graph weight equals model.half()'s"
    assert digest(rebuild(graph, extra)) == digest(half)


def test_patches_restore_elements_the_converter_rounded_differently(
    half: dict[str, np.ndarray], tiny_artifact: Path, tmp_path: Path
) -> None:
    graph = tiny_artifact / "model.fp16.onnx"
    name = "encoder.layer.1.output.dense.weight"
    changed = {k: v.copy() for k, v in half.items()}
    changed[name].ravel()[[3, 7]] = np.float16(0.0)  # as torch rounds |w| < 6e-8, where onnx's converter clamps
    extra = remainder(changed, graph)
    assert extra[f"patch::{name}::index"].tolist() == [3, 7]
    from safetensors.numpy import save_file

    save_file(extra, str(tmp_path / "remainder.safetensors"))
    main(
        [
            str(graph),
            str(tmp_path / "remainder.safetensors"),
            str(tmp_path / "model.safetensors"),
            "--digest",
            digest(changed),
        ]
    )
    with pytest.raises(SystemExit, match="not the checkpoint's"):
        main(
            [
                str(graph),
                str(tmp_path / "remainder.safetensors"),
                str(tmp_path / "other.safetensors"),
                "--digest",
                digest(half),
            ]
        )
    assert not (tmp_path / "other.safetensors").exists()
