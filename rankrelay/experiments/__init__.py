"""Online experiments between backends: interleaving, click models, the analysis that decides, simulation.

Team-draft interleaving (Radlinski et al. 2008) merges two arms' rankings into one list and credits each click to
the arm that placed the clicked document; team-draft multileaving (Schuth et al. 2014) does the same for three or
more arms. :mod:`.analysis` turns credited impressions into a preference with an interval and a p-value;
:mod:`.simulate` replays a judged dataset with simulated users to show how many impressions a decision takes.

Example:
    >>> from rankrelay.experiments import team_draft
    >>> shown = team_draft([[0, 1, 2], [2, 1, 0]], seed=7)
    >>> sorted(shown.order), len(shown.teams)
    ([0, 1, 2], 3)
"""

from rankrelay.experiments.analysis import Preference, analyse_interleaved, analyse_split
from rankrelay.experiments.clicks import CLICK_MODELS, USERS, ClickModel, click_model
from rankrelay.experiments.interleaving import Interleaved, credit, outcome, team_draft

__all__ = [
    "CLICK_MODELS",
    "USERS",
    "ClickModel",
    "Interleaved",
    "Preference",
    "analyse_interleaved",
    "analyse_split",
    "click_model",
    "credit",
    "outcome",
    "team_draft",
]
