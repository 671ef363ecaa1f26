"""Prepare a local folder that infinity-emb's optimum engine can serve offline, from a sentence-transformers folder.

Run with the python of infinity's own environment (it needs torch and optimum; keep it out of this repo's venv):

    /work/venv-infinity/bin/python -m benchmarks.infinity_model SRC OUT

Writes OUT/model.onnx (the BERT encoder with ``last_hidden_state``, exported by optimum; infinity pools it itself)
and OUT/model_quantized.onnx (optimum's dynamic int8 for AVX-512 VNNI, the file infinity prefers on CPU unless
``--onnx-do-not-prefer-quantized``), plus config and tokenizer files. Serve it with ``--pooling-method mean``:
infinity's optimum engine otherwise pools the [CLS] token.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="sentence-transformers model folder (transformer weights at its root)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if args.out.exists():
        shutil.rmtree(args.out)
    main_export(str(args.src), output=args.out, task="feature-extraction", library_name="transformers", opset=17)
    quantizer = ORTQuantizer.from_pretrained(args.out, file_name="model.onnx")
    quantizer.quantize(save_dir=args.out, quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False))
    print(sorted(p.name for p in args.out.iterdir()))


if __name__ == "__main__":
    main()
