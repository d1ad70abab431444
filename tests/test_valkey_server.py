"""The embedded Valkey server (imgwatch.valkey_server)."""

from __future__ import annotations

from pathlib import Path

from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import FailureLedger, WorkQueue, take_snapshot
from tests.helpers import make_config


def test_queued_work_survives_a_restart_of_the_embedded_server(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedValkey(config):
        WorkQueue.from_config(config).enqueue_paths(["/a.jpg", "/b.jpg"], batch_size=1)
    with EmbeddedValkey(config):
        work_queue = WorkQueue.from_config(config)
        assert take_snapshot(work_queue, FailureLedger.for_queue(work_queue)).queued_paths == 2
