"""rankrelay past one machine, on Ray: batch reranking on Ray Data (:mod:`rankrelay.distributed.data`).

Ray starts on this machine when ``RAY_ADDRESS`` is not set (the default stays local) and joins that
cluster when it is; an address that cannot be reached fails within seconds, naming it.

Example:
    >>> from rankrelay.distributed import ray_address
    >>> ray_address({"RAY_ADDRESS": "ray://head:10001"})
    'ray://head:10001'
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from rankrelay._optional import import_optional
from rankrelay.errors import BackendUnavailableError

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5.0


def ray_module() -> Any:
    """``ray``, or a :class:`MissingDependencyError` naming ``rankrelay[ray]``."""
    return import_optional("ray", extra="ray", feature="running on Ray", package="ray")


def ray_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster to join: ``RAY_ADDRESS`` when set (None: start Ray on this machine)."""
    value = (os.environ if environ is None else environ).get("RAY_ADDRESS", "").strip()
    return value or None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, naming ``address``, when nothing answers there (``auto`` and
    ``local`` are Ray's own words for this machine and are left to Ray)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            pass
    except OSError as exc:
        raise BackendUnavailableError(f"the Ray cluster at {address} cannot be reached: {exc}",
                                      backend="ray") from None


def use_threads(threads: int) -> None:
    """Give torch ``threads`` threads in this process (a Ray actor or replica gets its share of the CPUs)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, threads))


def start_ray(num_cpus: int | None = None, address: str | None = None) -> Any:
    """Connect to (or start) Ray once per process; returns the ``ray`` module."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    address = address or ray_address()
    if address is not None:
        check_reachable(address)
        ray.init(address=address, log_to_driver=False)
        logger.info("joined the Ray cluster at %s", address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        logger.info("started Ray on this machine (%s CPUs)", ray.cluster_resources().get("CPU"))
    return ray
