"""What each client called and what it cost, and the clients' budgets.

A backend is *priced* when its ``name:model`` (``cohere:rerank-v3.5``, ``bedrock:amazon.rerank-v1:0``) matches a
pattern of the price table: dollars per billed unit, the user's ``model_prices`` first, then :data:`LIST_PRICES`
(only what a provider's own page states for every region: Cohere's $2 per 1,000 searches; Bedrock and Vertex
prices differ by region and contract, so a team writes its own). A served model is priced when one of its
backends is (an experiment when one of its arms is).

Each answered request adds, under its client, served model and deployment (the pool's, else ``""``), one
request, its documents, the units the provider billed (where a reply reports none, its unit rule: one search or
query per 100 documents) and their price. A client's ``budget`` is dollars a UTC day, month or in total: before a
request to a priced model, the most it can cost is reserved, atomically, so neither concurrent requests nor
replicas sharing the state overshoot; the reservation is settled at the real cost when the answer comes (a local
fallback's answer costs nothing) and given back when none does. Unpriced models stay callable over budget.

Example:
    >>> from rankrelay.server.usage import Budget, Prices, Usage
    >>> usage = Usage(Prices({"cohere:*": {"search_units": 0.002}}), clock=lambda: 0.0)
    >>> hold = usage.reserve("app", Budget(usd=0.004), ["cohere:rerank-v3.5"], documents=150)
    >>> hold.micro_usd  # two searches: a search is up to 100 documents
    4000
    >>> usage.settle(hold, model="cohere", deployment="", documents=150, backend="cohere:rerank-v3.5",
    ...              billed={"search_units": 1})
    >>> usage.spent("app", Budget(usd=0.004)), usage.report()["rows"][0]["cost_usd"]
    (0.002, 0.002)
"""

from __future__ import annotations

import calendar
import fnmatch
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rankrelay.billing import price
from rankrelay.errors import ConfigError, RankRelayError

#: Published list prices, dollars per billed unit, the same in every region (a user's table overrides).
LIST_PRICES: dict[str, dict[str, float]] = {
    "cohere:*": {"search_units": 0.002},
    "cohere-http:rerank-*": {"search_units": 0.002},
}
#: Units billed per started 100 documents of one query (Cohere's search unit, Bedrock's and Vertex's query).
PER_100_DOCUMENTS = ("search_units", "queries")
MICRO = 1_000_000
HOUR_S = 3600
#: How long usage rows are kept, in hours (90 days).
KEEP_HOURS = 90 * 24
#: The counters of a usage row, beside its billed units.
COUNTS = ("requests", "documents", "cost_usd")


class OverBudgetError(RankRelayError):
    """A client's budget cannot cover a request to a priced model; ``retry_after`` is the seconds until its
    period starts again (None for a total budget)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Budget:
    """Dollars a client may spend on priced models each UTC ``day``, ``month`` or in ``total``."""

    usd: float
    per: Literal["day", "month", "total"] = "day"

    def period(self, now: float) -> tuple[str, float | None]:
        """The period ``now`` (epoch seconds) falls in, and the seconds until the next one starts (None: total)."""
        t = time.gmtime(now)
        if self.per == "total":
            return "total", None
        if self.per == "day":
            start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
            return time.strftime("%Y-%m-%d", t), start + 86_400 - now
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return time.strftime("%Y-%m", t), calendar.timegm((year, month, 1, 0, 0, 0)) - now


class Prices:
    """Dollars per billed unit of each backend, by ``name:model`` pattern: ``given`` first, then the list prices."""

    def __init__(self, given: Mapping[str, Mapping[str, float]] | None = None, list_prices: bool = True) -> None:
        table = {**(LIST_PRICES if list_prices else {})}
        for pattern, units in (given or {}).items():
            bad = [u for u, usd in units.items() if not isinstance(usd, (int, float)) or not usd >= 0]
            if not units or bad:
                raise ConfigError(f"model_prices.{pattern}: give dollars (0 or more) per billed unit, e.g. "
                                  f"{{search_units = 0.002}}, got {dict(units)!r}")
        self.table = [*((p, dict(u)) for p, u in (given or {}).items()), *table.items()]
        self._matched: dict[str, dict[str, float]] = {}  # by backend: a service's are few and fixed

    def of(self, backend: str) -> dict[str, float]:
        """The prices of ``backend`` (``name:model``): the first pattern it matches; ``{}`` when unpriced."""
        if backend not in self._matched:
            self._matched[backend] = next((units for pattern, units in self.table
                                           if fnmatch.fnmatchcase(backend, pattern)), {})
        return self._matched[backend]

    def units(self, backend: str, billed: Mapping[str, float], documents: int) -> dict[str, float]:
        """The units an answer of ``backend`` is billed: those it reports, or where it reports none of its priced
        units, what their rule says for ``documents`` (a unit per started 100)."""
        prices = self.of(backend)
        if prices and not any(unit in billed for unit in prices):
            return self.estimate(backend, documents)
        return dict(billed)

    def cost(self, backend: str, billed: Mapping[str, float], documents: int) -> float:
        """Dollars for an answer of ``backend`` (its :meth:`units` at its prices; unpriced: 0)."""
        return price(self.units(backend, billed, documents), self.of(backend))

    def estimate(self, backend: str, documents: int) -> dict[str, float]:
        """The units a request of ``documents`` is billed where the unit is counted per 100 documents."""
        return {unit: float(math.ceil(documents / 100)) for unit in self.of(backend) if unit in PER_100_DOCUMENTS}


class LocalUsageStore:
    """Usage rows by hour, and spend by (client, period), in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, dict[tuple[str, str, str], dict[str, float]]] = {}
        self._spend: dict[str, int] = {}

    def reserve(self, key: str, micro: int, limit: int) -> int | None:
        """Add ``micro`` to the spend under ``key`` unless it would pass ``limit``: the spend after, or None."""
        with self._lock:
            spent = self._spend.get(key, 0)
            if spent + micro > limit:
                return None
            self._spend[key] = spent + micro
            return spent + micro

    def add_spend(self, key: str, micro: int) -> None:
        """Add ``micro`` (negative: give back) to the spend under ``key``."""
        with self._lock:
            self._spend[key] = self._spend.get(key, 0) + micro

    def spent(self, key: str) -> int:
        """The spend under ``key``, in micro-dollars."""
        with self._lock:
            return self._spend.get(key, 0)

    def add(self, hour: int, row: tuple[str, str, str], values: Mapping[str, float]) -> None:
        """Add ``values`` to the counts of ``row`` (client, model, deployment) in ``hour``; a new hour lets go of
        those older than :data:`KEEP_HOURS`."""
        with self._lock:
            if hour not in self._rows:
                for old in [h for h in self._rows if h <= hour - KEEP_HOURS]:
                    del self._rows[old]
            counts = self._rows.setdefault(hour, {}).setdefault(row, {})
            for name, value in values.items():
                counts[name] = counts.get(name, 0.0) + value

    def spend_items(self) -> list[tuple[str, int]]:
        """Every (key, spend), to hand over to a shared store."""
        with self._lock:
            return list(self._spend.items())

    def hour_items(self) -> list[tuple[int, tuple[str, str, str], dict[str, float]]]:
        """Every (hour, row, counts), to hand over to a shared store."""
        with self._lock:
            return [(hour, row, dict(counts)) for hour, rows in self._rows.items() for row, counts in rows.items()]

    def rows(self, since_hour: int) -> dict[tuple[str, str, str], dict[str, float]]:
        """The counts of each row over the hours from ``since_hour`` on."""
        out: dict[tuple[str, str, str], dict[str, float]] = {}
        with self._lock:
            for hour, rows in self._rows.items():
                if hour >= since_hour:
                    for row, counts in rows.items():
                        total = out.setdefault(row, {})
                        for name, value in counts.items():
                            total[name] = total.get(name, 0.0) + value
        return out


@dataclass(frozen=True)
class Hold:
    """What a request reserved of its client's budget (``key`` None: no budget applies)."""

    client: str
    key: str | None
    micro_usd: int


class Usage:
    """Usage and budgets of the service's clients over a store (this process's, or Redis shared by replicas)."""

    def __init__(self, prices: Prices | None = None, store: Any = None,
                 clock: Callable[[], float] = time.time,
                 on_settle: Callable[[str, str, str, int, Mapping[str, float], float], None] | None = None) -> None:
        self.prices = prices if prices is not None else Prices()
        self.store = store if store is not None else LocalUsageStore()
        self.clock = clock
        self.on_settle = on_settle

    def priced(self, backends: Iterable[str]) -> bool:
        """Whether one of ``backends`` (``name:model``) has a price."""
        return any(self.prices.of(b) for b in backends)

    def reserve(self, client: str, budget: Budget | None, backends: Sequence[str], documents: int) -> Hold:
        """Reserve the most a request of ``documents`` to a model of ``backends`` can cost under ``client``'s
        budget (nothing when it has none or the model is unpriced).

        Raises:
            OverBudgetError: the reservation would pass the budget (nothing is reserved).
        """
        if budget is None or not self.priced(backends):
            return Hold(client, None, 0)
        micro = max(_micro(self.prices.cost(b, {}, documents)) for b in backends)  # priced: one at least
        period, retry_after = budget.period(self.clock())
        key = f"{client}|{budget.per}|{period}"
        if self.store.reserve(key, micro, _micro(budget.usd)) is None:
            spent = self.store.spent(key) / MICRO
            scope = "in total" if budget.per == "total" else f"a {budget.per}"
            raise OverBudgetError(f"client {client!r} is over its budget of ${budget.usd:g} {scope} "
                                  f"(${spent:g} spent; this request could cost ${micro / MICRO:g})", retry_after)
        return Hold(client, key, micro)

    def release(self, hold: Hold) -> None:
        """Give back a reservation whose request got no answer."""
        if hold.key is not None and hold.micro_usd:
            self.store.add_spend(hold.key, -hold.micro_usd)

    def settle(self, hold: Hold, *, model: str, deployment: str, documents: int, backend: str,
               billed: Mapping[str, float]) -> None:
        """Count an answered request and settle its reservation at what ``backend``'s answer cost."""
        units = self.prices.units(backend, billed, documents)
        cost = price(units, self.prices.of(backend))
        if hold.key is not None and _micro(cost) != hold.micro_usd:
            self.store.add_spend(hold.key, _micro(cost) - hold.micro_usd)
        values = {"requests": 1.0, "documents": float(documents), "cost_usd": cost,
                  **{f"units.{unit}": float(n) for unit, n in units.items()}}
        self.store.add(int(self.clock() // HOUR_S), (hold.client, model, deployment), values)
        if self.on_settle is not None:
            self.on_settle(hold.client, model, deployment, documents, units, cost)

    def spent(self, client: str, budget: Budget) -> float:
        """Dollars ``client`` has spent in ``budget``'s current period."""
        period, _ = budget.period(self.clock())
        return self.store.spent(f"{client}|{budget.per}|{period}") / MICRO

    def report(self, client: str | None = None, model: str | None = None, since: float | None = None,
               budgets: Mapping[str, Budget] | None = None) -> dict[str, Any]:
        """Usage rows (client, model, deployment) since ``since`` (epoch seconds, counted by the hour; default:
        everything kept), filtered by ``client`` and ``model``, and each budget's spend in its period."""
        since_hour = 0 if since is None else int(since // HOUR_S)
        rows = []
        for (who, served, deployment), counts in sorted(self.store.rows(since_hour).items()):
            if client not in (None, who) or model not in (None, served):
                continue
            billed = {k.removeprefix("units."): v for k, v in counts.items() if k.startswith("units.")}
            rows.append({"client": who, "model": served, "deployment": deployment,  # settle writes all three
                         "requests": int(counts["requests"]), "documents": int(counts["documents"]),
                         "billed_units": billed, "cost_usd": round(counts["cost_usd"], 6)})
        out: dict[str, Any] = {"since": since_hour * HOUR_S, "rows": rows}
        shown = {name: {"usd": b.usd, "per": b.per, "spent_usd": self.spent(name, b)}
                 for name, b in sorted((budgets or {}).items()) if client in (None, name)}
        if shown:
            out["budgets"] = shown
        return out


def _micro(usd: float) -> int:
    return round(usd * MICRO)
