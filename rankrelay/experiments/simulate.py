"""Replaying a judged dataset with simulated users: how often team-draft interleaving and a split test pick the
arm that is better on the judgments, at each number of impressions.

Every impression draws a query; team-draft shows the interleaved top ``length`` and credits the clicks, a split
shows one arm's top ``length`` (a fair coin per impression). Both go through :mod:`.interleaving` and
:mod:`.analysis`, the code the service runs. A decision is correct when the observed preference (significant or
not) names the arm with the higher mean nDCG@10 on the qrels; the share of significant correct decisions is
reported beside it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from rankrelay.errors import ConfigError
from rankrelay.experiments.analysis import analyse_interleaved, analyse_split
from rankrelay.experiments.clicks import ClickModel
from rankrelay.experiments.interleaving import credit, team_draft


@dataclass(frozen=True, slots=True)
class SimulationRow:
    """At ``impressions``: the share of trials whose decision was right (and right and significant)."""

    impressions: int
    team_draft: float
    split: float
    team_draft_significant: float
    split_significant: float


@dataclass(frozen=True, slots=True)
class Simulation:
    arms: list[str]
    better: str
    ndcg: dict[str, float]
    click_model: str
    trials: int
    rows: list[SimulationRow]

    def needed(self, method: str, share: float = 0.95) -> int | None:
        """The fewest impressions at which ``method`` (``team_draft`` or ``split``) was right in ``share`` of
        trials, or None when it never was."""
        return next((r.impressions for r in self.rows if getattr(r, method) >= share), None)

    def to_dict(self) -> dict[str, object]:
        return {"arms": self.arms, "better": self.better, "ndcg@10": self.ndcg, "click_model": self.click_model,
                "trials": self.trials, "rows": [asdict(r) for r in self.rows],
                "needed_95": {m: self.needed(m) for m in ("team_draft", "split")}}


def simulate(rankings: Mapping[str, Mapping[str, Sequence[str]]], qrels: Mapping[str, Mapping[str, int]],
             ndcg: Mapping[str, float], click: ClickModel, impressions: Sequence[int], *, trials: int = 200,
             length: int = 10, seed: int = 0) -> Simulation:
    """Simulate ``trials`` experiments between two arms (``rankings``: arm -> query id -> doc ids, best first).

    ``ndcg`` is each arm's mean nDCG@10 on ``qrels``: the truth a decision is checked against.
    """
    arms = list(rankings)
    if len(arms) != 2:
        raise ConfigError(f"a simulation compares two arms, got {len(arms)}: {', '.join(arms)}")
    if ndcg[arms[0]] == ndcg[arms[1]]:
        raise ConfigError(f"{arms[0]} and {arms[1]} have the same nDCG@10 ({ndcg[arms[0]]:.4f}): "
                          "no decision could be right")
    checkpoints = sorted({int(n) for n in impressions})
    if not checkpoints or checkpoints[0] < 1 or trials < 1:
        raise ConfigError("impressions and trials must be positive")
    qids = sorted(set(rankings[arms[0]]) & set(rankings[arms[1]]) & set(qrels))
    if not qids:
        raise ConfigError("no judged query is ranked by both arms")
    top = max((g for q in qids for g in qrels[q].values()), default=1)
    better = arms[0] if ndcg[arms[0]] > ndcg[arms[1]] else arms[1]
    tallies = {n: [0, 0, 0, 0] for n in checkpoints}  # td right, split right, td right+sig, split right+sig
    rng = random.Random(seed)
    for _ in range(trials):
        credits: list[list[int]] = []
        split_clicks: list[list[list[int]]] = [[], []]
        for n in range(1, checkpoints[-1] + 1):
            q = rng.choice(qids)
            lists = [list(rankings[arm][q][:length]) for arm in arms]
            shown = team_draft(lists, length, seed=rng.getrandbits(64))
            grades = [qrels[q].get(str(d), 0) for d in shown.order]
            credits.append(credit(shown, click.clicks(grades, top, rng)))
            side = rng.getrandbits(1)
            split_clicks[side].append(click.clicks([qrels[q].get(d, 0) for d in lists[side]], top, rng))
            if n in tallies:
                td = analyse_interleaved(arms, credits)[0]
                sp = analyse_split(arms, split_clicks)
                tally = tallies[n]
                tally[0] += td.winner == better
                tally[1] += sp.winner == better
                tally[2] += td.winner == better and td.significant
                tally[3] += sp.winner == better and sp.significant
    rows = [SimulationRow(n, *(t / trials for t in tallies[n])) for n in checkpoints]
    return Simulation(arms, better, {a: float(ndcg[a]) for a in arms}, f"{click.kind}/{click.user}", trials, rows)
