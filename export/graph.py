"""torch -> ONNX: BERT, attention-masked mean pooling and L2 normalisation traced as one graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.deps import require
from runtime.artifact import INPUT_NAMES, OUTPUT_NAME

OPSET = 17


def load_sentence_transformer(model_dir: Path) -> Any:
    """Load a local sentence-transformers folder with eager attention (the pattern onnxruntime's fusions know)."""
    st = require("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    check_architecture(model, model_dir)
    return model.eval()


def check_architecture(model: Any, model_dir: Path) -> None:
    """Refuse anything but Transformer -> mean Pooling -> Normalize, the contract the graph reproduces."""
    names = [type(m).__name__ for m in model]
    if names != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(f"{model_dir}: modules {names}, expected Transformer -> Pooling -> Normalize")
    mode = model[1].get_config_dict().get("pooling_mode")
    if mode not in ("mean", ["mean"], ("mean",)):
        raise ValueError(f"{model_dir}: pooling {mode!r}, expected mean")


def embedding_module(model: Any) -> Any:
    """A torch module (input_ids, attention_mask) -> unit-length sentence embedding, equal to ``model.encode``."""
    torch = require("torch")

    class SentenceEmbedding(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            token_type_ids = torch.zeros_like(input_ids)  # single-segment input: type 0 everywhere
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # (B, T, H)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedding(model[0].auto_model).eval()


def export_onnx(model: Any, path: Path) -> None:
    """Trace the sentence-embedding module to ``path`` with dynamic batch and sequence axes."""
    torch = require("torch")
    module = embedding_module(model)
    sample = model.tokenize(["a sample sentence for tracing", "short"])
    args = (sample["input_ids"], sample["attention_mask"])
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch_size"}
    with torch.inference_mode():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _set_output_width(path, model[0].auto_model.config.hidden_size)


def _set_output_width(path: Path, width: int) -> None:
    """The tracer names the output's second axis symbolically; pin it so the contract (batch, width) is explicit."""
    onnx = require("onnx")
    graph = onnx.load(str(path))
    dim = graph.graph.output[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = width
    onnx.save(graph, str(path))
