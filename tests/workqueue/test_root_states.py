"""Daemons' root states on a real Redis-compatible server: expiry by Redis, several daemons, withdrawal."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import connect
from imgwatch.workqueue.root_states import MISSING, NOT_WATCHABLE, WATCHING, RootState, RootStates
from tests.helpers import make_config, wait_until


@pytest.fixture
def states(queue_server: EmbeddedValkey, tmp_path: Path) -> RootStates:
    config = make_config(tmp_path / "data")
    config.queue.redis_url = queue_server.url
    return RootStates(connect(config), f"root-states-{uuid.uuid4().hex[:8]}")


def test_each_daemons_roots_are_read_together_until_its_entry_expires_or_is_withdrawn(states: RootStates) -> None:
    assert states.current() == []
    photos, typo = RootState("/photos", WATCHING), RootState("/tmp/nope", MISSING, "not there")
    states.publish("killed", [photos, typo], ttl=1)
    states.publish("alive", [RootState("/scans", NOT_WATCHABLE, "the inotify watch limit is reached")], ttl=60)
    assert [(s.root, s.state) for s in states.current()] == [
        ("/photos", WATCHING), ("/scans", NOT_WATCHABLE), ("/tmp/nope", MISSING)]
    assert states.current()[2].detail == "not there"
    # The killed daemon renews nothing: Redis drops its entry, and the next reader its name.
    assert wait_until(lambda: [s.root for s in states.current()] == ["/scans"] and
                      states.connection.scard(states.names_key) == 1, timeout=5)
    states.withdraw("alive")
    assert states.current() == [] and states.connection.scard(states.names_key) == 0


def test_publishing_again_replaces_a_daemons_states(states: RootStates) -> None:
    states.publish("daemon", [RootState("/photos", MISSING, "not there")])
    states.publish("daemon", [RootState("/photos", WATCHING)])
    assert states.current() == [RootState("/photos", WATCHING)]
