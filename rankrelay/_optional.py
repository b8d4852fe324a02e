"""Import optional dependencies with an error that names the extra to install.

Example:
    >>> from rankrelay._optional import import_optional
    >>> import_optional("json", extra="none", feature="the json module").__name__
    'json'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rankrelay.errors import MissingDependencyError


def import_optional(module: str, *, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``rankrelay[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependencyError(package or module, extra, feature) from None
