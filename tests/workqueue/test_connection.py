"""Reaching the queue's Redis (imgwatch.workqueue.connection): clear errors, the password file."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.config import ConfigError
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import QueueUnavailable, WorkQueue
from tests.helpers import make_config


def test_an_unreachable_queue_is_one_clear_error(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with pytest.raises(QueueUnavailable, match="imgwatch run"):
        WorkQueue.from_config(config)
    config.queue.redis_url = "redis://127.0.0.1:1/0"
    with pytest.raises(QueueUnavailable, match="127.0.0.1:1"):
        WorkQueue.from_config(config)


def test_the_password_comes_from_password_file(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedValkey(config) as server:
        config.queue.redis_url = server.url
        WorkQueue.from_config(config).connection.config_set("requirepass", "s3cret")
        with pytest.raises(QueueUnavailable, match="refused the credentials"):
            WorkQueue.from_config(config)
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        config.queue.password_file = str(secret)
        assert WorkQueue.from_config(config).connection.ping()
        config.queue.password_file = str(tmp_path / "missing")
        with pytest.raises(ConfigError, match="missing"):
            WorkQueue.from_config(config)
