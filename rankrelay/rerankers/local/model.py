"""Shared machinery of the local (sentence-transformers) backends.

:class:`LocalModelReranker` loads its model lazily and thread-safely, plans passages for long
documents, scores each distinct (query, passage) pair once across the whole batch, and gives each
document its best passage's score (MaxP). A subclass loads a model and scores pairs.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from rankrelay.devices import check_device, cpu_signature, has_bf16_units, resolve_device
from rankrelay.errors import (
    ConfigError,
    ConversionError,
    LowAgreementError,
    ModelLoadError,
    RankRelayError,
    positive_int,
)
from rankrelay.hub import ResolvedModel, canonical_model_id, find_local, not_here, resolve_model
from rankrelay.progress import steps
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.local.auto_runtime import RuntimeChoice, choose_runtime
from rankrelay.rerankers.local.background import AutoMeasured, Measurement
from rankrelay.rerankers.local.buckets import length_buckets
from rankrelay.rerankers.local.budget import BudgetedScoring
from rankrelay.rerankers.local.passages import PassagePlanner, Pieces, check_long_documents
from rankrelay.rerankers.local.runtimes import (
    AUTO,
    Agreement,
    Forward,
    GraphForward,
    TorchForward,
    check_precision,
    check_runtime,
    compile_forward,
    default_cache_dir,
    model_fingerprint,
    torch_dtype,
)
from rankrelay.rerankers.local.score_cache import DEFAULT_SIZE, ScoreCache, open_score_cache, score_key
from rankrelay.results import Document

logger = logging.getLogger(__name__)

#: Keyword arguments passed through to the sentence-transformers model constructor.
MODEL_PASSTHROUGH = frozenset(
    {
        "backend",
        "cache_folder",
        "config_kwargs",
        "default_prompt_name",
        "local_files_only",
        "model_kwargs",
        "processor_kwargs",
        "prompts",
        "revision",
        "token",
        "tokenizer_kwargs",
        "trust_remote_code",
    }
)
#: Options every local backend takes.
LOCAL_OPTIONS = frozenset(
    {"device", "batch_size", "max_length", "normalize", "long_documents", "passage_overlap", "hub_timeout",
     "runtime", "precision", "min_agreement", "auto_measure", "cache_dir", "score_cache", "score_cache_size"}
) | MODEL_PASSTHROUGH
#: When ``runtime="auto"`` measures a model that has no stored choice on this machine: in a child process while
#: the model serves on torch (``background``), or inside the first load (``now``).
AUTO_MEASURE = ("background", "now")


_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")


def model_window(config: Any, tokenizer_limit: int | None, asked: int | None) -> int:
    """Tokens the model can take: the asked length, capped by the tokenizer and position table."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and getattr(config, "model_type", "") in _ROBERTA_LIKE:
        positions -= 2  # RoBERTa position ids start after the padding index
    limits = [x for x in (positions, tokenizer_limit if tokenizer_limit and tokenizer_limit < 10**6 else None) if x]
    cap = min(limits) if limits else 512
    if asked is not None and asked > cap:
        raise ModelLoadError(f"max_length {asked} is more than the model's {cap} positions")
    return asked or cap


def check_remote_code(location: str, model: str, options: dict[str, Any]) -> None:
    """Refuse a local model that comes with its own code (``auto_map`` in ``config.json``) unless the user passed
    ``trust_remote_code=True`` for it (for a Hub id, transformers refuses the same way before running any)."""
    config = Path(location) / "config.json"
    if options.get("trust_remote_code") or not config.is_file():
        return
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (OSError, ValueError):
        return  # the loader names what is wrong with the file
    if auto_map:
        raise ConfigError(f"{model!r} comes with its own Python code ({', '.join(sorted(auto_map))} in "
                          f"{config.name}); run it only if you trust it: pass trust_remote_code=True for this model")


class LocalModelReranker(AutoMeasured, BudgetedScoring, BaseReranker):
    """Base of the local backends; construction is cheap, :meth:`warm_up` loads the model.

    Args:
        model: Hugging Face id, alias or local path.
        device: auto, cpu, cuda, cuda:N or mps.
        batch_size: pairs (or texts) per forward pass.
        max_length: model window in tokens (default: the model's own).
        normalize: how ``normalized_score`` is filled.
        long_documents: ``passages`` (MaxP over windows), ``truncate`` (marked) or ``error``.
        passage_overlap: tokens shared by consecutive passages.
        hub_timeout: seconds to wait for the Hugging Face Hub when the model is not local.
        runtime: ``torch``, ``onnx``, ``onnx-int8``, ``openvino``, ``openvino-bf16`` or ``openvino-int8`` (see
            :mod:`rankrelay.rerankers.local.runtimes`; converted once, cached under ``cache_dir``), or ``auto``: the
            fastest of them that agrees with torch here, measured once per model and machine
            (:mod:`rankrelay.rerankers.local.auto_runtime`; :func:`~rankrelay.load_reranker`'s default).
        precision: ``fp32``, or ``fp16``/``bf16`` for the torch runtime (CUDA, or a CPU with bf16 units).
        min_agreement: top-10 overlap with torch an int8 or bf16 runtime needs on a fixed sample (0 insists).
        auto_measure: for ``runtime="auto"`` on a machine where this model was never measured: ``background`` (the
            default) serves on torch at once while a low-priority child process measures, then switches
            (:mod:`rankrelay.rerankers.local.background`; :meth:`wait_for_runtime` waits for it); ``now`` measures
            inside the first load (a minute or so).
        cache_dir: where converted models are kept (default
            :func:`~rankrelay.rerankers.local.runtimes.default_cache_dir`).
        score_cache: ``memory`` (an LRU, the default), ``off``, a directory (an on-disk store that
            processes share) or a :class:`~rankrelay.rerankers.local.score_cache.ScoreCache`.
        score_cache_size: entries of the in-memory score cache.
        **model_options: passed to sentence-transformers (``revision``, ``model_kwargs``, ...).
    """

    #: the model output a forward pass returns
    output = "scores"
    #: reads seconds for ``runtime="auto"``'s measurements (a fake clock in tests)
    clock = staticmethod(perf_counter)

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: str = "rank",
        long_documents: str = "passages",
        passage_overlap: int = 32,
        hub_timeout: float = 5.0,
        runtime: str = "torch",
        precision: str = "fp32",
        min_agreement: float = 0.9,
        auto_measure: str = "background",
        cache_dir: str | None = None,
        score_cache: str | ScoreCache | None = "memory",
        score_cache_size: int = DEFAULT_SIZE,
        **model_options: Any,
    ) -> None:
        super().__init__(normalize=normalize)
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{self.name} needs a model id or path, got {model!r}")
        unknown = set(model_options) - MODEL_PASSTHROUGH
        if unknown:
            raise ConfigError(
                f"unknown option(s) for {self.name}: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(LOCAL_OPTIONS))}"
            )
        positive_int(batch_size, "batch_size", ConfigError)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
            raise ConfigError(f"max_length must be an int >= 8 or None, got {max_length!r}")
        if not isinstance(passage_overlap, int) or passage_overlap < 0:
            raise ConfigError(f"passage_overlap must be an int >= 0, got {passage_overlap!r}")
        self.model: str = canonical_model_id(model.strip())
        self.device = check_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.long_documents = check_long_documents(long_documents)
        self.passage_overlap = passage_overlap
        self.hub_timeout = float(hub_timeout)
        self.model_options = dict(model_options)
        #: the runtime asked for (``auto`` included); :attr:`runtime` is the one in use once loaded
        self.requested_runtime = check_runtime(runtime)
        self.runtime = self.requested_runtime
        self.precision = check_precision(precision, runtime)
        #: what ``runtime="auto"`` chose and why (None for an explicit runtime)
        self.runtime_choice: RuntimeChoice | None = None
        if isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float)) \
                or not 0 <= min_agreement <= 1:
            raise ConfigError(f"min_agreement must be a number in [0, 1], got {min_agreement!r}")
        self.min_agreement = float(min_agreement)
        if auto_measure not in AUTO_MEASURE:
            raise ConfigError(f"auto_measure must be one of {', '.join(AUTO_MEASURE)}, got {auto_measure!r}")
        self.auto_measure = auto_measure
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.score_cache = open_score_cache(score_cache, size=score_cache_size)
        self._reset_loaded()

    #: what a loaded reranker holds beside its settings: a copy (pickle, as the background measurement sends it to
    #: its child process) has its settings only, and loads again
    _loaded_state: tuple[str, ...] = ("agreement", "_forward", "_identity", "_encoder", "_planner", "_lock",
                                      "_score_lock", "_measurement", "_fingerprint", "score_cache")

    def _reset_loaded(self) -> None:
        #: how the runtime agreed with torch on the fixed sample when it was converted (None on torch)
        self.agreement: Agreement | None = None
        self._forward: Forward | None = None
        self._identity = ""
        self._encoder: Any = None
        self._planner: PassagePlanner | None = None
        self._lock = threading.Lock()
        # One scoring pass at a time: torch already uses every core for one pass, and Hugging Face
        # fast tokenizers raise "Already borrowed" when two threads use them at once.
        self._score_lock = threading.RLock()
        self._measurement: Measurement | None = None
        self._fingerprint = ""  # the model files' fingerprint, once loaded

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._loaded_state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.score_cache = None
        self._reset_loaded()

    # -- loading ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Find and load the model now (raises :class:`ModelNotFoundError` quickly when it cannot)."""
        if self._encoder is not None:
            return
        with self._lock:
            if self._encoder is not None:
                return
            opts = self.model_options
            resolved = resolve_model(
                self.model,
                cache_folder=opts.get("cache_folder"),
                revision=opts.get("revision"),
                token=opts.get("token"),
                timeout=self.hub_timeout,
            )
            kwargs = dict(opts)
            if resolved.local:
                kwargs["local_files_only"] = True
            check_remote_code(resolved.location, self.model, opts)
            device = resolve_device(self.device)
            start = perf_counter()
            try:
                encoder = self._load(resolved, device, kwargs)
            except RankRelayError:
                raise
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load {self.name} model {self.model!r} from {resolved.location}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            planner = self._make_planner(encoder)
            local = resolved if resolved.local else find_local(self.model, cache_folder=opts.get("cache_folder"))
            location = local.location if local is not None else resolved.location
            fingerprint = model_fingerprint(location)
            measure_later = False
            if self.requested_runtime == AUTO:
                choice = self._choose_runtime(encoder, fingerprint, device, planner.max_length,
                                              measure=self.auto_measure == "now")
                if choice is None:  # never measured here: serve on torch, measure off the request path
                    measure_later, self.runtime, self.precision = True, "torch", "fp32"
                else:
                    self.runtime_choice = choice
                    self.runtime, self.precision = choice.runtime, choice.precision
            if self.precision != "fp32":
                if device == "cpu" and not (self.precision == "bf16" and has_bf16_units(cpu_signature())):
                    logger.warning("%s on this CPU is usually slower than fp32 (no %s units); try runtime='auto'",
                                   self.precision, self.precision)
                encoder.to(torch_dtype(self.precision))
            try:
                self._forward, self.agreement = self._compile(encoder, fingerprint)
            except (ConversionError, LowAgreementError) as exc:
                if self.requested_runtime != AUTO:
                    raise
                logger.warning("runtime='auto' chose %s %s for %s, which cannot be used now (%s); serving on torch "
                               "fp32", self.runtime, self.precision, self.model, exc)
                if self.precision != "fp32":
                    encoder.to(torch_dtype("fp32"))
                self.runtime, self.precision = "torch", "fp32"
                self._forward, self.agreement = TorchForward(encoder, self.output), None
            self._identity = self.identity_of(fingerprint, planner)
            self._planner = planner
            self._encoder = encoder
            self._fingerprint = fingerprint
            logger.info(
                "loaded %s %s from %s (%s) on %s (%s) in %.0f ms",
                self.name, self.model, resolved.location, resolved.source, device, self.runtime,
                (perf_counter() - start) * 1000,
            )
            if measure_later:
                self._measurement = Measurement(self, on_choice=self._switch_runtime)
                self._measurement.start()

    def unavailable_reason(self) -> str | None:
        """Why this model cannot load here, by cheap checks (what is on disk, no network, nothing loaded); None
        when it can, or may (a download at first use). :meth:`warm_up` is the full check."""
        if self.loaded:
            return None
        return not_here(self.model, cache_folder=self.model_options.get("cache_folder"),
                        revision=self.model_options.get("revision"))

    @property
    def loaded(self) -> bool:
        """True once :meth:`warm_up` has loaded the model."""
        return self._encoder is not None

    def identity_of(self, fingerprint: str, planner: PassagePlanner) -> str:
        """What the score cache keys this model's scores by: its files, runtime, precision and window."""
        return f"{self.name}|{fingerprint}|{self.runtime}|{self.precision}|{planner.max_length}"

    @property
    def encoder(self) -> Any:
        """The loaded sentence-transformers model (loads it on first use)."""
        self.warm_up()
        return self._encoder

    @property
    def window(self) -> int:
        """The model's window in tokens, as used for passage planning."""
        self.warm_up()
        assert self._planner is not None
        return self._planner.max_length

    @abstractmethod
    def _load(self, resolved: ResolvedModel, device: str, kwargs: dict[str, Any]) -> Any:
        """Build the sentence-transformers model."""

    @abstractmethod
    def _sample_inputs(self) -> list[Any]:
        """Inputs (pairs or texts) of the fixed sample, in the order :meth:`_sample_scores` reads."""

    @abstractmethod
    def _sample_scores(self, encoder: Any, forward: Forward) -> Any:
        """Scores (queries x documents) of the fixed sample through ``forward``."""

    def _timing_scores(self, encoder: Any, forward: Forward) -> Any:
        """What a runtime's speed is timed on (default: the fixed sample; the pair models read passages of the
        lengths a reranker sees, :func:`~rankrelay.rerankers.local.sample.timing_pairs`)."""
        return self._sample_scores(encoder, forward)

    def _choose_runtime(self, encoder: Any, fingerprint: str, device: str,
                        window: int, measure: bool = True) -> RuntimeChoice | None:
        """``runtime="auto"``: measure this machine's runtimes on the fixed sample once (then read the choice);
        with ``measure=False`` only read it (None when there is none)."""

        reference = TorchForward(encoder, self.output)
        known: list[Any] = []  # torch fp32's scores of the sample, once measured: each conversion compares with them

        def forward(runtime: str, precision: str) -> Forward:
            if precision != "fp32":  # torch in bf16: a copy, so that the fp32 model stays the reference
                import copy

                return TorchForward(copy.deepcopy(encoder).to(torch_dtype(precision)), self.output)
            if runtime == "torch":
                return reference
            return self._compile(encoder, fingerprint, runtime, min_agreement=0.0,  # judged below
                                 reference=(lambda: known[-1]) if known else None)[0]

        def sample(fwd: Forward) -> Any:
            scores = self._sample_scores(encoder, fwd)
            if fwd is reference:
                known.append(scores)
            return scores

        return choose_runtime(label=self.model, fingerprint=f"{fingerprint}|window={window}", device=device,
                              cache_dir=self.cache_dir, min_agreement=self.min_agreement, forward=forward,
                              sample=sample, timing=lambda fwd: self._timing_scores(encoder, fwd), clock=self.clock,
                              measure=measure)

    def _compile(self, encoder: Any, fingerprint: str, runtime: str | None = None,
                 min_agreement: float | None = None, reference: Any = None) -> tuple[Forward, Agreement | None]:
        """The forward pass on ``runtime`` (default: this reranker's), converted and checked once, then cached."""
        runtime = runtime or self.runtime
        inputs = self._sample_inputs()

        def calibration() -> list[dict[str, Any]]:  # tokenized sample batches, built only for int8 quantizing
            step = max(1, len(inputs) // 8)
            return [
                {k: v.numpy() for k, v in encoder.preprocess(inputs[i : i + step]).items() if hasattr(v, "numpy")}
                for i in range(0, len(inputs), step)
            ]

        return compile_forward(
            encoder, runtime=runtime, output=self.output, fingerprint=fingerprint, label=self.model,
            cache_dir=self.cache_dir, sample=lambda forward: self._sample_scores(encoder, forward),
            example=encoder.preprocess(inputs[:2]), calibration=calibration,
            min_agreement=self.min_agreement if min_agreement is None else min_agreement, reference=reference,
        )

    def _forward_batches(
        self, inputs: list[Any], lengths: list[int], forward: Forward | None = None, progress: bool = False,
        encoder: Any = None,
    ) -> list[Any]:
        """Run ``inputs`` through the forward pass in length buckets; one output row per input, in order.

        ``forward`` and ``encoder`` default to the loaded ones (they are given while converting).
        """
        encoder = encoder or self._encoder
        forward = forward or self._forward
        assert encoder is not None and forward is not None
        rows: list[Any] = [None] * len(inputs)
        batches = length_buckets(lengths, self.batch_size)
        # each batch is counted as it is done (not all at once before the first one runs)
        for batch in steps(batches, f"{self.name} ({self.runtime})") if progress else batches:
            out = forward(encoder.preprocess([inputs[i] for i in batch]))
            for i, row in zip(batch, out):
                rows[i] = row
        return rows

    @abstractmethod
    def _make_planner(self, encoder: Any) -> PassagePlanner:
        """The passage planner for this model's tokenizer and window."""

    @abstractmethod
    def _score_pairs(self, pairs: list[tuple[str, str]]) -> Sequence[float]:
        """Raw scores of (query, passage) pairs."""

    # -- scoring ---------------------------------------------------------------------------
    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        self.warm_up()
        with self._score_lock:
            return self._score_locked(queries, documents)

    def plan_passages(self, query: str, texts: Sequence[str]) -> list[Pieces]:
        """The character spans this reranker scores for each text (one span when it fits)."""
        self.warm_up()
        assert self._planner is not None
        with self._score_lock:
            return self._planner.plan(query, texts)

    def _score_locked(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        planner = self._planner
        assert planner is not None
        start = perf_counter()
        pair_index: dict[tuple[str, str], int] = {}
        plans: list[list[Pieces]] = []
        slots: list[list[list[int]]] = []
        for query, docs in zip(queries, documents):
            texts = [d.text for d in docs]
            pieces = planner.plan(query, texts)
            plans.append(pieces)
            slots.append(
                [
                    [pair_index.setdefault((query, text[a:b]), len(pair_index)) for a, b in p.spans]
                    for text, p in zip(texts, pieces)
                ]
            )
        model_start = perf_counter()
        raw, hit = self._cached_scores(list(pair_index))
        model_ms = (perf_counter() - model_start) * 1000.0
        out = []
        for pieces, doc_slots in zip(plans, slots):
            scores, passages, truncated = [], [], []
            for p, idx in zip(pieces, doc_slots):
                best = max(range(len(idx)), key=lambda j: raw[idx[j]])
                scores.append(float(raw[idx[best]]))
                passages.append(p.spans[best] if p.split else None)
                truncated.append(p.truncated)
            info = None
            if self.score_cache is not None:
                distinct = {i for idx in doc_slots for i in idx}
                hits = sum(hit[i] for i in distinct)
                info = {"score_cache": {"hits": hits, "misses": len(distinct) - hits}}
            out.append(Scored(scores, passages, truncated, info))
        prepare_ms = (model_start - start) * 1000.0
        return out, {"model": model_ms, "prepare": prepare_ms}

    def _cached_scores(self, pairs: list[tuple[str, str]]) -> tuple[list[float], list[bool]]:
        """Raw scores of distinct pairs, from the score cache where it has them; and which were hits."""
        if self.score_cache is None or not pairs:
            return list(self._score_pairs(pairs)) if pairs else [], [False] * len(pairs)
        keys = [score_key(self._identity, q, p) for q, p in pairs]
        found = self.score_cache.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        scores = [found.get(k, 0.0) for k in keys]
        if missing:
            fresh = self._score_pairs([pairs[i] for i in missing])
            for i, score in zip(missing, fresh):
                scores[i] = float(score)
            self.score_cache.put_many({keys[i]: scores[i] for i in missing})
        missed = set(missing)
        return scores, [i not in missed for i in range(len(pairs))]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "runtime": self.runtime,
            "precision": self.precision,
            **({"runtime_choice": self.runtime_choice.reason} if self.runtime_choice is not None else {}),
            "device": self.device,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "long_documents": self.long_documents,
            **({"graph": self._forward.settings} if isinstance(self._forward, GraphForward) else {}),
        }

