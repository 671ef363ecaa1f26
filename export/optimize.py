"""Graph optimisation: onnxruntime transformer fusions and fp16 conversion (int8 lives in export.quantize)."""

from __future__ import annotations

from pathlib import Path

from export.deps import require


def fuse(
    src: Path, dst: Path, num_heads: int, hidden_size: int, multi_head: bool = False, skip_layer_norm: bool = True
) -> dict[str, int]:
    """Apply onnxruntime's BERT fusions; return the non-zero fusion counts.

    ``multi_head`` fuses attention as MultiHeadAttention, leaving the Q/K/V projections as MatMuls that int8
    quantisation can reach (the Attention op packs them into one weight it cannot). ``skip_layer_norm=False`` keeps
    residual Add + LayerNormalization apart: onnxruntime 1.32's SkipLayerNormalization kernel was measured slower
    than the pair on this CPU. EmbedLayerNormalization stays
    unfused: it would keep the word-embedding table out of reach of quantisation (optimum disables it too).
    """
    optimizer = require("onnxruntime.transformers.optimizer")
    fusion_options = require("onnxruntime.transformers.fusion_options")
    options = fusion_options.FusionOptions("bert")
    options.enable_embed_layer_norm = False
    options.use_multi_head_attention = multi_head
    options.enable_skip_layer_norm = skip_layer_norm
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,
    )
    model.save_model_to_file(str(dst))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, keeping int64 inputs and a float32 output so callers see no difference."""
    onnx_model = require("onnxruntime.transformers.onnx_model")
    onnx = require("onnx")
    model = onnx_model.OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
