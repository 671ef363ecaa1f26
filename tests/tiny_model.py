"""A tiny random BERT sentence-transformers model, built offline in the test session (no download)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from export.data import read_sts

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab(size: int) -> dict[str, int]:
    words = Counter()
    for p in read_sts("dev")[:600]:
        words.update(re.findall(r"\w+|[^\w\s]", (p.s1 + " " + p.s2).lower()))
    tokens = (
        SPECIALS + [w for w, _ in words.most_common(size)] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    )
    tokens += list("abcdefghijklmnopqrstuvwxyz0123456789")
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_model(out_dir: Path, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Save a random-weight Transformer -> mean Pooling -> Normalize model (max_seq_length 256) to ``out_dir``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = _vocab(400)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    hf_dir = out_dir / "hf"
    BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, model_max_length=512).save_pretrained(hf_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=256)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden, "mean"), Normalize()], device="cpu")
    model_dir = out_dir / "tiny-bert"
    model.save(str(model_dir))
    return model_dir
