"""Session fixtures: tiny models built at test time (no downloads), loaded by path."""

from __future__ import annotations

import json
import logging
import os
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach the network: the Hub is off unless a test turns it on on purpose.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # Haystack sends usage events unless told not to
# Local models run on torch unless a test asks for runtime='auto' (the default would measure every runtime of every
# tiny model a test builds: minutes); set here for module-scoped fixtures too.
# tests/rerankers/local/test_auto_runtime.py covers auto.
os.environ["RANKRELAY_RUNTIME"] = "torch"

#: under CI=true (set by .ci/run), a test whose real part (Ray, Chromium, PostgreSQL) is missing fails instead of
#: skipping: a green run never hides a part that was not tested
IN_CI = os.environ.get("CI", "").lower() == "true"


#: a skip whose reason names the make target that runs the test instead (``make test-cohere5``) is allowed in CI
RUNS_ELSEWHERE = "is installed by `make "


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_skips_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI=true a skip (``importorskip`` of a missing extra, a ``skip`` call) is a failure, unless its reason
    names the make target that runs the test: a green CI never hides a test that did not run."""
    if IN_CI and report.skipped and RUNS_ELSEWHERE not in (reason := _skip_reason(report)):
        report.outcome = "failed"
        report.longrepr = f"CI runs every test, but this one skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


def require(ok: object, missing: str) -> None:
    """Skip the test when ``ok`` is false, saying what is ``missing``; under CI=true that is a failure."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI runs this test, but {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(autouse=True)
def _logging_as_a_fresh_process_has_it():
    """Each test starts with rankrelay's loggers enabled at no level of their own and no process-wide
    logging.disable (a library's dictConfig, a level a command set, or a disable() in another test's thread would
    otherwise hide the warnings a test asserts)."""
    logging.disable(logging.NOTSET)
    for name, found in list(logging.root.manager.loggerDict.items()):
        if name.startswith("rankrelay") and isinstance(found, logging.Logger):
            found.disabled = False
            found.setLevel(logging.NOTSET)
    yield


def raises_exactly(kind: type[BaseException], message: str):  # type: ignore[no-untyped-def]
    """``pytest.raises`` of ``kind`` whose message is ``message``, all of it: an error names the problem in full."""
    import re

    return pytest.raises(kind, match=f"^{re.escape(message)}$")


def finishes(call, within: float = 60.0):
    """A hang guard, not a speed claim: run ``call`` on a thread and fail if it has not returned (or
    raised) within a generous ``within`` seconds; returns its value or re-raises its exception."""
    import threading

    box: dict = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        pytest.fail(f"hung: {call} did not finish within {within:g} s", pytrace=False)
    if "error" in box:
        raise box["error"]
    return box.get("value")


WORDS = (
    "the a an of and to in is are for on with what how does why when where which who stall wing lift "
    "flow air angle attack pressure boundary layer separation bm25 score scores document documents query "
    "python sort stable order list term frequency length paris france capital berlin germany cat dog"
).split()
MAX_LEN = 64


def _bert_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits) + list(".,;:!?'\"()-")
    return specials + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + WORDS


def build_bert_cross_encoder(path: Path, *, num_labels: int = 1, seed: int = 0) -> Path:
    """A 2-layer BERT cross-encoder with a real WordPiece vocabulary, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = _bert_vocab()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=MAX_LEN)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LEN, num_labels=num_labels,
        initializer_range=0.5,  # wide weights: scores spread out instead of all near 0
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_xlmr_cross_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer XLM-RoBERTa cross-encoder with a Unigram (sentencepiece-style) vocabulary."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0) for w in WORDS]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.digits + ".,;:!?'\"()-"]
    pieces += [("\u2581" + c, -6.0) for c in string.ascii_lowercase + string.digits]
    pieces += [("\u2581", -8.0), ("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=pieces, model_max_length=MAX_LEN)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LEN + 2, num_labels=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, type_vocab_size=1, initializer_range=0.5,
    )
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_bi_encoder(path: Path, seed: int = 0) -> Path:
    """A tiny BERT sentence-transformer (mean pooling), saved to ``path``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    raw = path / "raw"
    vocab = _bert_vocab()
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=MAX_LEN).save_pretrained(raw)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=MAX_LEN, initializer_range=0.5,
    )
    BertModel(config).save_pretrained(raw)
    model = SentenceTransformer(str(raw), device="cpu")
    model.save(str(path / "st"))
    return path / "st"


@pytest.fixture(scope="session")
def tiny_ce_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert-ce")))


@pytest.fixture(scope="session")
def tiny_ce2_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A two-label (softmax-style) cross-encoder."""
    return str(build_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert-ce2"), num_labels=2, seed=1))


@pytest.fixture(scope="session")
def tiny_xlmr_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_xlmr_cross_encoder(tmp_path_factory.mktemp("tiny-xlmr-ce")))


@pytest.fixture(scope="session")
def tiny_bi_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_bi_encoder(tmp_path_factory.mktemp("tiny-bi")))


@pytest.fixture(scope="session")
def tiny_ce(tiny_ce_path: str):
    """A warmed-up cross-encoder reranker on the tiny BERT model (shared: do not mutate)."""
    from rankrelay import load_reranker

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", batch_size=8)
    rr.warm_up()
    return rr


@pytest.fixture(scope="session")
def raw_ce(tiny_ce_path: str):
    """The same tiny model through sentence-transformers directly: the reference scores."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(tiny_ce_path, device="cpu", activation_fn=torch.nn.Identity())

    def predict(pairs):
        return [float(s) for s in model.predict(pairs, show_progress_bar=False)]

    predict.model = model
    return predict


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One folder of converted graphs for the session: a tiny model is converted to each runtime once."""
    return str(tmp_path_factory.mktemp("runtime-cache"))


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RANKRELAY_* from the caller's shell, and no stray .env in the working directory."""
    for key in list(os.environ):
        if key.startswith("RANKRELAY_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RANKRELAY_RUNTIME", "torch")  # see the top of this file
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_api():
    """A real local rerank API server (rankrelay.testing.FakeRerankAPI), stopped after the test."""
    from rankrelay.testing import FakeRerankAPI

    server = FakeRerankAPI().start()
    yield server
    server.stop()


@pytest.fixture
def fake_chat():
    """A real local OpenAI-compatible chat server (rankrelay.testing.FakeChatAPI), stopped after the test."""
    from rankrelay.testing import FakeChatAPI

    server = FakeChatAPI().start()
    yield server
    server.stop()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    from rankrelay.testing import refused_url as url

    return url()


@pytest.fixture(scope="session")
def tiny_embedder(tiny_bi_path):
    """The tiny bi-encoder as a sentence-transformers model (the vector stores' embeddings)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_bi_path, device="cpu")


@pytest.fixture
def failing_chain(fake_api, tiny_ce_path):
    """A fallback chain: TEI on a server that answers 503 (one attempt), then the tiny cross-encoder."""
    from rankrelay.testing import API_KEY, Fault

    fake_api.faults = [Fault("status", 503) for _ in range(50)]
    return [{"spec": f"tei:{fake_api.url}", "api_key": API_KEY, "max_attempts": 1},
            f"cross-encoder:{tiny_ce_path}"]


def write_corpus_and_queries(folder, texts, queries):
    """A BEIR folder without judgments: ``texts`` as documents d0, d1, ... and ``queries`` (id -> text)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                                 for i, t in enumerate(texts)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                  for q, t in queries.items()))
    return folder


N_QUERIES = 12  # queries of the `beir` fixture


@pytest.fixture
def beir(tmp_path):
    """12 queries x 10 candidates; two relevant documents per query (grades 2 and 1); the fixed first stage is
    written beside it as cands.trec."""
    from rankrelay.evaluation import write_trec

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels, run = [], [], ["query-id\tcorpus-id\tscore"], {}
    for q in range(N_QUERIES):
        queries.append({"_id": f"q{q}", "text": f"topic{q} question"})
        ids = [f"q{q}d{i}" for i in range(10)]
        for i, d in enumerate(ids):
            corpus.append({"_id": d, "title": "", "text": f"document {i} about topic{q}"})
        qrels += [f"q{q}\t{ids[7]}\t2", f"q{q}\t{ids[4]}\t1"]
        run[f"q{q}"] = [(d, float(10 - i)) for i, d in enumerate(ids)]  # relevant ones sit at ranks 5 and 8
    (folder / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    write_trec(tmp_path / "cands.trec", run, "fixed")
    return folder


def _postgres_bin() -> Path | None:
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's binaries; as the ``postgres`` user when the tests run
    as root) that a test may stop, start and restart, and whose connections it may terminate."""

    def __init__(self) -> None:
        import getpass
        import importlib.util
        import pwd
        import socket
        import tempfile

        binaries = _postgres_bin()
        require(binaries, "PostgreSQL is not installed (run `make postgres` as root)")
        require(importlib.util.find_spec("psycopg"), "psycopg is not installed (pip install 'rankrelay[postgres]')")
        assert binaries is not None
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="rankrelay-pg-"))  # not under pytest's root-only folders
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            account = pwd.getpwnam("postgres")  # the Debian package's user
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
        else:
            self.user = getpass.getuser()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.data = self.folder / "data"
        self._ctl("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _ctl(self, program: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self.run_as, str(self.binaries / program), *args], check=True, capture_output=True)

    def start(self) -> None:
        self._ctl("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every other connection (what a failover or an operator does)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchall()
        return len(rows)

    def database(self, name: str) -> str:
        """A new database ``name`` on this server; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        import shutil
        import subprocess

        subprocess.run([*self.run_as, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on 127.0.0.1 for this test session (see :class:`PostgresServer`)."""
    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def postgres_server():
    """A PostgreSQL server of this test's own, which it may restart (see :class:`PostgresServer`)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


class RedisServer:
    """A throwaway Redis server on 127.0.0.1 (Debian's ``redis-server``, or ``valkey-server``; nothing kept on
    disk) that a test may stop and start again (empty, as a restarted cache is)."""

    def __init__(self, password: str | None = None) -> None:
        import importlib.util
        import shutil
        import socket
        import tempfile

        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        require(binary, "Redis is not installed (run `make redis` as root)")
        require(importlib.util.find_spec("redis"), "the redis client is not installed (pip install 'rankrelay[redis]')")
        self.binary, self.password = binary, password
        self.folder = Path(tempfile.mkdtemp(prefix="rankrelay-redis-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process: Any = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess

        import redis

        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)] + (["--requirepass", self.password] if self.password else [])
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def close(self) -> None:
        import shutil

        if self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def redis_server():
    """A Redis server of this test's own, which it may stop and start (see :class:`RedisServer`)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    import subprocess

    """A folder on a real 2 MiB tmpfs (mounted for this test; root is needed), or, where mounting is not
    allowed, a folder whose writes fail with ENOSPC once :func:`fill` is called (the OS error at the file layer)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        require(False, "a tmpfs cannot be mounted here (the full-disk tests need root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)




@pytest.fixture(scope="session")
def spans():
    """The global tracer provider (an SDK one, set once per process) and an in-memory exporter; clear it per test."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def unaccepting():
    """A loopback port whose accept queue is full: a new connection is never accepted (its SYNs are dropped) until
    the port closes, 3 s on at the latest (then it is refused)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (closed.wait(3.0), server.close()), daemon=True)
    closer.start()
    yield port
    closed.set()
    closer.join()
    for filler in fillers:
        filler.close()
