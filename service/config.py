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
# where `authsvc serve` answers by default; the built-in pages take the token from the fragment, which
# browsers never send to a server, so it stays out of every access log on the way
DEFAULT_RESET_URL = "http://127.0.0.1:8000/account/reset-password#token={token}"
DEFAULT_VERIFY_URL = "http://127.0.0.1:8000/account/verify-email#token={token}"
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
    db_command_timeout: float
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
    keys_reload_interval: float  # how often each process looks for a change of keys_dir
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
    # account lifecycle and mail (docs/accounts.md)
    password_min_length: int
    password_blocklist: bool
    password_breach_api: str | None  # k-anonymity range API, e.g. https://api.pwnedpasswords.com/range/
    password_breach_fail_closed: bool
    password_reset_url: str
    password_reset_ttl: int
    email_verification_url: str
    email_verification_ttl: int
    require_verified_email: bool
    registration_enumeration_safe: bool
    rate_limit_password_reset: str
    rate_limit_password_reset_per_address: str
    smtp_url: str | None
    smtp_starttls: bool
    smtp_username: str | None
    smtp_password_file: Path | None
    smtp_timeout: float
    mail_from: str
    mail_templates_dir: Path | None
    mail_max_attempts: int
    mail_retry_base: float
    mail_poll_interval: float
    # housekeeping
    cleanup_batch_size: int
    cleanup_retention: int
    cleanup_interval: int
    audit_retention: int  # seconds an audit event is kept (docs/admin.md)
    audit_key: Secret | None  # keys the audit log's name hashes and the admin API's cursors
    max_body_bytes: int
    request_body_timeout: float
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
            db_command_timeout=env.get("DB_COMMAND_TIMEOUT", _float(0, 600), 5.0),
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
            keys_reload_interval=env.get("KEYS_RELOAD_INTERVAL", _float(0.1, 3600), 10.0),
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
            password_min_length=env.get("PASSWORD_MIN_LENGTH", _int(8, 64), 8),
            password_blocklist=env.get("PASSWORD_BLOCKLIST", _bool, True),
            password_breach_api=env.get("PASSWORD_BREACH_API", _http_url, "") or None,
            password_breach_fail_closed=env.get("PASSWORD_BREACH_FAIL_CLOSED", _bool, False),
            password_reset_url=env.get("PASSWORD_RESET_URL", _link_template, DEFAULT_RESET_URL),
            password_reset_ttl=env.get("PASSWORD_RESET_TTL", _int(60, 86400), 1800),
            email_verification_url=env.get("EMAIL_VERIFICATION_URL", _link_template, DEFAULT_VERIFY_URL),
            email_verification_ttl=env.get("EMAIL_VERIFICATION_TTL", _int(60, 2_592_000), 86400),
            require_verified_email=env.get("REQUIRE_VERIFIED_EMAIL", _bool, False),
            registration_enumeration_safe=env.get("REGISTRATION_ENUMERATION_SAFE", _bool, False),
            rate_limit_password_reset=env.get("RATE_LIMIT_PASSWORD_RESET", _rate, "10/hour"),
            rate_limit_password_reset_per_address=env.get("RATE_LIMIT_PASSWORD_RESET_PER_ADDRESS", _rate, "3/hour"),
            smtp_url=env.get("SMTP_URL", _smtp_url, "") or None,
            smtp_starttls=env.get("SMTP_STARTTLS", _bool, False),
            smtp_username=env.get("SMTP_USERNAME", str, "") or None,
            smtp_password_file=_path_or_none(env.get("SMTP_PASSWORD_FILE", str, "")),
            smtp_timeout=env.get("SMTP_TIMEOUT", _float(0.1, 300), 10.0),
            mail_from=env.get("MAIL_FROM", _address, "authsvc <no-reply@localhost>"),
            mail_templates_dir=_path_or_none(env.get("MAIL_TEMPLATES_DIR", str, "")),
            mail_max_attempts=env.get("MAIL_MAX_ATTEMPTS", _int(1, 100), 8),
            mail_retry_base=env.get("MAIL_RETRY_BASE", _float(0.01, 3600), 30.0),
            mail_poll_interval=env.get("MAIL_POLL_INTERVAL", _float(0.01, 3600), 2.0),
            cleanup_batch_size=env.get("CLEANUP_BATCH_SIZE", _int(1, 100_000), 1000),
            cleanup_retention=env.get("CLEANUP_RETENTION", _int(0, 31_536_000), 604_800),
            cleanup_interval=env.get("CLEANUP_INTERVAL", _int(1, 86400), 300),
            audit_retention=env.get("AUDIT_RETENTION", _int(3600, 315_360_000), 7_776_000),
            audit_key=env.get("AUDIT_KEY", _audit_key, None),
            max_body_bytes=env.get("MAX_BODY_BYTES", _int(1024, 10_485_760), 16_384),
            request_body_timeout=env.get("REQUEST_BODY_TIMEOUT", _float(0.1, 600), 10.0),
            log_level=env.get("LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        )
        if settings.login_backoff_cap < settings.login_backoff_base:
            raise ConfigError(
                f"{PREFIX}LOGIN_BACKOFF_CAP ({settings.login_backoff_cap}) must be at least "
                f"{PREFIX}LOGIN_BACKOFF_BASE ({settings.login_backoff_base})"
            )
        if settings.smtp_url and settings.smtp_url.startswith("smtps://") and settings.smtp_starttls:
            raise ConfigError(f"{PREFIX}SMTP_STARTTLS applies to smtp:// only (smtps:// is TLS from the start)")
        if settings.smtp_password_file and not settings.smtp_username:
            raise ConfigError(f"{PREFIX}SMTP_PASSWORD_FILE needs {PREFIX}SMTP_USERNAME")
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


def _path_or_none(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


def _http_url(raw: str) -> str:
    if not raw.startswith(("https://", "http://")):
        raise ValueError("expected an http(s):// URL")
    return raw


def _link_template(raw: str) -> str:
    if not raw.startswith(("https://", "http://")) or raw.count("{token}") != 1:
        raise ValueError("expected an http(s):// URL holding {token} once, e.g. https://app.example/reset#token={token}")
    return raw


def _smtp_url(raw: str) -> str:
    if not raw.startswith(("smtp://", "smtps://")) or not raw.split("://", 1)[1].strip("/"):
        raise ValueError("expected smtp://host:port or smtps://host:port")
    return raw


def _address(raw: str) -> str:
    if "@" not in raw or "\n" in raw or "\r" in raw:
        raise ValueError("expected a mail address such as 'authsvc <no-reply@example.com>'")
    return raw
