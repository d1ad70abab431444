"""The connection to the queue's Redis: the configured server or the embedded one."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from imgwatch.config import Config, read_secret_file
from imgwatch.errors import QueueUnavailable

MASK = "***"
# Query parameters whose values are secrets (redis-py passes unknown ones on as keywords).
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&#]*")


def redis_url_for(config: Config) -> str:
    return config.queue.redis_url or f"unix://{config.data_dir.queue_socket}"


def redacted(url: str) -> str:
    """``url`` fit to show: a password in it (``user:password@``, ``?password=``) becomes ***.

    Errs on the side of masking: a lone ``secret@`` (no user name; often a password
    written in the wrong place) is masked too, and everything before the last ``@``
    counts as user and password, as redis-py's own parsing would have it.
    """
    scheme, separator, rest = url.partition("://") if "://" in url else ("", "", url)
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{MASK}@{after}" if colon else f"{MASK}@{after}"
    return scheme + separator + _SECRET_QUERY.sub(lambda match: match.group(1) + MASK, rest)


def _secrets_in(url: str) -> list[str]:
    """The secrets written into ``url``, as written and decoded, to mask in messages."""
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username if parts.password is None else None]
        found += [value for name, values in parse_qs(parts.query).items()
                  if _SECRET_QUERY.match("?" + name + "=") for value in values]
    except ValueError:
        return []
    return [s for s in found if s] + [unquote(s) for s in found if s]


def _scrubbed(message: str, secrets: list[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 3:  # masking "a" everywhere would garble the message, not protect anything
            message = message.replace(secret, MASK)
    return message


def connect(config: Config, timeout: float = 5.0) -> redis.Redis:
    """A checked connection; QueueUnavailable says what to fix when there is none.

    No message shows a password: the URL is :func:`redacted`, and the password (from
    the URL or ``queue.password_file``) is masked in whatever the server or client said.
    """
    url = redis_url_for(config)
    shown = redacted(url)
    password_file = config.queue.password_file
    password = read_secret_file(password_file, "the Redis password") if password_file else None
    secrets = _secrets_in(url) + ([password] if password else [])
    kwargs: dict[str, object] = {"socket_connect_timeout": timeout, "health_check_interval": 30}
    if password is not None:
        kwargs["password"] = password
    try:
        connection = redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
        connection.ping()
    except ValueError as exc:  # from_url: not a redis://, rediss:// or unix:// URL, or a bad parameter
        raise QueueUnavailable(_scrubbed(
            f"queue.redis_url {shown} is not a Redis URL redis-py accepts ({exc}); "
            "use redis://[user:password@]host:port/db, rediss://... for TLS, or unix:///path/to/socket",
            secrets)) from None
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError, redis.ResponseError) as exc:
        raise QueueUnavailable(_scrubbed(
            f"the queue at {shown} refused the credentials ({exc}); check queue.password_file or the URL",
            secrets)) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        if config.queue.redis_url:
            hint = "check that the server is running and queue.redis_url (IMGWATCH_QUEUE_REDIS_URL) is right"
        else:
            hint = "start `imgwatch run` (it starts the embedded queue) or set queue.redis_url to an external Redis"
        raise QueueUnavailable(_scrubbed(f"cannot reach the queue at {shown} ({_why(exc)}): {hint}", secrets)) from None
    return connection


def _why(exc: Exception) -> str:
    """Why a connection failed, as a phrase: the system's reason ("No such file or directory") where
    there is one; redis-py's own sentence ("Error 2 connecting to /x. No such file or directory.")
    does not fit inside another."""
    cause = exc if isinstance(exc, OSError) and exc.strerror else exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc).strip().rstrip(".") or type(exc).__name__
