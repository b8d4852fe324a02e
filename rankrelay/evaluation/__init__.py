"""Comparing rerankers on the same candidates: datasets, runs, metrics, significance, reports.

Example:
    >>> from rankrelay.evaluation import METRICS
    >>> METRICS[0]
    'ndcg@10'
"""

from rankrelay.evaluation.compare import compare
from rankrelay.evaluation.comparison import BackendRun, Comparison
from rankrelay.evaluation.data import BeirDataset, load_beir, read_trec, write_trec
from rankrelay.evaluation.metrics import METRICS, agreement, evaluate, rbo, significance

__all__ = ["METRICS", "BackendRun", "BeirDataset", "Comparison", "agreement", "compare", "evaluate", "load_beir",
           "rbo", "read_trec", "significance", "write_trec"]
