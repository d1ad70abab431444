"""A worker through a queue outage (imgwatch.workers.outages): a real Valkey, then none."""

from __future__ import annotations

import signal
from pathlib import Path

from rq.worker import WorkerStatus

from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workers.worker import ImgwatchWorker
from imgwatch.workqueue import WorkQueue
from tests.helpers import make_config


def test_a_stop_signal_during_a_queue_outage_never_raises_into_the_running_job(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedValkey(config) as server:
        config.queue.redis_url = server.url
        worker = ImgwatchWorker(WorkQueue.from_config(config), "imgwatch-run-97-0")
        worker.register_birth()
        worker.set_state(WorkerStatus.BUSY)  # in the middle of a job
    # The queue is gone. RQ's handler runs between two lines of the job: it must not raise there.
    worker.request_stop(signal.SIGTERM, None)
    assert worker._stop_requested
