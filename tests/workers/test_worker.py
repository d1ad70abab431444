"""The worker process's own RQ worker (imgwatch.workers.worker) against a real Valkey."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import torch

from imgwatch.workers.worker import ImgwatchWorker, link_device_for
from imgwatch.workqueue import WorkQueue
from tests.helpers import make_config, wait_until


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


def test_a_stop_signal_between_ready_and_work_stops_the_worker_at_its_first_turn(work_queue: WorkQueue) -> None:
    worker = ImgwatchWorker(work_queue, "imgwatch-run-96-0")
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    rescued: list[bool] = []

    def rescue() -> None:  # work() never returned by itself: stop it the way RQ's own handler does
        rescued.append(True)
        os.kill(os.getpid(), signal.SIGINT)

    watchdog = threading.Timer(30, rescue)
    try:
        worker.take_stop_requests()  # as the worker process does before it announces "ready"
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor stopping it before work() began
        watchdog.start()
        worker.work(logging_level="WARNING")  # not burst: without the request it would wait for jobs
    finally:
        watchdog.cancel()
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert not rescued, "work() ran on after a stop request that came before it started"


def test_a_worker_scans_for_links_where_it_embeds(tmp_path: Path) -> None:
    """The store's int8 copy goes on the GPU only for a worker that embeds on one; a GPU it cannot
    have is refused as the model loads, with that message, so the store is opened for the CPU."""
    on_cpu = make_config(tmp_path, **{"embedding.device": "cpu"})
    exported = make_config(tmp_path, **{"embedding.device": "auto", "embedding.engine": "onnxruntime"})
    assert link_device_for(on_cpu) == "cpu" and link_device_for(exported) == "cpu"
    wanted_gpu = make_config(tmp_path, **{"embedding.device": "cuda"})
    assert link_device_for(wanted_gpu) == ("cuda" if torch.cuda.is_available() else "cpu")
