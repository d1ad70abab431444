"""What a worker agrees to run: imgwatch's own index job with a list of absolute paths.

Anything else on the queue (another function, a pickled payload, odd arguments) is
refused before its function is looked up or imported: with an external Redis,
anyone who can write to it must not be able to run code on the workers.
"""

from __future__ import annotations

from rq.job import Job


def refusal(job: Job) -> str | None:
    """Why ``job`` must not run, or None when it is a well-formed index job."""
    return None  # filled in by the queue lock-down work (issue 8)
