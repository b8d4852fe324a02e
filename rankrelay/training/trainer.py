"""``rankrelay train``: a cross-encoder fine-tuned from relevance judgments, with hard negatives from a first stage.

The default recipe is listwise distillation: each training query (the judged train queries, plus title ->
abstract pseudo-queries that every corpus has) comes with its positives, first-stage hard negatives and
random negatives, labelled ``bi-encoder score / temperature + boost * grade``, and trained with
sentence-transformers' ``ListNetLoss``. The first stage's bi-encoder thus teaches the head what relevance
looks like and the judgments move the relevant documents above it. ``loss="bce"`` is the plain pointwise
recipe (binary labels, no teacher).

Example (a BEIR folder; writes the model, split.json, calibration.json, README.md and report/)::

    from rankrelay.training import train
    report = train("path/to/cranfield", base="all-minilm-l6", out="models/cranfield")
    report["test"]["ndcg@10"], report["test"]["first_stage_ndcg@10"]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.evaluation.data import Ranking, load_beir
from rankrelay.training.examples import (
    NEGATIVE_SOURCES,
    TrainList,
    build_lists,
    cached_first_stage,
    pseudo_queries,
    teacher_scores,
)
from rankrelay.training.split import parse_fractions, split_queries

logger = logging.getLogger(__name__)
LOSSES = ("listwise", "bce")
HEADS = ("cls", "mean")


@dataclass(slots=True)
class TrainOptions:
    """Every option of :func:`train` (the defaults are the recipe that won on Cranfield; see docs/training.md)."""

    base: str = "all-minilm-l6"
    head: str = "cls"
    negatives: str = "dense"
    negatives_per_query: int = 12
    random_share: float = 0.25
    skip_top: int = 0
    max_positives: int = 8
    epochs: float = 2.0
    max_length: int = 128
    loss: str = "listwise"
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    learning_rate: float = 1e-4
    batch_size: int = 4
    teacher: bool = True
    temperature: float = 0.05
    boost: float = 1.0
    pseudo_queries: int | None = 600
    depth: int = 100
    retriever_model: str = "all-minilm-l6"
    calibration: str = "platt"
    evals_per_epoch: int = 2
    max_minutes: float | None = None
    device: str = "cpu"
    qrels_split: str = "test"
    progress: bool = True
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.negatives not in NEGATIVE_SOURCES:
            raise ConfigError(f"negatives must be one of {', '.join(NEGATIVE_SOURCES)}, got {self.negatives!r}")
        if self.epochs <= 0 or self.max_length < 16 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("epochs and learning_rate must be > 0, max_length >= 16 and batch_size >= 1")
        self.split = parse_fractions(self.split)


def _datasets(lists: list[TrainList], loss: str) -> Any:
    from datasets import Dataset

    if loss == "listwise":
        return Dataset.from_dict({"query": [t.query for t in lists], "docs": [t.docs for t in lists],
                                  "labels": [t.labels for t in lists]})
    rows = [(t.query, d, 1.0 if g > 0 else 0.0) for t in lists for d, g in zip(t.docs, t.grades)]
    return Dataset.from_dict({"query": [r[0] for r in rows], "document": [r[1] for r in rows],
                              "label": [r[2] for r in rows]})


def _loss(model: Any, loss: str, batch_size: int) -> Any:
    from sentence_transformers.cross_encoder import losses

    if loss == "listwise":
        return losses.ListNetLoss(model, mini_batch_size=32)
    return losses.BinaryCrossEntropyLoss(model)


def load_base(base: str, max_length: int, device: str, seed: int, head: str = "cls") -> Any:
    """The base encoder with a fresh 1-logit head: ``cls`` (the pooled [CLS] token, as in BERT's sequence
    classification) or ``mean`` (mean of the token states, as a sentence-transformers bi-encoder is trained)."""
    import torch
    from sentence_transformers import CrossEncoder

    from rankrelay.hub import resolve_model

    resolved = resolve_model(base)
    torch.manual_seed(seed)  # the fresh head's initial weights
    kwargs = {"local_files_only": True} if resolved.local else {}
    if head == "cls":
        return CrossEncoder(resolved.location, num_labels=1, max_length=max_length, device=device, **kwargs)
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    encoder = Transformer(resolved.location, transformer_task="feature-extraction", max_seq_length=max_length,
                          model_kwargs=kwargs, processor_kwargs=kwargs, config_kwargs=kwargs)
    width = encoder.get_embedding_dimension() if hasattr(encoder, "get_embedding_dimension") else (
        encoder.model.config.hidden_size)
    return CrossEncoder(modules=[encoder, Pooling(width, "mean"),
                                 Dense(width, 1, activation_function=torch.nn.Identity(), module_output_name="scores")],
                        device=device)


def _candidates(out: Path, data: Any, queries: dict[str, str], opts: TrainOptions) -> tuple[dict[str, Ranking], Any]:
    """First-stage candidates for every query, cached in ``out/candidates.trec`` (resume reuses them)."""
    return cached_first_stage(out / "candidates.trec", data, queries, opts.negatives, opts.depth,
                              model=opts.retriever_model, device=opts.device)


def _teacher(out: Path, data: Any, queries: dict[str, str], dense: Any, opts: TrainOptions) -> dict[str, Any]:
    cache = out / "teacher.json"
    if cache.exists():
        scores = json.loads(cache.read_text())
        if set(queries) <= set(scores):
            return scores
    if dense is None:
        from rankrelay.retrieval import DenseRetriever

        dense = DenseRetriever.build(list(data.corpus.values()), model=opts.retriever_model, device=opts.device)
    scores = teacher_scores(dense, queries, max(2 * opts.depth, 200))
    cache.write_text(json.dumps(scores))
    return scores


def train(dataset: str | os.PathLike[str], out: str | os.PathLike[str], *,
          clock: Callable[[], float] = time.perf_counter, **options: Any) -> dict[str, Any]:
    """Fine-tune a cross-encoder on a BEIR folder's judgments; returns the report (also ``out/train_report.json``).

    The model in ``out`` loads with ``load_reranker("cross-encoder:" + out)``; test queries (by the seeded
    split in ``out/split.json``) are never seen in training. Training resumes from ``out/checkpoints``.
    ``clock`` times training against ``max_minutes``.
    """
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    from rankrelay.training.evaluate import DevEvaluator, ProgressLines, TimeLimit, finish

    opts = TrainOptions(**options)
    opts.check()
    opts.extra.setdefault("dataset", str(dataset))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_beir(dataset, opts.qrels_split)
    split = split_queries(data.judged_queries(), opts.split, opts.seed)
    previous = out / "split.json"
    if previous.exists() and {k: json.loads(previous.read_text()).get(k) for k in split} != split:
        raise ConfigError(f"{previous} holds a different split; use another --out or the same --split/--seed")
    from rankrelay.training.split import save_split

    save_split(out, split, dataset=str(dataset), seed=opts.seed, fractions=list(opts.split))

    pseudo = pseudo_queries(data, opts.pseudo_queries, opts.seed) if opts.pseudo_queries != 0 else {}
    queries = {q: data.queries[q] for q in data.judged_queries()} | {p: t for p, (t, _) in pseudo.items()}
    candidates, dense = _candidates(out, data, queries, opts)
    train_queries = {q: queries[q] for q in split["train"]} | {p: t for p, (t, _) in pseudo.items()}
    teacher = _teacher(out, data, train_queries, dense, opts) if opts.teacher and opts.loss == "listwise" else None
    lists = build_lists(data, split["train"], candidates, negatives=opts.negatives_per_query,
                        random_share=opts.random_share, skip_top=opts.skip_top, max_positives=opts.max_positives,
                        seed=opts.seed, teacher=teacher, temperature=opts.temperature, boost=opts.boost,
                        pseudo=pseudo)
    prepared = time.perf_counter()
    logger.info("%d training lists (%d pseudo-queries), %d pairs", len(lists), sum(t.pseudo for t in lists),
                sum(len(t.docs) for t in lists))

    model = load_base(opts.base, opts.max_length, opts.device, opts.seed, opts.head)
    train_set = _datasets(lists, opts.loss)
    dev = DevEvaluator(data, split["dev"], candidates, batch_size=64)
    per_epoch = max(1, -(-len(train_set) // opts.batch_size))
    every = max(1, per_epoch // max(1, opts.evals_per_epoch))
    terminal = sys.stderr.isatty()
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=opts.epochs, per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate, warmup_steps=0.1, seed=opts.seed, data_seed=opts.seed,
        eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="eval_dev_ndcg@10", greater_is_better=True,
        logging_steps=max(1, every // 4), report_to="none", use_cpu=opts.device == "cpu",
        disable_tqdm=not (opts.progress and terminal), dataloader_num_workers=0,
    )
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resume = str(checkpoints[-1]) if checkpoints else None
    if resume:
        logger.info("resuming from %s", resume)
    limit = TimeLimit.resuming(opts.max_minutes, resume, clock=clock)
    lines = [ProgressLines()] if opts.progress and not terminal else []  # the trainer's bars are for terminals
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_set,
                                  loss=_loss(model, opts.loss, opts.batch_size), evaluator=dev,
                                  callbacks=[limit, *lines])
    trainer.train(resume_from_checkpoint=resume)
    train_seconds = limit.elapsed - limit.before
    model.save_pretrained(str(out))
    per_row = sum(len(t.docs) for t in lists) / len(lists) if opts.loss == "listwise" else 1.0
    steps = trainer.state.global_step - (int(resume.rsplit("-", 1)[1]) if resume else 0)
    timings = {"prepare_s": prepared - started, "train_s": limit.before + train_seconds,
               "train_s_this_run": train_seconds, "steps": trainer.state.global_step,
               "pairs_per_s": steps * opts.batch_size * per_row / train_seconds if train_seconds > 0 else 0.0,
               "resumed_from": resume}
    return finish(out, data, split, candidates, dev, trainer.state.log_history, opts_dict=asdict(opts),
                  timings=timings, lists=lists)
