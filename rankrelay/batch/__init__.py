"""Batch reranking of a large candidates file, in resumable parts, in this process or on Ray Data.

- :mod:`rankrelay.batch.candidates`: reading and checking the input, parts, reranking one part
- :mod:`rankrelay.batch.job`: the output folder (manifest, parts, Parquet and TREC outputs) and :func:`run_batch`

Example:
    >>> from rankrelay.batch import FIELDS
    >>> FIELDS
    ('query_id', 'query', 'doc_id', 'text')
"""

from rankrelay.batch.candidates import COLUMNS, FIELDS, QueryGroup, read_candidates, rerank_part
from rankrelay.batch.job import BatchJob, BatchSummary, run_batch

__all__ = ["COLUMNS", "FIELDS", "BatchJob", "BatchSummary", "QueryGroup", "read_candidates", "rerank_part",
           "run_batch"]
