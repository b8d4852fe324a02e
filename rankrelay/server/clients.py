"""Client keys: each application that calls the service has keys of its own, the models it may call and a rate.

A key is known by its SHA-256 (``key_sha256`` in the file, or ``key_env`` naming a variable that holds it), so
the configuration holds no key. A request's token is hashed once and compared with every client's digests in
constant time (no early exit, and a wrong key is told only that it is wrong); ``api_keys`` stay what they were,
an admin client that may call every model with no rate. A client over its ``rpm`` (requests in any 60 s, kept
in the process or in the shared Redis state, so replicas count together) is answered 429 with a Retry-After.

Example:
    >>> import hashlib
    >>> from rankrelay.server.clients import clients_from_settings
    >>> digest = hashlib.sha256(b"search-app-key").hexdigest()
    >>> (app,) = clients_from_settings({"search-app": {"key_sha256": digest, "models": ["fast"], "rpm": 600}},
    ...                                served=["fast", "slow"])
    >>> app.name, sorted(app.models), app.rpm
    ('search-app', ['fast'], 600)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rankrelay.config import ClientSettings
from rankrelay.errors import ConfigError
from rankrelay.server.usage import Budget

#: The admin client: the ``api_keys`` of ``[service]``, every model, no rate.
ADMIN = "admin"
#: Whom a request is counted under when the service has no keys.
ANONYMOUS = "anonymous"
#: The client a request is from while it is served (set by the service's key check; None without keys).
CURRENT_CLIENT: ContextVar[Client | None] = ContextVar("rankrelay_client", default=None)
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Client:
    """A client of the service: its name, its keys' SHA-256 digests, the served names it may call (None: every
    one), its requests a minute (None: no limit) and its budget on priced models (None: none)."""

    name: str
    digests: tuple[bytes, ...]
    models: frozenset[str] | None = None
    rpm: int | None = None
    budget: Budget | None = None

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models


def _keys(name: str, config: ClientSettings) -> tuple[bytes, ...]:
    digests = []
    for i, digest in enumerate(config.key_sha256):
        if not _HEX.fullmatch(digest.strip().lower()):
            raise ConfigError(f"clients.{name}.key_sha256[{i}]: not a hex SHA-256 (64 hex digits): "
                              f"write `printf %s KEY | sha256sum`'s digest, never the key")
        digests.append(bytes.fromhex(digest.strip()))
    for variable in config.key_env:
        key = os.environ.get(variable, "")
        if not key.strip():
            raise ConfigError(f"clients.{name}.key_env: ${variable} is unset or blank")
        if key != key.strip():
            raise ConfigError(f"clients.{name}.key_env: ${variable} has leading or trailing whitespace, which no "
                              "Authorization header can carry")
        digests.append(hashlib.sha256(key.encode("utf-8")).digest())
    if not digests:
        raise ConfigError(f"clients.{name}: no key (key_sha256 or key_env)")
    return tuple(digests)


def clients_from_settings(clients: Mapping[str, ClientSettings | Mapping[str, Any]],
                          served: Collection[str]) -> list[Client]:
    """The configured clients, checked: each has a key, every model it names is served, no key is two clients'.

    Raises:
        ConfigError: naming the client and the field.
    """
    out: list[Client] = []
    owner: dict[bytes, str] = {}
    for name, given in clients.items():
        if name == ADMIN:
            raise ConfigError(f"clients.{ADMIN}: the name is the api_keys' (the admin client); choose another")
        try:
            config = given if isinstance(given, ClientSettings) else ClientSettings.model_validate(given)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"clients.{name}.{'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None
        unknown = [m for m in config.models or [] if m not in served]
        if unknown:
            raise ConfigError(f"clients.{name}.models: {', '.join(map(repr, unknown))} not served here; served: "
                              f"{', '.join(served)}")
        digests = _keys(name, config)
        for digest in digests:
            if owner.setdefault(digest, name) != name:
                raise ConfigError(f"clients.{name}: one of its keys is also client {owner[digest]!r}'s: a key names "
                                  "one client")
        budget = None if config.budget is None else Budget(config.budget.usd, config.budget.per)
        out.append(Client(name, digests, None if config.models is None else frozenset(config.models), config.rpm,
                          budget))
    return out


def check_budgets(clients: Sequence[Client], served: Sequence[str], priced: Collection[str]) -> None:
    """Refuse a budget on a client none of whose models (``served`` when it names none) is ``priced``.

    Raises:
        ConfigError: naming the client's ``budget``.
    """
    for client in clients:
        names = [m for m in served if client.may_call(m)]
        if client.budget is not None and not any(m in priced for m in names):
            raise ConfigError(f"clients.{client.name}.budget: none of its models is priced ({', '.join(names)}): "
                              "a budget counts dollars of priced models; price their backends under model_prices")


class ClientKeys:
    """Who a token is: the admin keys compared as bytes, the clients' by their SHA-256, every one in constant time."""

    def __init__(self, admin: Sequence[bytes], clients: Sequence[Client]) -> None:
        self.admin = list(admin)
        self.clients = list(clients)
        self.admin_client = Client(ADMIN, ())

    def __bool__(self) -> bool:
        return bool(self.admin or self.clients)

    def identify(self, token: bytes) -> Client | None:
        """The client whose key ``token`` is, or None."""
        digest = hashlib.sha256(token).digest()
        found = None
        for key in self.admin:  # every key compared: no early exit
            if hmac.compare_digest(token, key):
                found = self.admin_client
        for client in self.clients:
            for known in client.digests:
                if hmac.compare_digest(digest, known):
                    found = client
        return found
