"""The connection to the queue's Redis: the configured server or the embedded one."""

from __future__ import annotations

import redis

from imgwatch.config import Config, read_secret_file
from imgwatch.errors import QueueUnavailable


def redis_url_for(config: Config) -> str:
    return config.queue.redis_url or f"unix://{config.data_dir.queue_socket}"


def connect(config: Config, timeout: float = 5.0) -> redis.Redis:
    """A checked connection; QueueUnavailable says what to fix when there is none."""
    url = redis_url_for(config)
    password_file = config.queue.password_file
    password = read_secret_file(password_file, "the Redis password") if password_file else None
    kwargs: dict[str, object] = {"socket_connect_timeout": timeout, "health_check_interval": 30}
    if password is not None:
        kwargs["password"] = password
    try:
        connection = redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
        connection.ping()
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError, redis.ResponseError) as exc:
        raise QueueUnavailable(
            f"the queue at {url} refused the credentials ({exc}); check queue.password_file or the URL"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        if config.queue.redis_url:
            hint = "check that the server is running and queue.redis_url (IMGWATCH_QUEUE_REDIS_URL) is right"
        else:
            hint = "start `imgwatch run` (it starts the embedded queue) or set queue.redis_url to an external Redis"
        raise QueueUnavailable(f"cannot reach the queue at {url}: {exc}; {hint}") from None
    return connection
