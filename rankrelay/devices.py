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


#: CPU flags that decide which arithmetic is fast (int8 dot products, bf16 units, wide vectors).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_signature(cpuinfo: str | None = None) -> dict[str, object]:
    """The CPU model and the flags of :data:`SPEED_FLAGS` it has (from ``/proc/cpuinfo`` on Linux; elsewhere
    the platform's processor name and no flags): what a speed measurement holds for.

    Example:
        >>> cpu_signature("model name\\t: AMD EPYC 9R14\\nflags\\t\\t: fpu avx2 avx512f avx512_bf16\\n")["flags"]
        ['avx2', 'avx512_bf16', 'avx512f']
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "machine": platform.machine(), "flags": sorted(flags & set(SPEED_FLAGS))}


def has_bf16_units(cpu: dict[str, object]) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 may be faster than fp32."""
    return _has_any(cpu, {"avx512_bf16", "amx_bf16"})


def has_int8_units(cpu: dict[str, object]) -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI, AVX-VNNI or AMX), so int8 may be faster than fp32
    (without them an int8 dot product takes three instructions and gains nothing on a transformer)."""
    return _has_any(cpu, {"avx512_vnni", "avx_vnni", "amx_int8"})


def _has_any(cpu: dict[str, object], wanted: set[str]) -> bool:
    flags = cpu.get("flags")
    return isinstance(flags, list) and bool(wanted & set(flags))
