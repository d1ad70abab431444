"""What a worker agrees to run: imgwatch's own index or reindex job with a list of absolute
paths, or its move job with a list of ``[old, new]`` pairs of absolute paths.

Anything else on the queue (another function, a pickled payload, odd arguments) is
refused before its function is looked up or imported: with an external Redis,
anyone who can write to it must not be able to run code on the workers.

A refused job is also *disarmed* before RQ fails it: its success, failure and
stopped callbacks (names RQ would import and call), its webhooks and its retries
are dropped, and a payload that cannot be read as JSON is replaced, in memory
only, by an empty one, so that RQ records one failure and reads or runs nothing
the job names. Callbacks and webhooks are refused on any job: imgwatch never sets them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rq.exceptions import DeserializationError
from rq.job import Job

from imgwatch.workqueue import INDEX_JOB
from imgwatch.workqueue.queue import MAX_PATHS_PER_JOB, MOVE_JOB, REINDEX_JOB

# Linux's PATH_MAX: the kernel refuses longer paths anyway.
MAX_PATH_CHARS = 4096

_REFUSAL = "_imgwatch_refusal"  # where a job keeps the reason it was refused (in memory)
_CALLBACKS = ("success", "failure", "stopped")


def refusal(job: Job) -> str | None:
    """Why ``job`` must not run, or None when it is a well-formed index job.

    Never imports or unpickles anything. When it refuses, it disarms the job (see the
    module docstring), so it may be called again, and as early as RQ allows: before
    RQ reads the payload, plans a retry or runs a callback.
    """
    already = getattr(job, _REFUSAL, None)
    if already is not None:
        return str(already)
    reason = _examine(job)
    if reason is not None:
        _disarm(job)
        setattr(job, _REFUSAL, reason)
    return reason


def _examine(job: Job) -> str | None:
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        # JSONSerializer could not read it: a pickled payload (never unpickled here) or junk.
        return "refused: not a JSON imgwatch job (its payload cannot be read as JSON; pickled jobs are never loaded)"
    if func_name not in (INDEX_JOB, MOVE_JOB, REINDEX_JOB):
        return f"refused: the job runs {_short(func_name)}, not imgwatch's {INDEX_JOB}, {REINDEX_JOB} or {MOVE_JOB}"
    extras = _extras(job)
    if extras:
        return f"refused: the job carries {extras}, which imgwatch never sets"
    if instance is not None:
        return "refused: the job calls a method of an object, not imgwatch's index function"
    if kwargs:
        return f"refused: the job passes keyword arguments ({_short(kwargs)}); an index job takes one list of paths"
    if not isinstance(args, list | tuple) or len(args) != 1:
        count = len(args) if isinstance(args, Sequence) else "?"
        return f"refused: an index job takes one argument, a list of paths; this one has {count}"
    if func_name == MOVE_JOB:
        return _moves_refusal(args[0])
    return _paths_refusal(args[0])


def _moves_refusal(moves: object) -> str | None:
    """A move job's argument: a list of [old, new] pairs, each path as an index job's."""
    if not isinstance(moves, list) or not all(isinstance(pair, list) and len(pair) == 2 for pair in moves):
        return "refused: a move job's argument must be a list of [old, new] path pairs"
    return _paths_refusal([path for pair in moves for path in pair])


def _paths_refusal(paths: object) -> str | None:
    if not isinstance(paths, list):
        return f"refused: an index job's argument must be a list of paths, not a {type(paths).__name__}"
    if len(paths) > MAX_PATHS_PER_JOB:
        return f"refused: the job carries {len(paths)} paths; an index job carries at most {MAX_PATHS_PER_JOB}"
    for path in paths:
        if not isinstance(path, str):
            return f"refused: every path must be a string; the job carries {_short(path)}"
        if len(path) > MAX_PATH_CHARS:
            return f"refused: a path of {len(path)} characters is longer than any the system allows ({MAX_PATH_CHARS})"
        if "\x00" in path:
            return f"refused: the path {_short(path)} contains a NUL character"
        if not os.path.isabs(path):
            return f"refused: the path {_short(path)} is not absolute; index jobs carry absolute paths"
    return None


def _extras(job: Job) -> str:
    """The callbacks and webhooks ``job`` carries (RQ would import and call or contact them)."""
    found = [f"a {kind} callback ({_short(name)})" for kind in _CALLBACKS
             if (name := getattr(job, f"_{kind}_callback_name", None))]
    if getattr(job, "webhooks", None):
        found.append("webhooks")
    return ", ".join(found)


def _disarm(job: Job) -> None:
    """Leave RQ nothing to import, call, contact or retry when it fails ``job``."""
    for kind in _CALLBACKS:
        setattr(job, f"_{kind}_callback_name", None)
        setattr(job, f"_{kind}_callback", None)  # None, not UNEVALUATED: nothing left to import
    if hasattr(job, "webhooks"):
        job.webhooks = []
    job.retries_left = None  # RQ retries a failed job while retries_left > 0
    job.retry_intervals = None
    job.repeats_left = None
    try:
        job.func_name  # noqa: B018 - reads (JSON only) the payload, so later reads cannot raise
    except DeserializationError:
        # In memory only (the stored payload is kept as it was): RQ's own bookkeeping
        # reads func_name/args before and after the job runs, and must not fail there.
        job._func_name, job._instance, job._args, job._kwargs = None, None, (), {}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
