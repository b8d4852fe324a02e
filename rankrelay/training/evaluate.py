"""Evaluation around training: nDCG@10 on dev queries during training, a time limit, and what is written
after it (calibration, test metrics, the harness report on test queries, the model card).

Example:
    >>> from rankrelay.training.evaluate import TimeLimit
    >>> TimeLimit(None).limit is None
    True
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

try:
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
except ImportError:  # sentence-transformers 5.x
    from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator  # type: ignore[no-redef]

from rankrelay.calibration import Calibration, expected_calibration_error
from rankrelay.evaluation.data import BeirDataset, Ranking, write_trec
from rankrelay.evaluation.metrics import evaluate
from rankrelay.progress import EVERY_S
from rankrelay.progress import logger as progress_logger
from rankrelay.training.examples import TrainList

logger = logging.getLogger(__name__)


def rank_with(model: Any, data: BeirDataset, queries: dict[str, str], candidates: dict[str, Ranking],
              batch_size: int = 64) -> dict[str, Ranking]:
    """Each query's candidates ordered by ``model`` (a sentence-transformers CrossEncoder), raw scores."""
    import torch

    pairs, owners = [], []
    for q, text in queries.items():
        for doc_id, _ in candidates.get(q, []):
            pairs.append((text, data.corpus[doc_id].text))
            owners.append((q, doc_id))
    scores = model.predict(pairs, batch_size=batch_size, show_progress_bar=False, activation_fn=torch.nn.Identity(),
                           convert_to_numpy=True).tolist() if pairs else []
    out: dict[str, Ranking] = {q: [] for q in queries}
    for (q, doc_id), s in zip(owners, scores):
        out[q].append((doc_id, float(s)))
    return {q: sorted(r, key=lambda x: -x[1]) for q, r in out.items()}


class DevEvaluator(BaseEvaluator):
    """nDCG@10 of the model reranking the first-stage candidates of ``query_ids`` (sentence-transformers evaluator)."""

    def __init__(self, data: BeirDataset, query_ids: list[str], candidates: dict[str, Ranking],
                 batch_size: int = 64) -> None:
        super().__init__()
        self.data = data
        self.query_ids = [q for q in query_ids if q in candidates]
        self.candidates = candidates
        self.batch_size = batch_size
        self.greater_is_better = True
        self.primary_metric = "ndcg@10"

    def rankings(self, model: Any) -> dict[str, Ranking]:
        """Rerank each query's candidates with ``model`` (a CrossEncoder), best first, raw scores."""
        return rank_with(model, self.data, {q: self.data.queries[q] for q in self.query_ids}, self.candidates,
                         self.batch_size)

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict:
        if not self.query_ids:
            return {"dev_ndcg@10": 0.0}
        value = evaluate(self.data.qrels, self.rankings(model), "dev", ["ndcg@10"])[0]["ndcg@10"]
        logger.info("dev nDCG@10 at step %s: %.4f", steps, value)
        self.primary_metric = "dev_ndcg@10"
        return {"dev_ndcg@10": value}

    def store_metrics_in_model_card_data(self, *args: Any, **kwargs: Any) -> None:
        """Metrics go to rankrelay's own model card."""

    @property
    def description(self) -> str:
        return "rankrelay dev reranking"


class ProgressLines(TrainerCallback):
    """Off a terminal (a CI log, ``| tee``), where the trainer's bars are off: a line on ``rankrelay.progress``
    at most every ``every_s`` seconds and one at the last step, saying the step, of how many, and the time so far.

    ``clock`` reads seconds (a fake one in tests).
    """

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.start = self.last = clock()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = self.last = self.clock()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self.clock()
        total = max(1, state.max_steps)
        if now - self.last >= self.every_s or state.global_step >= total:
            self.last = now
            progress_logger.info("training: step %d/%d (%d%%), %.0f s", state.global_step, total,
                                 100 * state.global_step // total, now - self.start)


TRAIN_TIME_FILE = "rankrelay_train_s.json"


class TimeLimit(TrainerCallback):
    """Stop training (after a last evaluation and save) once ``minutes`` have passed in all.

    ``before`` is the training time of earlier runs (a resumed run counts it); each checkpoint keeps the
    total so far in ``rankrelay_train_s.json``. ``clock`` reads seconds (a fake one in tests).
    """

    def __init__(self, minutes: float | None, before: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.limit = None if minutes is None else minutes * 60.0
        self.before = before
        self.clock = clock
        self.start = clock()

    @classmethod
    def resuming(cls, minutes: float | None, checkpoint: str | None,
                 clock: Callable[[], float] = time.perf_counter) -> TimeLimit:
        """A clock that goes on from the training time saved in ``checkpoint`` (none: from zero)."""
        saved = Path(checkpoint) / TRAIN_TIME_FILE if checkpoint else None
        before = json.loads(saved.read_text())["train_s"] if saved is not None and saved.exists() else 0.0
        return cls(minutes, before=before, clock=clock)

    @property
    def elapsed(self) -> float:
        """Training seconds so far, earlier runs included."""
        return self.before + self.clock() - self.start

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = self.clock()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / TRAIN_TIME_FILE).write_text(json.dumps({"train_s": self.elapsed}))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.limit is not None and self.elapsed > self.limit:
            logger.warning("time limit of %.0f min reached at step %d; stopping", self.limit / 60, state.global_step)
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True
        return control


def dev_curve(history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, dev nDCG@10) of every evaluation, those before a resume included (the trainer restores them)."""
    curve: dict[int, float] = {}
    for h in history:
        if "eval_dev_ndcg@10" in h:
            curve[int(h["step"])] = float(h["eval_dev_ndcg@10"])
    return sorted(curve.items())


def _labelled(data: BeirDataset, rankings: dict[str, Ranking]) -> tuple[list[float], list[int]]:
    scores, labels = [], []
    for q, ranking in rankings.items():
        judged = data.qrels.get(q, {})
        for doc_id, s in ranking:
            scores.append(s)
            labels.append(1 if judged.get(doc_id, 0) > 0 else 0)
    return scores, labels


def finish(out: Path, data: BeirDataset, split: dict[str, list[str]], candidates: dict[str, Ranking],
           dev: DevEvaluator, history: list[dict[str, Any]], *, opts_dict: dict[str, Any],
           timings: dict[str, Any], lists: list[TrainList]) -> dict[str, Any]:
    """Calibrate on dev, measure on test, write the harness report, the model card and train_report.json."""
    from sentence_transformers import CrossEncoder

    from rankrelay.scoring import sigmoid

    model = CrossEncoder(str(out), device=opts_dict["device"])
    dev_rankings = dev.rankings(model)
    dev_ndcg = evaluate(data.qrels, dev_rankings, "dev", ["ndcg@10"])[0]["ndcg@10"] if dev_rankings else None
    calibration = None
    scores, labels = _labelled(data, dev_rankings)
    if len(set(labels)) == 2:
        calibration = Calibration.fit(scores, labels, opts_dict["calibration"])
        calibration.save(out)
    test = DevEvaluator(data, split["test"], candidates)
    test_rankings = test.rankings(model)
    report: dict[str, Any] = {"options": opts_dict, "timings": timings, "split": {k: len(v) for k, v in split.items()},
                              "train_lists": len(lists), "pseudo_lists": sum(t.pseudo for t in lists),
                              "dev_curve": dev_curve(history), "dev": {"ndcg@10": dev_ndcg},
                              "history": [h for h in history if "loss" in h or "eval_dev_ndcg@10" in h]}
    if test_rankings:
        first = {q: candidates[q] for q in test_rankings}
        t_scores, t_labels = _labelled(data, test_rankings)
        report["test"] = {
            "queries": len(test_rankings),
            "ndcg@10": evaluate(data.qrels, test_rankings, "trained", ["ndcg@10"])[0]["ndcg@10"],
            "first_stage_ndcg@10": evaluate(data.qrels, first, "first", ["ndcg@10"])[0]["ndcg@10"],
            "ece_sigmoid": expected_calibration_error([sigmoid(s) for s in t_scores], t_labels),
            "ece_calibrated": expected_calibration_error(calibration(t_scores), t_labels) if calibration else None,
        }
        write_trec(out / "test-candidates.trec", first, tag=opts_dict["negatives"])
    (out / "train_report.json").write_text(json.dumps(report, indent=1))
    (out / "README.md").write_text(model_card(out, report))
    return report


def model_card(out: Path, report: dict[str, Any]) -> str:
    """A short model card: base, data, split, command, dev curve and test metrics."""
    o, t = report["options"], report.get("test", {})
    curve = "\n".join(f"| {step} | {value:.4f} |" for step, value in report["dev_curve"]) or "| - | - |"
    test_rows = ""
    if t:
        ece_cal = "n/a" if t["ece_calibrated"] is None else f"{t['ece_calibrated']:.4f}"
        test_rows = (f"| first stage ({o['negatives']}) | {t['first_stage_ndcg@10']:.4f} |\n"
                     f"| this model over its top {o['depth']} | {t['ndcg@10']:.4f} |\n\n"
                     f"Expected calibration error on test: sigmoid of the raw score {t['ece_sigmoid']:.4f}, "
                     f"calibrated ({o['calibration']}) {ece_cal}.\n")
    timings = report["timings"]
    return f"""---
library_name: sentence-transformers
pipeline_tag: text-ranking
tags: [cross-encoder, reranker, rankrelay]
base_model: {o['base']}
---
# {out.name}

A cross-encoder reranker trained by `rankrelay train` from `{o['base']}`.
Load it with `rankrelay.load_reranker("cross-encoder:{out}")`; `normalize="calibrated"` gives P(relevant).

- Data: `{o['extra'].get('dataset', '')}` (qrels `{o['qrels_split']}`), {report['train_lists']} training lists
  ({report['pseudo_lists']} title -> abstract pseudo-queries), negatives from `{o['negatives']}`
  ({o['negatives_per_query']} per query, {o['random_share']:.0%} random), loss `{o['loss']}`
  {'(bi-encoder teacher ' + o['retriever_model'] + f", temperature {o['temperature']}, boost {o['boost']})"
   if o['teacher'] and o['loss'] == 'listwise' else ''}.
- Split (seeded hash of the query id, seed {o['seed']}): {report['split']} queries; `split.json`.
  Test queries were never seen in training.
- Training: {o['epochs']} epoch(s), lr {o['learning_rate']}, {o['batch_size']} per step, max length {o['max_length']},
  {timings['steps']} steps in {timings['train_s'] / 60:.1f} min ({timings['pairs_per_s']:.1f} pairs/s).
- Command: `{o['command']}`

## Dev nDCG@10 during training

| step | nDCG@10 |
|---:|---:|
{curve}

## Test (nDCG@10)

| ranking | nDCG@10 |
|---|---:|
{test_rows}
"""
