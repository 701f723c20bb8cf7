"""Typed results: the Session, PoolConfig and PoolStatus shapes of `openapi.yaml`, and the smaller ones.

Each is a frozen dataclass made from the service's JSON by `from_json`; `raw` keeps that JSON as it came
(a newer service may add fields this version does not name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "Cookie",
    "CookiesForUrl",
    "ImportResult",
    "Lease",
    "PoolConfig",
    "PoolStatus",
    "Session",
    "SessionList",
    "SessionSettings",
    "StatusCodeResult",
]


# RFC 3339 as the service writes it: `2026-11-25T19:00:30.123456789Z`, with 0 to 9 fractional digits.
# Python 3.10's `datetime.fromisoformat` takes neither the `Z` nor fractions other than 3 or 6 digits.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _ts(value: str | None) -> datetime | None:
    """A timestamp of the service as an aware datetime; fractions past microseconds are cut off."""
    if value is None:
        return None
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    micros = int((m.group(7) or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-offset if m.group(9) == "-" else offset)
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)


@dataclass(frozen=True)
class Cookie:
    """A cookie of a session's jar. `domain` follows Playwright's convention: `example.com` is host-only,
    `.example.com` also matches subdomains, `""` matches every host."""

    name: str
    value: str
    domain: str = ""
    path: str = "/"
    secure: bool = False
    http_only: bool = False
    expires: int | None = None
    same_site: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cookie:
        return cls(
            name=data["name"],
            value=data["value"],
            domain=data.get("domain", ""),
            path=data.get("path", "/"),
            secure=bool(data.get("secure", False)),
            http_only=bool(data.get("http_only", False)),
            expires=data.get("expires"),
            same_site=data.get("same_site"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "domain": self.domain,
            "path": self.path,
            "secure": self.secure,
            "http_only": self.http_only,
        }
        if self.expires is not None:
            out["expires"] = self.expires
        if self.same_site is not None:
            out["same_site"] = self.same_site
        return out


@dataclass(frozen=True)
class Lease:
    """The lease an acquire took: pass `id` as `lease_id` to a report or to `release`."""

    id: str
    expires_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        return cls(id=data["id"], expires_at=_ts(data["expires_at"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Session:
    """A session as the service answers it. `lease` is set when an acquire took one, `cookie_header`
    when an acquire was given a `url`."""

    id: str
    pool: str
    created_at: datetime
    expires_at: datetime
    max_age_secs: float
    usage_count: int
    max_usage_count: int
    error_score: float
    max_error_score: float
    error_score_decrement: float
    blocked_status_codes: list[int]
    user_data: dict[str, Any]
    cookies: list[Cookie]
    proxy_url: str | None
    is_blocked: bool
    is_expired: bool
    is_max_usage_count_reached: bool
    is_usable: bool
    retired: bool
    retired_reason: str | None
    retired_at: datetime | None
    leased_until: datetime | None
    lease: Lease | None = None
    cookie_header: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            id=data["id"],
            pool=data["pool"],
            created_at=_ts(data["created_at"]),  # type: ignore[arg-type]
            expires_at=_ts(data["expires_at"]),  # type: ignore[arg-type]
            max_age_secs=data["max_age_secs"],
            usage_count=data["usage_count"],
            max_usage_count=data["max_usage_count"],
            error_score=data["error_score"],
            max_error_score=data["max_error_score"],
            error_score_decrement=data["error_score_decrement"],
            blocked_status_codes=list(data["blocked_status_codes"]),
            user_data=dict(data["user_data"]),
            cookies=[Cookie.from_json(c) for c in data["cookies"]],
            proxy_url=data["proxy_url"],
            is_blocked=data["is_blocked"],
            is_expired=data["is_expired"],
            is_max_usage_count_reached=data["is_max_usage_count_reached"],
            is_usable=data["is_usable"],
            retired=data["retired"],
            retired_reason=data["retired_reason"],
            retired_at=_ts(data["retired_at"]),
            leased_until=_ts(data["leased_until"]),
            lease=Lease.from_json(data["lease"]) if data.get("lease") else None,
            cookie_header=data.get("cookie_header"),
            raw=data,
        )


@dataclass(frozen=True)
class SessionSettings:
    """Settings a pool gives the sessions it creates. On input every field is optional (None: the
    server's default)."""

    max_age_secs: float | None = None
    max_usage_count: int | None = None
    max_error_score: float | None = None
    error_score_decrement: float | None = None
    blocked_status_codes: list[int] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionSettings:
        return cls(
            max_age_secs=data.get("max_age_secs"),
            max_usage_count=data.get("max_usage_count"),
            max_error_score=data.get("max_error_score"),
            error_score_decrement=data.get("error_score_decrement"),
            blocked_status_codes=(
                list(data["blocked_status_codes"]) if data.get("blocked_status_codes") is not None else None
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class PoolConfig:
    """A pool's configuration. On input (PUT) a field left None takes the server's default: PUT replaces."""

    max_pool_size: int | None = None
    session: SessionSettings | None = None
    proxy_urls: list[str] | None = None
    proxy_url_template: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolConfig:
        return cls(
            max_pool_size=data.get("max_pool_size"),
            session=SessionSettings.from_json(data["session"]) if data.get("session") is not None else None,
            proxy_urls=list(data["proxy_urls"]) if data.get("proxy_urls") is not None else None,
            proxy_url_template=data.get("proxy_url_template"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_pool_size is not None:
            out["max_pool_size"] = self.max_pool_size
        if self.session is not None:
            out["session"] = self.session.to_json()
        if self.proxy_urls is not None:
            out["proxy_urls"] = list(self.proxy_urls)
        if self.proxy_url_template is not None:
            out["proxy_url_template"] = self.proxy_url_template
        return out


@dataclass(frozen=True)
class PoolStatus:
    """A pool's configuration and counts."""

    name: str
    config: PoolConfig
    session_count: int
    usable_session_count: int
    retired_session_count: int
    leased_session_count: int
    created_at: datetime
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolStatus:
        return cls(
            name=data["name"],
            config=PoolConfig.from_json(data["config"]),
            session_count=data["session_count"],
            usable_session_count=data["usable_session_count"],
            retired_session_count=data["retired_session_count"],
            leased_session_count=data["leased_session_count"],
            created_at=_ts(data["created_at"]),  # type: ignore[arg-type]
            raw=data,
        )


@dataclass(frozen=True)
class SessionList:
    """One page of `list_sessions`; pass `next_cursor` back as `cursor` (None on the last page)."""

    sessions: list[Session]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionList:
        return cls(sessions=[Session.from_json(s) for s in data["sessions"]], next_cursor=data["next_cursor"])


@dataclass(frozen=True)
class StatusCodeResult:
    """Whether a reported status code blocked the session, and the session after the report."""

    blocked: bool
    session: Session

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusCodeResult:
        return cls(blocked=data["blocked"], session=Session.from_json(data["session"]))


@dataclass(frozen=True)
class CookiesForUrl:
    """The cookies a browser would send to a URL, and the Cookie header made of them."""

    cookie_header: str
    cookies: list[Cookie]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CookiesForUrl:
        return cls(cookie_header=data["cookie_header"], cookies=[Cookie.from_json(c) for c in data["cookies"]])


@dataclass(frozen=True)
class ImportResult:
    """How many sessions an import took, and the ids it skipped because the pool held them."""

    imported: int
    skipped: list[dict[str, str]]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportResult:
        return cls(imported=data["imported"], skipped=list(data["skipped"]))
