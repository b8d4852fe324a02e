"""The parts of :func:`rankrelay.training.distill` around the teacher: training the student (early stopping on
its agreement with the teacher), measuring it before and after on the held-out queries, and the model card.

Example:
    >>> from rankrelay.training.distill_run import chain_hint
    >>> chain_hint("cohere:rerank-v3.5", "models/distilled")
    '["cohere:rerank-v3.5", "cross-encoder:models/distilled", "bi-encoder:all-minilm-l6"]'
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import EarlyStoppingCallback

from rankrelay.evaluation.data import BeirDataset, Ranking, write_trec
from rankrelay.training.agreement import agreement_with
from rankrelay.training.evaluate import BaseEvaluator, ProgressLines, TimeLimit, dev_curve, rank_with

if TYPE_CHECKING:
    from rankrelay.training.distill_options import DistillOptions
    from rankrelay.training.teacher import RecordedTeacher

logger = logging.getLogger(__name__)
BEFORE = ".student-before"
GENERIC_FALLBACK = "bi-encoder:all-minilm-l6"


@dataclass(slots=True)
class Trained:
    """What training left: where the student started from, its dev curve, timings, the untrained copy."""

    info: dict[str, Any]
    timings: dict[str, Any]
    before: Path
    history: list[dict[str, Any]] = field(default_factory=list)


class AgreementEvaluator(BaseEvaluator):
    """The student's agreement with the teacher on dev queries (sentence-transformers evaluator); the trainer
    keeps the checkpoint with the best ``dev_teacher_ndcg@10``."""

    def __init__(self, data: BeirDataset, queries: dict[str, str], teacher: dict[str, Ranking],
                 candidates: dict[str, Ranking]) -> None:
        super().__init__()
        self.data, self.teacher, self.candidates = data, teacher, candidates
        self.queries = {q: t for q, t in queries.items() if q in teacher}
        self.greater_is_better = True
        self.primary_metric = "dev_teacher_ndcg@10"

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict:
        found = agreement_with(self.teacher, rank_with(model, self.data, self.queries, self.candidates))
        logger.info("dev agreement at step %s: nDCG@10 %.4f, top-10 overlap %.3f", steps, found["teacher_ndcg@10"],
                    found["overlap@10"])
        return {"dev_teacher_ndcg@10": found["teacher_ndcg@10"], "dev_overlap@10": found["overlap@10"]}

    def store_metrics_in_model_card_data(self, *args: Any, **kwargs: Any) -> None:
        """Metrics go to rankrelay's own model card."""

    @property
    def description(self) -> str:
        return "rankrelay agreement with the teacher"


def train_student(out: Path, student: tuple[Any, str], rows: dict[str, list[Any]], data: BeirDataset,
                  dev: dict[str, str], dev_teacher: dict[str, Ranking], candidates: dict[str, Ranking],
                  opts: DistillOptions, clock: Callable[[], float]) -> Trained:
    """Train ``student`` (the model and where it started from: :func:`~rankrelay.training.student.load_student`)
    on ``rows``, resuming from ``out/checkpoints``; saves it in ``out`` and its untrained copy in
    ``out/.student-before``."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    from rankrelay.training.distill_options import distill_loss, training_bf16

    model, started_from = student
    before = out / BEFORE
    model.save_pretrained(str(before))  # both copies keep the window it is trained at: served as it learned
    train_set = Dataset.from_dict(rows)
    per_epoch = max(1, -(-len(train_set) // opts.batch_size))
    every = max(1, per_epoch // max(1, opts.evals_per_epoch))
    evaluate = bool(dev_teacher)
    terminal = sys.stderr.isatty()
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=opts.epochs, per_device_train_batch_size=opts.batch_size,
        learning_rate=opts.learning_rate, warmup_steps=0.1, seed=opts.seed, data_seed=opts.seed,
        eval_strategy="steps" if evaluate else "no", eval_steps=every, save_strategy="steps", save_steps=every,
        save_total_limit=2, load_best_model_at_end=evaluate, metric_for_best_model="eval_dev_teacher_ndcg@10",
        greater_is_better=True, logging_steps=max(1, every // 4), report_to="none", use_cpu=opts.device == "cpu",
        disable_tqdm=not (opts.progress and terminal), dataloader_num_workers=0,
        bf16=training_bf16(opts.precision, opts.device),
    )
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resume = str(checkpoints[-1]) if checkpoints else None
    limit = TimeLimit.resuming(opts.max_minutes, resume, clock=clock)
    callbacks: list[Any] = [limit, *([ProgressLines()] if opts.progress and not terminal else [])]
    if evaluate:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=opts.patience))
    evaluator = AgreementEvaluator(data, dev, dev_teacher, candidates) if evaluate else None
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_set, loss=distill_loss(model, opts.loss),
                                  evaluator=evaluator, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    model.save_pretrained(str(out))
    train_s = limit.elapsed
    # listnet: each list's documents; margin-mse: a positive and its negatives a row (the other columns are the
    # query and the label)
    pairs = sum(len(d) for d in rows["docs"]) if "docs" in rows else len(rows["query"]) * (len(rows) - 2)
    curve = [{"step": s, "teacher_ndcg@10": v} for s, v in dev_curve(
        [{**h, "eval_dev_ndcg@10": h["eval_dev_teacher_ndcg@10"]} for h in trainer.state.log_history
         if "eval_dev_teacher_ndcg@10" in h])]
    return Trained(info={"started_from": started_from, "dev_curve": curve, "bf16": bool(args.bf16),
                         "window": model.max_seq_length,
                         "steps": trainer.state.global_step,
                         "best_checkpoint": trainer.state.best_model_checkpoint, "resumed_from": resume},
                   timings={"train_s": train_s, "pairs_per_epoch": pairs}, before=before,
                   history=trainer.state.log_history)


def evaluate_held_out(out: Path, data: BeirDataset, teacher: dict[str, Ranking], candidates: dict[str, Ranking],
                      recorded: RecordedTeacher, trained: Trained, opts: DistillOptions) -> dict[str, Any]:
    """Agreement of the student before and after with the teacher on the held-out queries it answered; where
    they are judged, each model's nDCG@10 with a 95 % bootstrap interval and the harness's report in
    ``out/report``."""
    from rankrelay.evaluation.html import bootstrap_interval

    judged = [q for q in teacher if data.qrels.get(q)]
    runs: dict[str, dict[str, Ranking]] = {}
    quality: dict[str, Any] = {}
    if judged:
        from rankrelay.evaluation.compare import compare

        held = out / "held-out-candidates.trec"
        write_trec(held, {q: candidates[q] for q in judged}, tag=opts.candidates)
        # torch: a fresh student is measured as it is, not converted for other runtimes in the background; in
        # bf16 where it was trained so (the CPU's faster arithmetic), both students alike
        local = {"runtime": "torch", "precision": "bf16" if trained.info["bf16"] and opts.device == "cpu" else "fp32"}
        names = {"teacher": recorded,
                 "before": {"spec": f"cross-encoder:{trained.before}", "name": "student-before", **local},
                 "student": {"spec": f"cross-encoder:{out}", "name": "student", **local}}
        result = compare(data, str(held), list(names.values()), depth=opts.depth, queries=judged,
                         out=out / "report", progress=opts.progress)
        labels = {"teacher": next(n for n in result.runs if n not in ("student-before", "student")),
                  "before": "student-before", "student": "student", "first_stage": "first-stage"}
        for key, name in labels.items():
            values = list(result.per_query[name]["ndcg@10"].values())
            quality[key] = {"name": name, "ndcg@10": result.metrics[name]["ndcg@10"],
                            "ci95": bootstrap_interval(values), "p50_ms": result.latency.get(name, {}).get("p50_ms")}
            if key in ("before", "student"):
                runs[key] = result.runs[name].rankings
    else:
        from sentence_transformers import CrossEncoder

        queries = {q: data.queries.get(q, "") for q in teacher}
        for key, folder in (("before", trained.before), ("student", out)):
            model = CrossEncoder(str(folder), device=opts.device)
            runs[key] = rank_with(model, data, queries, candidates)
    agreement = {key: agreement_with(teacher, rankings) for key, rankings in runs.items()}
    return {"agreement": agreement, "quality": quality}


def chain_hint(teacher: Any, out: str | Path) -> str:
    """The fallback chain to paste into a service's configuration: the teacher (a chain's backends), the distilled
    student, the generic fallback."""
    head = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    return json.dumps([*head, f"cross-encoder:{out}", GENERIC_FALLBACK])


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    """``distill_report.json`` and the model card ``README.md``."""
    report["chain"] = chain_hint(report["teacher_spec"], out)
    (out / "distill_report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "README.md").write_text(model_card(out, report))


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def model_card(out: Path, report: dict[str, Any]) -> str:
    """Where the student came from, what taught it and how closely it now ranks like its teacher."""
    o, t, q, a = report["options"], report["teacher"], report["queries"], report["agreement"]
    rows = "\n".join(f"| {key} | {_fmt(a[key]['overlap@10'])} | {_fmt(a[key]['kendall_tau'])} | "
                     f"{_fmt(a[key]['teacher_ndcg@10'])} | {a[key]['queries']} |" for key in ("before", "student")
                     if key in a)
    quality = "\n".join(f"| {v['name']} | {v['ndcg@10']:.4f} | {v['ci95'][0]:.3f}-{v['ci95'][1]:.3f} | "
                        f"{_fmt(v['p50_ms'], 1)} |" for v in report["quality"].values())
    judged = (f"\n## nDCG@10 on the judged held-out queries\n\n| ranking | nDCG@10 | 95 % interval | p50 ms |\n"
              f"|---|---:|---|---:|\n{quality}\n\nThe harness's report: `report/report.html`.\n") if quality else ""
    return f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [cross-encoder, reranker, rankrelay, distillation]
---
# {out.name}

A cross-encoder distilled by `rankrelay distill` from the teacher `{t['teacher']}`.
Load it with `rankrelay.load_reranker("cross-encoder:{out}")`; as the teacher's fallback:
`{report['chain']}`.

- Student: `{report['student']['spec']}` ({report['student']['started_from']}), loss `{o['loss']}`
  (temperature {o['temperature']}), {o['epochs']} epoch(s) at most, lr {o['learning_rate']}, max length
  {o['max_length']}, {'bf16' if report['student'].get('bf16') else 'fp32'}; {report['student']['steps']} steps in
  {report['timings']['train_s'] / 60:.1f} min.
- Queries: `{q['source']}`: {q['train']} train, {q['dev']} dev (early stopping), {q['held_out']} held out;
  candidates `{o['candidates']}` top {o['depth']}; {q['teacher_failed']} queries the teacher failed on, left out.
- Teacher: {t['calls_recorded']} calls ({t['calls_this_run']} in the last run), billed {t['billed_units']},
  ${t['usd']:.4f}.
- Command: `{o['command']}`

## Agreement with the teacher on held-out queries

| student | top-10 overlap | Kendall tau | nDCG@10 (teacher's scores as labels) | queries |
|---|---:|---:|---:|---:|
{rows}
{judged}"""


__all__ = ["AgreementEvaluator", "Trained", "chain_hint", "evaluate_held_out", "train_student"]
