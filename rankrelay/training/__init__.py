"""Fine-tuning cross-encoders from relevance judgments (``rankrelay train``); needs the ``train`` extra.

Example:
    >>> from rankrelay.training import split_queries
    >>> sorted(split_queries(["1", "2", "3"], (0.6, 0.2, 0.2), seed=0))
    ['dev', 'test', 'train']
"""

from rankrelay.training.distill import DistillOptions, distill
from rankrelay.training.split import load_split, split_queries
from rankrelay.training.trainer import TrainOptions, train

__all__ = ["DistillOptions", "TrainOptions", "distill", "load_split", "split_queries", "train"]
