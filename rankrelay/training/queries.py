"""Where a distillation's queries come from: the dataset's own, queries captured by the service, or
pseudo-queries written from the corpus (titles, leading sentences, key phrases of sampled documents).

``--queries`` takes ``dataset``, ``pseudo:N`` or the path of a capture file (JSON lines with a ``query``).
Pseudo-queries need no labels: each sampled document gives one query, the kinds taken in turn among those the
document has (a title of 3 words or more, a leading sentence, its rarest words).

Example:
    >>> from rankrelay.results import Document
    >>> docs = [Document("Wing flutter at high speed. Tests in a tunnel.", "1", {}),
    ...         Document("Boundary layers on flat plates. Skin friction measured.", "2", {})]
    >>> leading_sentence(docs[0].text)
    'Wing flutter at high speed'
    >>> key_phrase(docs[1].text, {"boundary": 1, "layers": 1, "flat": 2, "plates": 2, "skin": 1, "friction": 1,
    ...                             "measured": 2}, n=3)
    'boundary layers friction'
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.evaluation.data import BeirDataset

logger = logging.getLogger(__name__)

PSEUDO_KINDS = ("title", "lead", "keyphrase")
_WORD = re.compile(r"[a-z][a-z0-9-]+")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)])[.!?](?:\s|$)")
#: a short list: key phrases must not be made of function words (BM25's own list is used for retrieval)
STOPWORDS = frozenset("""a about above after again against all also an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having here how if in into is it its itself just more most no nor not of off on once only or other our out over own
same should so some such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your obtained given using used
presented results method problem paper shown show found""".split())
LEAD_WORDS = 16


@dataclass(frozen=True, slots=True)
class QuerySet:
    """Queries to distil on (``train``: id -> text) and the queries held out to measure agreement on."""

    source: str
    train: dict[str, str]
    held_out: dict[str, str]


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without stopwords."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def leading_sentence(text: str, limit: int = LEAD_WORDS) -> str:
    """The first sentence of ``text``, at most ``limit`` words."""
    match = _SENTENCE_END.search(text)
    first = text[: match.start()] if match else text
    return " ".join(first.split()[:limit]).strip()


def key_phrase(text: str, document_frequency: dict[str, int], n: int = 5) -> str:
    """The ``n`` words of ``text`` with the highest tf-idf, in the order they first appear."""
    counts = Counter(content_words(text))
    total = max(document_frequency.values(), default=1) + 1
    weight = {w: c * math.log(total / document_frequency.get(w, 1)) for w, c in counts.items()}
    top = set(sorted(weight, key=lambda w: (-weight[w], w))[:n])
    seen: list[str] = []
    for w in content_words(text):
        if w in top and w not in seen:
            seen.append(w)
    return " ".join(seen)


def pseudo_queries(dataset: BeirDataset, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` pseudo-queries from sampled documents: ``{"pseudo-<kind>:<doc id>": text}``."""
    if n < 1:
        raise ConfigError(f"pseudo:N takes N >= 1, got {n}")
    frequency: Counter[str] = Counter()
    for doc in dataset.corpus.values():
        frequency.update(set(content_words(doc.text)))
    ids = sorted(dataset.corpus)
    random.Random(seed).shuffle(ids)
    out: dict[str, str] = {}
    turn = 0
    for doc_id in ids:
        if len(out) == n:
            break
        doc = dataset.corpus[doc_id]
        title = doc.metadata.get("title")
        body = doc.text[len(title):].strip() if isinstance(title, str) and doc.text.startswith(title) else doc.text
        kinds = {"title": title.strip() if isinstance(title, str) and len(title.split()) >= 3 else "",
                 "lead": leading_sentence(body), "keyphrase": key_phrase(body, frequency)}
        for k in range(len(PSEUDO_KINDS)):
            kind = PSEUDO_KINDS[(turn + k) % len(PSEUDO_KINDS)]
            if len(kinds[kind].split()) >= 3:
                out[f"pseudo-{kind}:{doc_id}"] = kinds[kind]
                turn += 1
                break
    if not out:
        raise InvalidInputError(f"{dataset.name}: no document has text to write a pseudo-query from")
    if len(out) < n:
        logger.warning("pseudo:%d asked, %s gives %d pseudo-queries (one a document that has text for one)", n,
                       dataset.name, len(out))
    return out


def read_capture(path: str | Path) -> dict[str, str]:
    """The distinct queries of a capture file (JSON lines with ``query``), ``{"capture:<n>": text}``."""
    file = Path(path)
    seen: dict[str, str] = {}
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                query = json.loads(line).get("query")
            except (json.JSONDecodeError, AttributeError):
                raise InvalidInputError(f"{file}:{number}: not a JSON object") from None
            if isinstance(query, str) and query.strip() and query not in seen.values():
                seen[f"capture:{len(seen) + 1}"] = query
    if not seen:
        raise InvalidInputError(f"{file} holds no captured query (was the model captured with store_text = true?)")
    return seen


def query_set(source: str, dataset: BeirDataset, *, seed: int = 0, held_out_share: float = 0.3) -> QuerySet:
    """Training and held-out queries for ``source`` (``dataset``, ``pseudo:N`` or a capture file).

    With pseudo or captured queries every dataset query is held out (judged ones where the folder has qrels);
    with ``dataset`` a seeded ``held_out_share`` of them is.
    """
    from rankrelay.hashing import unit_interval

    evaluation = {q: dataset.queries[q] for q in (dataset.judged_queries() or list(dataset.queries))}
    if source == "dataset":
        if not dataset.queries:
            raise InvalidInputError(f"{dataset.name} has no queries: use --queries pseudo:N")
        held = {q: t for q, t in evaluation.items() if unit_interval(f"{seed}:{q}") < held_out_share}
        train = {q: t for q, t in dataset.queries.items() if q not in held}
        return QuerySet(source, train, held)
    if source.startswith("pseudo:"):
        count = source.split(":", 1)[1]
        if not count.isdigit():
            raise ConfigError(f"--queries pseudo:N takes a number of queries, got {source!r}")
        return QuerySet(source, pseudo_queries(dataset, int(count), seed), evaluation)
    if Path(source).is_file():
        return QuerySet(source, read_capture(source), evaluation)
    raise ConfigError(f"--queries takes dataset, pseudo:N or a capture file; {source!r} is none of these")
