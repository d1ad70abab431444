"""`imgwatch run`: the embedded queue, the daemon and N workers in one command, kept running.

Workers run in processes of their own session so that a Ctrl-C reaches them
once, from here, as a warm shutdown (finish the current job, then exit); a
kernel parent-death signal stops them should this process die without
cleaning up. A reindex under way (`imgwatch reindex`) resumes at start: what it still misses
is queued again.

The main thread supervises, every LOOP_SECONDS:

- A worker that dies (SIGKILL, the OOM killer, a crashed driver) has its started
  job requeued at once and its registration dropped (imgwatch.workers.recovery,
  which also splits and finally gives up on a job that keeps killing workers), and
  is started again after a backoff that doubles, back to the minimum once a worker
  stayed up a while. Deaths that come too fast are a crash loop: one error line, and
  restarts wait the maximum until workers stay up again. The rule, with its numbers,
  is imgwatch.restart_policy.
- A worker that exits with code 2 could not start because of something only the
  user can fix (missing weights, a store of another model; its message is in the
  log): the run stops with that code instead of restarting it forever.
- The embedded queue server, should it die, is restarted from its append-only file
  (a failed restart is retried with backoff, restart_policy too);
  workers and the daemon reconnect by themselves. Valkey syncs that file every second,
  so one reconciliation pass then enqueues whatever the last second of writes lost.
- systemd (imgwatch.sdnotify): READY=1 once the queue, the store and every worker are
  up (each worker registered in Redis), STATUS= on restarts, WATCHDOG=1 from this loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

import redis
from rq.worker import BaseWorker

from imgwatch import sdnotify
from imgwatch.config import Config
from imgwatch.daemon.scan import reconcile_and_enqueue
from imgwatch.daemon.service import Daemon
from imgwatch.errors import (
    EXIT_ERROR,
    EXIT_UNAVAILABLE,
    QueueUnavailable,
    StoreError,
    StoreUnavailable,
    exit_on_error,
)
from imgwatch.log import configure_logging, get_logger
from imgwatch.progress import follow_backlog
from imgwatch.reindex import resume_reindex
from imgwatch.restart_policy import CRASH_LOOP_SECONDS, RESTART_DELAY_MAX_SECONDS, RestartPolicy
from imgwatch.signals import stop_on_signals
from imgwatch.store import open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workers import recovery
from imgwatch.workqueue import FailureLedger, WorkQueue, take_snapshot

if TYPE_CHECKING:
    from imgwatch.web.server import WebServer

log = get_logger("imgwatch.run")

_PR_SET_PDEATHSIG = 1
WORKER_STOP_GRACE_SECONDS = 120.0  # seconds a worker may take to finish its current job on shutdown
LOOP_SECONDS = 0.5
_CHILD_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")  # `run` alone talks to systemd
WORKER_NAME_PREFIX = "imgwatch-run-"  # + "<pid>-<index>"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_name(pid: int, index: int) -> str:
    return f"{WORKER_NAME_PREFIX}{pid}-{index}"


def _worker_process(config: Config, index: int) -> None:
    os.setsid()
    _die_with_parent()
    for variable in _CHILD_NOTIFY_VARIABLES:
        os.environ.pop(variable, None)
    configure_logging(config.general.log_format, config.general.log_level)
    from imgwatch.workers.worker import run_worker

    name = worker_name(os.getpid(), index)
    with exit_on_error():  # worker start-up errors are one clear line
        try:
            run_worker(config, name=name)
        except (QueueUnavailable, StoreUnavailable, redis.RedisError) as exc:
            # The queue (or the store's server) went away: `imgwatch run` restarts this worker.
            log.warning("worker_lost_connection", worker=name, error=str(exc).splitlines()[0])
            sys.exit(EXIT_UNAVAILABLE)


class WorkerSlot:
    """One of the N worker processes, through its restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.name = ""
        self.registered = False  # seen in Redis: the model is loaded and it takes jobs
        self.restart_at: float | None = None


class Supervisor:
    """Keeps the worker processes (and the embedded queue server) running until ``stop`` is set."""

    def __init__(self, config: Config, work_queue: WorkQueue, server: EmbeddedValkey | None,
                 stop: threading.Event) -> None:
        self.config = config
        self.work_queue = work_queue
        self.server = server
        self.stop = stop
        self.context = multiprocessing.get_context("spawn")
        self.slots = [WorkerSlot(index) for index in range(config.workers.count)]
        self.fatal_exit_code: int | None = None
        self.restarts = RestartPolicy(len(self.slots))
        # Dead workers whose jobs are still to requeue: name -> (cause, whether it crashed).
        self._unrecovered: dict[str, tuple[str, bool]] = {}
        self._ready_sent = False
        self._degraded = False  # a worker is down: systemd's STATUS says so until all are back
        self._queue_down_since: float | None = None
        self._queue_retry_at = 0.0
        self._watchdog_interval = sdnotify.watchdog_interval()
        self._next_watchdog = 0.0

    # -- the loop ------------------------------------------------------------------

    def start_workers(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def run(self) -> int:
        """Supervise until ``stop`` is set; returns the exit code for `imgwatch run`."""
        while not self.stop.wait(LOOP_SECONDS):
            self._ping_watchdog()
            if self.server is not None:
                self._check_queue()
            self._check_workers()
            if self.fatal_exit_code is not None:
                return self.fatal_exit_code
            if self._queue_down_since is None:  # else every call would wait out its retries
                self._requeue_unrecovered()
                self._check_ready()
        return 0

    def stop_workers(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # RQ's warm shutdown: finish the current job
        deadline = time.monotonic() + WORKER_STOP_GRACE_SECONDS  # one grace period for all, not one each
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker_killed", worker=slot.name,
                            note=f"it did not stop within {WORKER_STOP_GRACE_SECONDS:.0f} s; its job is requeued")
                process.kill()
                process.join()
                self._unrecovered[slot.name] = ("killed when imgwatch stopped", False)
        self._requeue_unrecovered()  # best effort; otherwise the next start (or another worker) does it

    def _ping_watchdog(self) -> None:
        if self._watchdog_interval is None:
            return
        now = time.monotonic()
        if now >= self._next_watchdog:
            sdnotify.watchdog()
            self._next_watchdog = now + self._watchdog_interval

    # -- workers --------------------------------------------------------------------

    def _start(self, slot: WorkerSlot) -> None:
        process = self.context.Process(target=_worker_process, args=(self.config, slot.index),
                                       name=f"worker-{slot.index}")
        process.start()
        assert process.pid is not None
        slot.process, slot.name = process, worker_name(process.pid, slot.index)
        slot.registered, slot.restart_at = False, None
        self.restarts.started(slot.index)

    def _check_workers(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is None:
                if slot.restart_at is not None and now >= slot.restart_at and self._queue_down_since is None:
                    self._start(slot)
                continue
            if process.is_alive():
                continue
            process.join()
            slot.process = None
            self._worker_died(slot, process.exitcode, now)
            if self.fatal_exit_code is not None:
                return

    def _worker_died(self, slot: WorkerSlot, exitcode: int | None, now: float) -> None:
        if exitcode == EXIT_ERROR and not slot.registered:
            log.error("worker_cannot_start", worker=slot.name, exit_code=exitcode,
                      note="stopping: restarting cannot help; the worker's message above says what to fix")
            self.fatal_exit_code = exitcode
            return
        cause = recovery.signal_cause(exitcode)
        restart = self.restarts.died(slot.index, crashed=exitcode != EXIT_UNAVAILABLE)
        if restart.crash_loop_began:
            log.error("worker_crash_loop", deaths=self.restarts.recent_crashes,
                      minutes=round(CRASH_LOOP_SECONDS / 60), last_cause=cause,
                      restart_every_seconds=RESTART_DELAY_MAX_SECONDS,
                      note="workers keep dying: see their messages above (out of memory? a GPU driver?)")
        delay = restart.delay
        slot.restart_at = now + delay
        fields = {"worker": slot.name, "cause": cause, "uptime_seconds": round(restart.uptime, 1),
                  "restart_in_seconds": delay}
        if exitcode == EXIT_UNAVAILABLE:
            log.warning("worker_stopped", **fields)
        else:
            log.error("worker_died", **fields)
        sdnotify.status(f"worker {slot.index} {cause}; restarting it in {delay:.0f} s")
        self._degraded = True
        self._unrecovered[slot.name] = (cause, exitcode != EXIT_UNAVAILABLE)
        if self._queue_down_since is None:
            self._requeue_unrecovered()

    def _requeue_unrecovered(self) -> None:
        """Requeue the jobs of dead workers; while the queue is down they wait for the next try."""
        for name, (cause, crashed) in list(self._unrecovered.items()):
            try:
                recovery.requeue_jobs_of(self.work_queue, name, cause, crashed=crashed)
            except redis.RedisError:
                return  # the queue is down: tried again on the next round
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop the service
                log.error("requeue_failed", worker=name, error=f"{type(exc).__name__}: {exc}",
                          note="RQ requeues its job after queue.job_timeout")
            del self._unrecovered[name]

    def _check_ready(self) -> None:
        """READY=1 (once) when every worker has registered; a STATUS line when all are back after a restart."""
        if self._ready_sent and not self._degraded:
            return
        pending = [s for s in self.slots if s.process is not None and not s.registered]
        if pending:
            try:
                with self.work_queue.connection.pipeline() as pipe:
                    for slot in pending:
                        pipe.exists(BaseWorker.redis_worker_namespace_prefix + slot.name)
                    found = pipe.execute()
            except redis.RedisError:
                return
            for slot, exists in zip(pending, found, strict=True):
                slot.registered = bool(exists)
        if not all(s.registered for s in self.slots):
            return
        self._degraded = False
        text = f"indexing with {len(self.slots)} worker(s)"
        if not self._ready_sent:
            self._ready_sent = True
            log.info("ready", workers=len(self.slots))
            sdnotify.ready()
        sdnotify.status(text)

    # -- the embedded queue server ----------------------------------------------------

    def _check_queue(self) -> None:
        assert self.server is not None
        how = self.server.poll()
        if how is None:
            return
        now = time.monotonic()
        if self._queue_down_since is None:
            self._queue_down_since = now
            log.error("queue_server_died", how=how, note="restarting it from its append-only file")
            sdnotify.status(f"the queue server {how}; restarting it")
        if now < self._queue_retry_at:
            return
        try:
            self.server.restart()
        except QueueUnavailable as exc:
            delay = self.restarts.queue_server_retry_delay()
            self._queue_retry_at = time.monotonic() + delay
            log.error("queue_restart_failed", error=str(exc), retry_in_seconds=delay)
            return
        log.info("queue_restarted", down_seconds=round(time.monotonic() - self._queue_down_since, 2))
        self._queue_down_since, self._queue_retry_at = None, 0.0
        self.restarts.queue_server_back()
        sdnotify.status("the queue server is back")
        self._requeue_unrecovered()
        self._reconcile()

    def _reconcile(self) -> None:
        """Enqueue what the restarted queue may have lost (its last second of writes).

        Reads the store through its own handle and only enqueues, so it runs beside the daemon thread.
        """
        try:
            store = open_store(self.config)
            try:
                reconcile_and_enqueue(self.config, store, FailureLedger.for_queue(self.work_queue), self.work_queue,
                                      reason="queue_restarted")
            finally:
                store.close()
        except (redis.RedisError, StoreError, OSError) as exc:  # OSError: a root unreadable mid-walk
            log.warning("reconcile_failed", error=str(exc), note="the next start or rescan catches up")


def run_all(config: Config, *, web: bool = False) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code.

    ``web``: also serve the web page (its token and address are checked before anything starts).
    """
    stop = stop_on_signals()

    with contextlib.ExitStack() as stack:
        stack.enter_context(config.data_dir.exclusive_run_lock())
        web_server = _open_web(config) if web else None  # token and address: checked before anything starts
        if web_server is not None:
            stack.callback(web_server.close)
        server = None
        if not config.queue.redis_url:
            server = stack.enter_context(EmbeddedValkey(config))
            log.info("queue_started", url=server.url)
        work_queue = WorkQueue.from_config(config)
        if server is not None:
            # We hold the run lock, so no worker of a previous run is alive: its started jobs are abandoned.
            # (Each is logged: job_requeued.)
            recovery.requeue_abandoned(work_queue, "the previous `imgwatch run` stopped", WORKER_NAME_PREFIX)
        store = stack.enter_context(open_store(config))
        resume_reindex(config, store, work_queue)  # one interrupted by a stop, a crash, a reboot goes on
        daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)

        supervisor = Supervisor(config, work_queue, server, stop)
        stack.callback(supervisor.stop_workers)
        supervisor.start_workers()

        daemon_errors: list[BaseException] = []

        def daemon_main() -> None:
            try:
                daemon.run(stop)
            except BaseException as exc:  # reported by the main thread
                daemon_errors.append(exc)
                stop.set()

        daemon_thread = threading.Thread(target=daemon_main, name="daemon")
        daemon_thread.start()
        helpers = [threading.Thread(target=_show_backlog, args=(work_queue, stop), name="progress")]
        if web_server is not None:
            def web_main() -> None:
                try:
                    web_server.serve(stop)
                except BaseException as exc:  # the page is part of `run --web`: stop, and say why
                    daemon_errors.append(exc)
                    stop.set()

            helpers.append(threading.Thread(target=web_main, name="web"))
        for thread in helpers:
            thread.start()
        try:
            exit_code = supervisor.run()
        finally:
            stop.set()  # the daemon, web and progress threads end with it, whatever happened
        sdnotify.stopping()
        log.info("stopping")
        daemon_thread.join()
        for thread in helpers:
            thread.join()
        if daemon_errors:
            raise daemon_errors[0]
    log.info("stopped")
    return exit_code


def _open_web(config: Config) -> WebServer:
    from imgwatch.web.server import WebServer  # starlette and uvicorn load only with --web

    return WebServer.open(config)


def _show_backlog(work_queue: WorkQueue, stop: threading.Event) -> None:
    """On a terminal, a progress bar of the backlog while there is one (nothing off a terminal)."""
    if not sys.stderr.isatty():
        return
    failures = FailureLedger.for_queue(work_queue)
    last = 0

    def pending() -> int:
        nonlocal last
        with contextlib.suppress(redis.RedisError):  # an outage: keep the last figure
            last = take_snapshot(work_queue, failures, max_failed_jobs=1).pending_paths
        return last

    follow_backlog(pending, until_empty=False, stop=stop.is_set)
