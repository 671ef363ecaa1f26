"""Graph optimisation: onnxruntime transformer fusions, int8 quantisation, fp16 conversion."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.deps import require


@dataclass(frozen=True)
class Int8Settings:
    """How the int8 graph is made; recorded in the manifest.

    Dense layers become MatMulNBits with 8-bit symmetric weights in blocks of ``block_size``; with accuracy_level 4
    onnxruntime quantises each activation row block on the fly, so a text's embedding does not depend on the other
    texts in its batch (per-tensor dynamic quantisation does: cosine to its batch-free self down to 0.986 measured).
    The word-embedding table is stored as int8 with one scale per row and dequantised after the lookup.
    """

    bits: int = 8
    block_size: int = 32
    accuracy_level: int = 4
    quantize_word_embeddings: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"method": "MatMulNBits weight-only, int8 compute", **asdict(self)}


def fuse(src: Path, dst: Path, num_heads: int, hidden_size: int, multi_head: bool = False) -> dict[str, int]:
    """Apply onnxruntime's BERT fusions; return the non-zero fusion counts.

    ``multi_head`` fuses attention as MultiHeadAttention, leaving the Q/K/V projections as MatMuls that weight-only
    quantisation can reach (the Attention op packs them into one weight it cannot). EmbedLayerNormalization stays
    unfused: it would keep the word-embedding table out of reach of quantisation (optimum disables it too).
    """
    optimizer = require("onnxruntime.transformers.optimizer")
    fusion_options = require("onnxruntime.transformers.fusion_options")
    options = fusion_options.FusionOptions("bert")
    options.enable_embed_layer_norm = False
    options.use_multi_head_attention = multi_head
    model = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
        optimization_options=options, opt_level=0,
    )
    model.save_model_to_file(str(dst))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def quantize_int8(src: Path, dst: Path, settings: Int8Settings = Int8Settings()) -> None:
    """Quantise a (multi-head fused) fp32 graph to int8 weights as described by ``settings``."""
    onnx = require("onnx")
    nbits = require("onnxruntime.quantization.matmul_nbits_quantizer")
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=settings.block_size, is_symmetric=True, accuracy_level=settings.accuracy_level, bits=settings.bits,
    )
    quantizer = nbits.MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=settings.bits, block_size=settings.block_size, is_symmetric=True,
        accuracy_level=settings.accuracy_level, algo_config=config,
    )
    quantizer.process()
    model = quantizer.model.model
    if settings.quantize_word_embeddings:
        quantize_embedding_rows(model, word_embedding_gather(model))
    onnx.save(model, str(dst))


def word_embedding_gather(model: Any) -> Any:
    """The Gather that looks ``input_ids`` up in the largest 2-D initializer (the word-embedding table)."""
    tables = {t.name: t for t in model.graph.initializer if len(t.dims) == 2}
    lookups = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == "input_ids"]
    if len(lookups) != 1:
        raise ValueError(f"expected one word-embedding Gather on input_ids, found {len(lookups)}")
    return lookups[0]


def quantize_embedding_rows(model: Any, gather: Any) -> None:
    """Replace ``table[ids]`` by ``int8_table[ids] * row_scale[ids]``: 4x smaller, dequantised after the lookup."""
    onnx = require("onnx")
    numpy_helper, helper = onnx.numpy_helper, onnx.helper
    init = next(t for t in model.graph.initializer if t.name == gather.input[0])
    table = numpy_helper.to_array(init).astype(np.float32)  # (vocab, hidden)
    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0  # (vocab, 1)
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    name = init.name
    model.graph.initializer.remove(init)
    model.graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")]
    )
    out = gather.output[0]
    ids = gather.input[1]
    nodes = [
        helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_q"], name=f"{gather.name}_int8", axis=0),
        helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"{gather.name}_scale", axis=0),
        helper.make_node("Cast", [f"{out}_q"], [f"{out}_f"], name=f"{gather.name}_cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{out}_f", f"{out}_scale"], [out], name=f"{gather.name}_dequant"),
    ]
    index = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, keeping int64 inputs and a float32 output so callers see no difference."""
    onnx_model = require("onnxruntime.transformers.onnx_model")
    onnx = require("onnx")
    model = onnx_model.OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
