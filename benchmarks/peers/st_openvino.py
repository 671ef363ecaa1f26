"""sentence-transformers ``backend="openvino"``: its fp32 export, and a static int8 model from optimum-intel's
OVQuantizer calibrated on STS-B train sentences (sentence-transformers' own helper would download GLUE).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cache import cached
from benchmarks.config import Paths, Settings
from benchmarks.peers import Peer
from benchmarks.systems import System
from benchmarks.workloads import calibration_sentences

FOLDER = "st-openvino"
FP32_FILE = "openvino_model.xml"
INT8_FILE = "openvino_model_qint8_quantized.xml"


def model_folder(paths: Paths) -> Path:
    """The checkpoint saved with ``openvino/openvino_model.xml`` and the int8 ``openvino_model_qint8_quantized.xml``."""
    return paths.cache / FOLDER


def prepare(system: System, paths: Paths, settings: Settings) -> None:
    """Export (once per checkpoint) the fp32 IR and its calibrated int8 twin."""
    cached(model_folder(paths), paths.checkpoint, lambda tmp: _export(paths.checkpoint, tmp, settings))


def _export(checkpoint: Path, out: Path, settings: Settings) -> dict[str, object]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(checkpoint), device="cpu", backend="openvino")
    model.save(str(out))
    count = _quantize_static(model, out / "openvino", settings.calibration_sentences)
    return {"fp32": f"openvino/{FP32_FILE}", "int8": f"openvino/{INT8_FILE}", "calibration_sentences": count}


def _quantize_static(model: Any, folder: Path, count: int) -> int:
    """Post-training static int8 (weights and activations) with ``count`` STS-B train sentences as calibration."""
    import nncf
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

    texts = calibration_sentences(count)
    inputs = [dict(model.tokenizer([t], return_tensors="np")) for t in texts]
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(inputs)))
    tmp = folder / "int8.tmp"
    OVQuantizer.from_pretrained(model.transformers_model).quantize(
        calibration_dataset=nncf.Dataset(inputs), save_directory=str(tmp), ov_config=config
    )
    for suffix in (".xml", ".bin"):  # the model's save hook puts the IR in an openvino/ subfolder
        shutil.move(tmp / "openvino" / f"openvino_model{suffix}", folder / INT8_FILE.replace(".xml", suffix))
    shutil.rmtree(tmp)
    return len(inputs)


def ov_config(system: System, threads: int) -> dict[str, object]:
    """OpenVINO's own thread knob, and the inference precision: OpenVINO computes fp32 models in bf16 on CPUs that
    have it unless told otherwise, so ``fp32`` pins f32 and ``bf16`` asks for bf16; int8 keeps OpenVINO's default."""
    config: dict[str, object] = {"INFERENCE_NUM_THREADS": threads}
    if system.precision in ("fp32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[system.precision]
    return config


def load(system: System, paths: Paths, threads: int) -> Peer:
    """The cached IR through ``SentenceTransformer(..., backend="openvino")`` with :func:`ov_config`."""
    from sentence_transformers import SentenceTransformer

    folder = model_folder(paths)
    file_name = INT8_FILE if system.precision == "int8" else FP32_FILE
    config = ov_config(system, threads)
    model = SentenceTransformer(
        str(folder), device="cpu", backend="openvino", model_kwargs={"file_name": file_name, "ov_config": config}
    )
    compiled = model.transformers_model
    compiled.compile()

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)

    xml = folder / "openvino" / file_name
    notes = {
        "graph": f"openvino/{file_name}",
        "max_seq_length": model.max_seq_length,
        "ov_config": config,
        "inference_precision": compiled.request.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
    }
    return Peer(embed, (xml, xml.with_suffix(".bin")), notes)
