"""structlog set-up: readable lines on a terminal or in the systemd journal, JSON lines otherwise.

Under systemd (stderr is the journal stream named by ``$JOURNAL_STREAM``) journald stamps
every line itself, so console lines carry no timestamp of their own, no colours, and a
``<N>`` syslog priority prefix that journald turns into the entry's priority (so
``journalctl -p warning`` works). JSON lines keep their ``timestamp`` field: it is data for
whatever parses them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

# syslog priorities (sd-daemon(3): "<3>" error, "<4>" warning, "<6>" info, "<7>" debug).
_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def stderr_is_journal() -> bool:
    """True when stderr is connected to the journal: its device and inode match
    ``$JOURNAL_STREAM`` (systemd.exec(5)); a child whose stderr was redirected elsewhere
    inherits the variable but not the stream."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # closed, replaced (pytest's capture), or no stderr
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def _journal_priority(_logger: Any, method_name: str, rendered: str) -> str:
    """Last processor under the journal: prefix the rendered line with its syslog priority."""
    return f"<{_PRIORITY.get(method_name, 6)}>{rendered}"


class _JournalFormatter(logging.Formatter):
    """Stdlib records (rq, watchdog, neo4j) for the journal: priority prefix, no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelname.lower(), 6)}>{super().format(record)}"


def _clear_progress_line(_logger: object, _method: str, line: str) -> str:
    """On a terminal a progress bar may own the current line: a log line clears it first."""
    return "\r\x1b[2K" + line


def configure_logging(fmt: str = "auto", level: str = "info", *, quiet: bool = False) -> None:
    """``fmt`` and ``level`` are validated config values (config.LOG_FORMATS, config.LOG_LEVELS).

    ``quiet``: only warnings and errors, whatever ``level`` says: a one-shot command's output
    is its answer, and its progress lines would only bury it.
    """
    threshold = logging.getLevelNamesMapping()[level.upper()]
    if quiet:
        threshold = max(threshold, logging.WARNING)
    journal = stderr_is_journal()
    terminal = sys.stderr.isatty()
    use_console = fmt == "console" or (fmt == "auto" and (terminal or journal))
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if not (use_console and journal):  # journald timestamps every line
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if use_console:
        processors += [structlog.processors.StackInfoRenderer(),
                       structlog.dev.ConsoleRenderer(colors=terminal and not journal)]
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    if journal:
        processors.append(_journal_priority)
    elif terminal:
        processors.append(_clear_progress_line)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (rq, watchdog, neo4j) log through stdlib logging: keep them quiet but visible.
    logging.basicConfig(level=max(threshold, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if journal:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setFormatter(_JournalFormatter("%(levelname)s %(name)s: %(message)s"))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
