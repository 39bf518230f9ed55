"""Settings: read once from the environment (``AUTH_`` prefix), validated, frozen.

Every variable is listed with its default in ``docs/configuration.md``; a test keeps the two in step.
A bad value raises ``ConfigError`` naming the variable and what it accepts, so a pod with a bad
ConfigMap fails at start with a readable message instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from starlette.datastructures import Secret

T = TypeVar("T")

PREFIX = "AUTH_"
DEFAULT_ISSUER = "http://127.0.0.1:8000"  # where `authsvc serve` listens by default
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")  # RFC 6749 §3.3 scope-token
RATE = re.compile(r"^\s*\d+\s*(/|per)\s*\d*\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    # storage
    database_url: str
    database_read_url: str | None
    data_dir: Path
    db_pool_size: int
    db_max_overflow: int
    db_pool_timeout: float
    db_pool_recycle: int
    db_connect_timeout: float
    db_statement_cache_size: int
    db_slow_query_ms: int
    redis_url: str | None
    redis_timeout: float
    # passwords
    bcrypt_cost: int
    hash_workers: int
    hash_queue_size: int
    hash_max_wait: float
    processes: int  # uvicorn worker processes sharing this container's CPUs (WEB_CONCURRENCY)
    # tokens
    keys_dir: Path
    signing_key_id: str | None
    issuer: str  # a URL: the `iss` of every token and the base of every URL discovery publishes
    jwt_audience: str
    access_token_ttl: int
    refresh_token_ttl: int
    session_max_age: int
    refresh_reuse_grace: int
    introspection_client_id: str
    introspection_secret: Secret | None
    # OAuth 2.0 clients and scopes (docs/oauth.md)
    user_scopes: frozenset[str]
    default_scopes: frozenset[str]
    password_grant_requires_client: bool
    client_token_ttl: int
    bootstrap_client_id: str
    bootstrap_client_secret: Secret | None
    bootstrap_client_scopes: frozenset[str]
    cors_origins: tuple[str, ...]
    # rate limits and cache (Redis issue)
    rate_limit_enabled: bool
    rate_limit_ip: str
    rate_limit_register: str
    rate_limit_token: str
    rate_limit_token_per_user: str
    rate_limit_refresh: str
    rate_limit_introspect: str
    rate_limit_client: str
    login_backoff_base: float
    login_backoff_cap: float
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    user_cache_ttl: int
    # housekeeping
    cleanup_batch_size: int
    cleanup_retention: int
    cleanup_interval: int
    audit_retention: int  # seconds an audit event is kept (docs/admin.md)
    audit_key: Secret | None  # keys the audit log's name hashes and the admin API's cursors
    max_body_bytes: int
    log_level: str

    @property
    def embedded(self) -> bool:
        """True on the SQLite default, which migrates itself and generates its own key."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        env = _Reader(environ)
        data_dir = Path(env.get("DATA_DIR", str, ".authsvc")).expanduser()
        database_url = env.get("DATABASE_URL", _database_url, "")
        if not database_url:
            database_url = f"sqlite+aiosqlite:///{data_dir / 'auth.db'}"
        hash_workers = env.get("HASH_WORKERS", _int(0, 256), 0)
        settings = cls(
            database_url=database_url,
            database_read_url=env.get("DATABASE_READ_URL", _database_url, "") or None,
            data_dir=data_dir,
            db_pool_size=env.get("DB_POOL_SIZE", _int(1, 1000), 10),
            db_max_overflow=env.get("DB_MAX_OVERFLOW", _int(0, 1000), 10),
            db_pool_timeout=env.get("DB_POOL_TIMEOUT", _float(0.1, 600), 5.0),
            db_pool_recycle=env.get("DB_POOL_RECYCLE", _int(-1, 86400), 1800),
            db_connect_timeout=env.get("DB_CONNECT_TIMEOUT", _float(0.1, 120), 5.0),
            db_statement_cache_size=env.get("DB_STATEMENT_CACHE_SIZE", _int(0, 100000), 100),
            db_slow_query_ms=env.get("DB_SLOW_QUERY_MS", _int(0, 3_600_000), 200),
            redis_url=env.get("REDIS_URL", _redis_url, "") or None,
            redis_timeout=env.get("REDIS_TIMEOUT", _float(0.01, 30), 0.25),
            bcrypt_cost=env.get("BCRYPT_COST", _int(4, 31), 12),
            hash_workers=hash_workers,
            hash_queue_size=env.get("HASH_QUEUE_SIZE", _int(0, 100000), 64),
            hash_max_wait=env.get("HASH_MAX_WAIT", _float(0, 600), 1.0),
            processes=_Reader(environ, prefix="").get("WEB_CONCURRENCY", _int(1, 1024), 1),
            keys_dir=Path(env.get("KEYS_DIR", str, str(data_dir / "keys"))).expanduser(),
            signing_key_id=env.get("SIGNING_KEY_ID", str, "") or None,
            # AUTH_JWT_ISSUER is the deprecated name of AUTH_ISSUER
            issuer=env.get("ISSUER", _issuer, "") or env.get("JWT_ISSUER", _issuer, DEFAULT_ISSUER),
            jwt_audience=env.get("JWT_AUDIENCE", _nonempty, "authsvc"),
            access_token_ttl=env.get("ACCESS_TOKEN_TTL", _int(30, 86400), 900),
            refresh_token_ttl=env.get("REFRESH_TOKEN_TTL", _int(60, 31_536_000), 604_800),
            session_max_age=env.get("SESSION_MAX_AGE", _int(60, 31_536_000), 2_592_000),
            refresh_reuse_grace=env.get("REFRESH_REUSE_GRACE", _int(0, 300), 0),
            introspection_client_id=env.get("INTROSPECTION_CLIENT_ID", _nonempty, "introspect"),
            introspection_secret=env.get("INTROSPECTION_SECRET", _secret, None),
            user_scopes=env.get("USER_SCOPES", _scopes, frozenset({"profile", "email"})),
            default_scopes=env.get("DEFAULT_SCOPES", _scopes, frozenset({"profile"})),
            password_grant_requires_client=env.get("PASSWORD_GRANT_REQUIRES_CLIENT", _bool, False),
            client_token_ttl=env.get("CLIENT_TOKEN_TTL", _int(30, 86400), 900),
            bootstrap_client_id=env.get("BOOTSTRAP_CLIENT_ID", _client_id, "bootstrap"),
            bootstrap_client_secret=env.get("BOOTSTRAP_CLIENT_SECRET", _secret, None),
            bootstrap_client_scopes=env.get("BOOTSTRAP_CLIENT_SCOPES", _scopes, frozenset({"admin"})),
            cors_origins=env.get("CORS_ORIGINS", _origins, ()),
            rate_limit_enabled=env.get("RATE_LIMIT_ENABLED", _bool, True),
            rate_limit_ip=env.get("RATE_LIMIT_IP", _rate, "1200/minute"),
            rate_limit_register=env.get("RATE_LIMIT_REGISTER", _rate, "10/minute"),
            rate_limit_token=env.get("RATE_LIMIT_TOKEN", _rate, "30/minute"),
            rate_limit_token_per_user=env.get("RATE_LIMIT_TOKEN_PER_USER", _rate, "10/minute"),
            rate_limit_refresh=env.get("RATE_LIMIT_REFRESH", _rate, "60/minute"),
            rate_limit_introspect=env.get("RATE_LIMIT_INTROSPECT", _rate, "6000/minute"),
            rate_limit_client=env.get("RATE_LIMIT_CLIENT", _rate, "600/minute"),
            login_backoff_base=env.get("LOGIN_BACKOFF_BASE", _float(0, 60), 1.0),
            login_backoff_cap=env.get("LOGIN_BACKOFF_CAP", _float(0, 86400), 300.0),
            trusted_proxies=env.get("TRUSTED_PROXIES", _networks, ()),
            user_cache_ttl=env.get("USER_CACHE_TTL", _int(0, 86400), 60),
            cleanup_batch_size=env.get("CLEANUP_BATCH_SIZE", _int(1, 100_000), 1000),
            cleanup_retention=env.get("CLEANUP_RETENTION", _int(0, 31_536_000), 604_800),
            cleanup_interval=env.get("CLEANUP_INTERVAL", _int(1, 86400), 300),
            audit_retention=env.get("AUDIT_RETENTION", _int(3600, 315_360_000), 7_776_000),
            audit_key=env.get("AUDIT_KEY", _audit_key, None),
            max_body_bytes=env.get("MAX_BODY_BYTES", _int(1024, 10_485_760), 16_384),
            log_level=env.get("LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        )
        if settings.login_backoff_cap < settings.login_backoff_base:
            raise ConfigError(
                f"{PREFIX}LOGIN_BACKOFF_CAP ({settings.login_backoff_cap}) must be at least "
                f"{PREFIX}LOGIN_BACKOFF_BASE ({settings.login_backoff_base})"
            )
        if not settings.default_scopes <= settings.user_scopes:
            raise ConfigError(f"{PREFIX}DEFAULT_SCOPES must be a subset of {PREFIX}USER_SCOPES")
        if settings.bootstrap_client_id == settings.introspection_client_id and settings.bootstrap_client_secret:
            raise ConfigError(f"{PREFIX}BOOTSTRAP_CLIENT_ID must differ from {PREFIX}INTROSPECTION_CLIENT_ID")
        if settings.embedded and settings.database_read_url:
            raise ConfigError(f"{PREFIX}DATABASE_READ_URL needs {PREFIX}DATABASE_URL to be PostgreSQL")
        return settings


class _Reader:
    def __init__(self, environ: Mapping[str, str], prefix: str = PREFIX) -> None:
        self._environ = environ
        self._prefix = prefix

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._environ.get(self._prefix + name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            # The value itself is left out: it may be a secret.
            raise ConfigError(f"{self._prefix}{name}: {exc}") from None


def _int(low: int, high: int) -> Callable[[str], int]:
    return _number(int, "a whole number", low, high)


def _float(low: float, high: float) -> Callable[[str], float]:
    return _number(float, "a number", low, high)


N = TypeVar("N", int, float)


def _number(kind: Callable[[str], N], noun: str, low: N, high: N) -> Callable[[str], N]:
    def parse(raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"expected {noun} from {low:g} to {high:g}") from None
        if not low <= value <= high:
            raise ValueError(f"expected {noun} from {low:g} to {high:g}, got {value:g}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw.upper()

    return parse


def _nonempty(raw: str) -> str:
    return raw


def _secret(raw: str) -> Secret:
    return Secret(raw)


def _audit_key(raw: str) -> Secret:
    if len(raw) < 32:
        raise ValueError("expected at least 32 characters (e.g. `openssl rand -base64 32`)")
    return Secret(raw)


def _issuer(raw: str) -> str:
    """RFC 8414 §2: an http(s) URL with no query or fragment; kept without a trailing slash."""
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment or "#" in raw:
        raise ValueError("expected a URL such as https://auth.example.com (http or https, no query or fragment)")
    return raw.rstrip("/")


def _scopes(raw: str) -> frozenset[str]:
    found = frozenset(raw.split())
    if not all(SCOPE_TOKEN.match(scope) for scope in found):
        raise ValueError('expected space-separated scope names (printable ASCII without " or \\)')
    return found


def _client_id(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", raw):
        raise ValueError("expected 1 to 64 of A-Z a-z 0-9 . _ ~ -")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        url = urllib.parse.urlsplit(origin)
        if origin != "*" and (url.scheme not in ("http", "https") or not url.hostname or url.path):
            raise ValueError("expected comma-separated origins such as https://app.example.com, or *")
    return origins


def _rate(raw: str) -> str:
    if not RATE.match(raw):
        raise ValueError("expected a rate such as '10/minute' or '100 per hour'")
    return raw


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError("expected comma-separated CIDRs such as 10.0.0.0/8,fd00::/8") from None


def _database_url(raw: str) -> str:
    if raw.startswith(("postgresql://", "postgres://")):
        raw = "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if not raw.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise ValueError("expected postgresql://… (asyncpg) or sqlite+aiosqlite:///path")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://host:port/db, rediss://… or unix://…")
    return raw
