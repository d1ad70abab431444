"""`imgwatch run`: the embedded queue, the daemon and N workers in one command.

Workers run in processes of their own session so that a Ctrl-C reaches them
once, from here, as a warm shutdown (finish the current job, then exit); a
kernel parent-death signal stops them should this process die without
cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
from multiprocessing.process import BaseProcess

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.errors import exit_on_error
from imgwatch.log import configure_logging, get_logger
from imgwatch.redis_server import EmbeddedRedis
from imgwatch.store import open_store
from imgwatch.workqueue import FailureLedger, WorkQueue

log = get_logger("imgwatch.run")

_PR_SET_PDEATHSIG = 1
WORKER_STOP_GRACE = 120.0  # seconds a worker may take to finish its current job on shutdown


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _worker_process(config: Config, index: int) -> None:
    os.setsid()
    _die_with_parent()
    configure_logging(config.general.log_format, config.general.log_level)
    from imgwatch.workers.worker import run_worker

    with exit_on_error():  # worker start-up errors are one clear line
        run_worker(config, name=f"imgwatch-run-{os.getpid()}-{index}")


def run_all(config: Config) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    with contextlib.ExitStack() as stack:
        stack.enter_context(config.data_dir.exclusive_run_lock())
        if not config.queue.redis_url:
            server = stack.enter_context(EmbeddedRedis(config))
            log.info("queue_started", url=server.url)
        work_queue = WorkQueue.from_config(config)
        if not config.queue.redis_url:
            # We hold the run lock, so no worker of a previous run is alive: its started jobs are abandoned.
            recovered = work_queue.recover_abandoned()
            if recovered:
                log.info("recovered_abandoned_jobs", jobs=recovered)
        store = stack.enter_context(open_store(config))
        daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)

        context = multiprocessing.get_context("spawn")
        workers: list[BaseProcess] = []
        for index in range(config.workers.count):
            process = context.Process(target=_worker_process, args=(config, index), name=f"worker-{index}")
            process.start()
            workers.append(process)
        stack.callback(_stop_workers, workers)

        daemon_errors: list[BaseException] = []

        def daemon_main() -> None:
            try:
                daemon.run(stop)
            except BaseException as exc:  # reported by the main thread
                daemon_errors.append(exc)
                stop.set()

        daemon_thread = threading.Thread(target=daemon_main, name="daemon")
        daemon_thread.start()
        exit_code = 0
        while not stop.wait(0.5):
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                exit_code = dead[0].exitcode or 1
                log.error("worker_exited", worker=dead[0].name, exit_code=dead[0].exitcode,
                          note="stopping; see the worker's message above")
                stop.set()
        log.info("stopping")
        daemon_thread.join()
        if daemon_errors:
            raise daemon_errors[0]
    log.info("stopped")
    return exit_code


def _stop_workers(workers: list[BaseProcess]) -> None:
    for process in workers:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)  # RQ's warm shutdown: finish the current job
    for process in workers:
        process.join(WORKER_STOP_GRACE)
        if process.is_alive():
            log.warning("worker_killed", worker=process.name, note="its job is requeued on the next start")
            process.kill()
            process.join()

