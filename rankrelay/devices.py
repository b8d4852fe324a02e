"""Device names: checked cheaply at construction, resolved (``auto``) when a model loads.

Example:
    >>> from rankrelay.devices import check_device
    >>> check_device("cuda:1")
    'cuda:1'
"""

from __future__ import annotations

import re

from rankrelay.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """Return ``device`` if it is auto, cpu, mps, cuda or cuda:N; else raise :class:`ConfigError`."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_device(device: str) -> str:
    """Turn ``auto`` into the best available device and check that an explicit one exists."""
    import torch

    check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available here")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but MPS is not available here")
    return device
