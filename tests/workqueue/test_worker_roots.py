"""Workers' announced folders on a real Redis-compatible server: expiry by Redis, renewal, withdrawal."""

from __future__ import annotations

import time
import uuid

import pytest

from imgwatch.errors import ConfigError
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import connect
from imgwatch.workqueue import worker_roots as module
from imgwatch.workqueue.worker_roots import WorkerRoots, check_workers_take
from tests.helpers import make_config, wait_until


@pytest.fixture
def roots(queue_server: EmbeddedValkey, tmp_path: object) -> WorkerRoots:
    config = make_config(tmp_path / "data")  # type: ignore[operator]
    config.queue.redis_url = queue_server.url
    return WorkerRoots(connect(config), f"roots-{uuid.uuid4().hex[:8]}")


def test_an_entry_not_renewed_expires_by_the_servers_clock_and_its_name_goes(roots: WorkerRoots) -> None:
    roots.announce("killed", ["/photos"], ttl=1)
    roots.announce("alive", ["/scans", "/photos"], ttl=60)
    assert roots.current() == ["/photos", "/scans"]
    assert wait_until(lambda: roots.current() == ["/photos", "/scans"] and
                      roots.connection.scard(roots.names_key) == 1, timeout=5)
    roots.withdraw("alive")
    assert roots.current() == [] and roots.connection.scard(roots.names_key) == 0


def test_announcing_renews_until_the_worker_stops(roots: WorkerRoots, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ANNOUNCEMENT_TTL_SECONDS", 1)
    monkeypatch.setattr(module, "RENEW_SECONDS", 0.3)
    with roots.announcing("worker-1", ["/photos"]):
        time.sleep(2.5)  # more than twice the entry's life: only renewals keep it
        assert roots.current() == ["/photos"]
    assert roots.current() == []  # withdrawn at once, not left to expire


def test_scan_is_checked_against_the_announced_folders() -> None:
    check_workers_take(["/anything"], [])  # no worker running: nothing to check against
    check_workers_take(["/photos", "/photos/2024"], ["/photos", "/scans"])
    with pytest.raises(ConfigError, match=r"cannot scan /music: the running workers index only files below "
                                          r"/photos, /scans and refuse any other"):
        check_workers_take(["/photos", "/music"], ["/photos", "/scans"])
