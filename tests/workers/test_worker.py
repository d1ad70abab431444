"""The worker process's own RQ worker (imgwatch.workers.worker) against a real Valkey."""

from __future__ import annotations

import time

from imgwatch.workers.worker import ImgwatchWorker
from imgwatch.workqueue import WorkQueue
from tests.helpers import wait_until


def test_a_stopping_worker_ends_its_listener_thread_without_waiting_out_rqs_poll(work_queue: WorkQueue) -> None:
    worker = ImgwatchWorker(work_queue, "imgwatch-run-98-0")
    worker.subscribe()  # RQ's pub/sub listener thread, as work() starts it
    pubsub, listener = worker.pubsub, worker.pubsub_thread
    send_unsubscribe = pubsub.unsubscribe

    def unsubscribe_and_let_the_listener_handle_the_reply(*args: object) -> None:
        # The race seen under load: the listener handles the reply before the worker stops it,
        # then waits RQ's whole poll (60 s) for a subscription, and stopping joins it.
        send_unsubscribe(*args)
        assert wait_until(lambda: not pubsub.subscribed, timeout=10)

    pubsub.unsubscribe = unsubscribe_and_let_the_listener_handle_the_reply
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 10
    assert not listener.is_alive()
