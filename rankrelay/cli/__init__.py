"""The ``rankrelay`` command line: ``rerank`` a file, list ``models``, run the ``demo``, ``index`` a corpus and
``search`` it, ``rerank-batch`` a candidates file, ``bench`` backends on a BEIR dataset, ``train`` a cross-encoder,
``distill`` one from a teacher, ``serve`` rerankers over HTTP (and read a service's ``usage``), and ``experiment
simulate`` interleaving against a split test. Each command reads its defaults from the settings (``--config``),
prints a table (or ``--json``), and turns a typed error into one line on stderr and exit status 2. Rendering of
results lives here (:mod:`~rankrelay.cli.common`); the library returns them.

Example:
    $ rankrelay rerank --model minilm-l6 --query "what is bm25" docs.jsonl --top-n 5
    $ rankrelay models
"""

from rankrelay.cli import commands, distill, evaluation, experiment, scale, search  # noqa: F401  (each registers its commands)
from rankrelay.cli.common import app

__all__ = ["app"]
