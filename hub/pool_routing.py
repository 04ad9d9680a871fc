"""Which pool a submission goes to, and which pools a read covers (shared/pools.py).

A submission names its pool (`pool` in the body), or the hub's routing rules pick one
(HUB_POOL_RULES: `region:eu=gpu-eu,service:llm=llm,customer:acme=acme`, the first rule that
matches wins), or it goes to the hub's default pool (the first of POOLS). A rule matches on
what the submission already says about itself: its service, its customer (after a
customer-bound token filled it in) and the region it requires. Rules are checked against
POOLS at start-up, so a rule can never route to a pool this hub does not serve.

Reads take `?pool=NAME` to look at one pool; without it they cover every pool this hub
serves. Either way a pool the hub does not serve is a 400 naming `pool`, never an empty
answer that would look like an empty pool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from shared.config import ConfigError
from shared.errors import InvalidInput
from shared.job import JobRequest
from shared.pools import POOL_NAME, check_pool_name
from shared.validation import ID_PATTERN, NAME_PATTERN, SERVICE_INPUT_PATTERN, normalise_service

RuleField = Literal["service", "customer", "region"]
# What each rule field may hold: exactly what a submission's field may hold, so a rule that
# could never match is refused at start-up rather than silently ignored.
_VALUE_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "service": re.compile(SERVICE_INPUT_PATTERN),
    "customer": re.compile(ID_PATTERN),
    "region": re.compile(NAME_PATTERN),
}


@dataclass(frozen=True, slots=True)
class PoolRule:
    """`field:value=pool`: a submission whose `field` equals `value` goes to `pool`."""

    field: RuleField
    value: str
    pool: str

    def matches(self, req: JobRequest) -> bool:
        if self.field == "service":
            return req.service_type == self.value
        if self.field == "customer":
            return req.customer_id == self.value
        geographic = req.requirements.geographic
        return geographic is not None and geographic.region == self.value

    def __str__(self) -> str:
        return f"{self.field}:{self.value}={self.pool}"


def parse_rules(name: str, value: str) -> tuple[PoolRule, ...]:
    """Comma-separated `field:value=pool` rules, field one of service, customer, region.
    The pool is after the last `=` (pool names hold none), the field before the first `:`
    (field names hold none), so the value may hold either."""
    out: list[PoolRule] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        head, sep, pool = item.rpartition("=")
        field, colon, rule_value = head.partition(":")
        field = field.strip()
        if not sep or not colon:
            raise ConfigError(
                name, f"expected field:value=pool rules (e.g. region:eu=gpu-eu), got {item!r}"
            )
        if field not in _VALUE_PATTERNS:
            raise ConfigError(name, f"rule {item!r}: the field must be service, customer or region")
        rule_value, pool = rule_value.strip(), pool.strip()
        if not _VALUE_PATTERNS[field].fullmatch(rule_value):
            raise ConfigError(name, f"rule {item!r}: {rule_value!r} is not a valid {field}")
        check_pool_name(name, pool)
        if field == "service":  # compared with submissions' service, kept in lower case
            rule_value = normalise_service(rule_value)
        out.append(PoolRule(field, rule_value, pool))  # type: ignore[arg-type]
    return tuple(out)


def check_rules(setting: str, rules: Sequence[PoolRule], pools: Sequence[str]) -> None:
    """Start-up check: every rule routes to a pool this hub serves."""
    for rule in rules:
        if rule.pool not in pools:
            raise ConfigError(
                setting,
                f"rule {rule} routes to pool {rule.pool!r}, which POOLS ({','.join(pools)}) "
                "does not list",
            )


def route(req: JobRequest, rules: Sequence[PoolRule], pools: Sequence[str], field: str) -> str:
    """The pool `req` goes to: its own `pool`, else the first matching rule's, else the
    default (pools[0]). `field` prefixes the error's field name (`jobs[3].`)."""
    if req.pool is not None:
        if req.pool not in pools:
            raise InvalidInput(f"{field}pool", f"this hub serves no pool {req.pool!r}")
        return req.pool
    for rule in rules:
        if rule.matches(req):
            return rule.pool
    return pools[0]


def pool_query(params: Mapping[str, str]) -> str | None:
    """`?pool=` of a read that takes no other parameter (an unknown one is a 400 naming it,
    so a misspelt `?pol=` is not silently a read of every pool)."""
    unknown = set(params.keys()) - {"pool"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    return params.get("pool") or None


def selected_pools(value: str | None, pools: Sequence[str]) -> tuple[str, ...]:
    """The pools a read covers: `?pool=NAME` (one this hub serves), else all of them."""
    if value is None or value == "":
        return tuple(pools)
    if not POOL_NAME.fullmatch(value):
        raise InvalidInput("pool", "not a pool name (1-32 of a-z 0-9 _ -, starting a-z 0-9)")
    if value not in pools:
        raise InvalidInput("pool", f"this hub serves no pool {value!r}")
    return (value,)
