"""Talking to the server: the driver, the one-shot connection check, transactions, errors.

Transient failures (server restart, leader switch, deadlock between two workers) are
retried by the driver's managed transactions (``execute_read``/``execute_write``) with
exponential backoff until ``neo4j.retry_seconds`` have passed; only then does an
operation fail, with StoreUnavailable saying how long it retried. Schema and SHOW
commands run in auto-commit transactions, which the driver does not retry.

Getting a connection is bounded by ``connection_acquisition_timeout``. When that runs
out the driver raises an error that is not retryable (``ConnectionAcquisitionTimeoutError``
in driver 6, a ``ClientError`` in driver 5), so it is reported as exactly that: no
connection within so many seconds, not retried.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

import neo4j
import neo4j.exceptions
from neo4j.exceptions import (
    AuthError,
    ClientError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from imgwatch.config import NEO4J_PASSWORD_ENV, Neo4jConfig
from imgwatch.errors import StoreError, StoreUnavailable
from imgwatch.store.neo4j import cypher

T = TypeVar("T")

MINIMUM_VERSION = (5, 26)
NOTIFICATION_LOGGER = "neo4j.notifications"
# What driver 5 says when the acquisition timeout runs out (a ClientError, no server code).
_POOL_TIMEOUT_TEXT = "failed to obtain a connection from the pool"


def driver_error_class(module: ModuleType | object, name: str) -> type[BaseException] | None:
    """``module.name`` if it is an exception class this driver version has, else None.

    Lets one imgwatch import with driver 5 and 6: ``ConnectionAcquisitionTimeoutError``
    only exists from driver 6.0 (neo4j/neo4j-python-driver#1169).
    """
    found = getattr(module, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


ACQUISITION_TIMEOUT_ERROR = driver_error_class(neo4j.exceptions, "ConnectionAcquisitionTimeoutError")


def is_acquisition_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says that no connection could be had within the acquisition timeout."""
    if ACQUISITION_TIMEOUT_ERROR is not None and isinstance(exc, ACQUISITION_TIMEOUT_ERROR):
        return True
    return isinstance(exc, ClientError) and _POOL_TIMEOUT_TEXT in str(exc)


def parse_version(text: str) -> tuple[int, ...]:
    """'5.26.3' -> (5, 26, 3); '2025.10.1' -> (2025, 10, 1); suffixes like '-aura' ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0])[:3])


class Connection:
    """One driver for one store: sessions sharing a bookmark manager, and its transactions."""

    def __init__(self, settings: Neo4jConfig, password: str | None) -> None:
        self.settings = settings
        self.uri = settings.uri
        self.database = settings.database
        self.acquisition_timeout = settings.connect_timeout * 2
        self.version = ""
        self.edition = ""
        auth = (settings.user, password) if password is not None else None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                settings.uri,
                auth=auth,
                connection_timeout=settings.connect_timeout,
                connection_acquisition_timeout=self.acquisition_timeout,
                max_transaction_retry_time=settings.retry_seconds,
                user_agent="imgwatch",
            )
        except (DriverError, ValueError) as exc:
            raise StoreError(f"neo4j.uri {settings.uri!r} is not usable: {exc}") from None
        notify_once()
        # One bookmark manager for all of this store's sessions: on a cluster, a read then
        # waits for the store's own earlier writes (causal consistency).
        self._bookmarks = neo4j.GraphDatabase.bookmark_manager()

    @property
    def location(self) -> str:
        return f"{self.uri} database {self.database}"

    def check(self) -> None:
        """One attempt, no retries: a wrong URI, password or database fails within seconds."""
        try:
            with _quiet_driver_log():
                self._driver.verify_connectivity()
            with self.session() as session:
                record = session.run(cypher.KERNEL_VERSION).single()
        except AuthError:
            raise StoreError(
                f"Neo4j at {self.uri} refused user {self.settings.user!r}: wrong user or password; "
                f"set {NEO4J_PASSWORD_ENV} or neo4j.password_file (and neo4j.user)"
            ) from None
        except (ServiceUnavailable, SessionExpired, OSError) as exc:
            raise StoreUnavailable(
                f"cannot reach Neo4j at {self.uri} ({_reason(exc)}); check that the server is running "
                "and neo4j.uri (IMGWATCH_NEO4J_URI) is right"
            ) from None
        except (Neo4jError, DriverError) as exc:
            if is_acquisition_timeout(exc):
                raise translate_error(exc, uri=self.uri, acquisition_timeout=self.acquisition_timeout) from None
            if isinstance(exc, ClientError) and "DatabaseNotFound" in (exc.code or ""):
                raise StoreError(database_not_found_message(self.uri, self.database)) from None
            if exc.is_retryable():  # e.g. the database is still starting
                raise StoreUnavailable(f"Neo4j at {self.uri} is not ready ({_reason(exc)}); try again") from None
            raise StoreError(f"Neo4j at {self.uri}: {_reason(exc)}") from None
        if record is None:
            raise StoreError(f"Neo4j at {self.uri} did not report its version; is it a Neo4j server?")
        self.version, self.edition = str(record["version"]), str(record["edition"])
        if parse_version(self.version) < MINIMUM_VERSION:
            raise StoreError(
                f"Neo4j at {self.uri} is version {self.version}; imgwatch needs 5.26 LTS or newer "
                "(2025.x and 2026.x work too): upgrade the server"
            )

    def session(self) -> neo4j.Session:
        return self._driver.session(database=self.database, bookmark_manager=self._bookmarks)

    def read(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """``work`` in a managed read transaction (retried through transient failures)."""
        def run() -> T:
            with self.session() as session:
                return session.execute_read(work)

        return self._translated(run)

    def write(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """``work`` in a managed write transaction (retried through transient failures)."""
        def run() -> T:
            with self.session() as session:
                return session.execute_write(work)

        return self._translated(run)

    def command(self, statement: str, *, tolerate: str | None = None, **parameters: Any) -> list[Any]:
        """An auto-commit statement: schema and SHOW commands cannot share a transaction with data.

        ``tolerate``: a server error code (part of it) that means "already done".
        """
        def run() -> list[Any]:
            with self.session() as session:
                try:
                    return list(session.run(statement, parameters))
                except ClientError as exc:
                    if tolerate is not None and tolerate in (exc.code or ""):
                        return []
                    raise

        return self._translated(run, retried=False)

    def close(self) -> None:
        self._driver.close()

    def _translated(self, run: Callable[[], T], *, retried: bool = True) -> T:
        """Driver errors as StoreError naming the server. ``retried``: a managed
        transaction, which the driver retried through transient failures."""
        started = time.monotonic()
        try:
            return run()
        except StoreError:
            raise
        except (Neo4jError, DriverError) as exc:
            raise translate_error(
                exc, uri=self.uri, acquisition_timeout=self.acquisition_timeout,
                retried_for=time.monotonic() - started if retried else None,
            ) from None


def database_not_found_message(uri: str, database: str) -> str:
    """The server has no such database: how to create it (a name with a dash must be quoted)."""
    return (
        f"Neo4j at {uri} has no database {database!r}; create it "
        f"({cypher.create_database(database)}, Enterprise Edition) or set neo4j.database "
        "(Community Edition has only \"neo4j\")"
    )


def translate_error(exc: Neo4jError | DriverError, *, uri: str, acquisition_timeout: float,
                    retried_for: float | None = None) -> StoreError:
    """A driver error as the StoreError the user reads.

    ``retried_for``: seconds spent in a managed transaction, which retries transient
    errors; None where nothing retried. The message claims retries only then.
    """
    if isinstance(exc, AuthError):
        return StoreError(f"Neo4j at {uri} no longer accepts the credentials; check the password")
    if is_acquisition_timeout(exc):
        return StoreUnavailable(
            f"Neo4j at {uri} gave no connection within {acquisition_timeout:g} s "
            f"(the connection acquisition timeout, twice neo4j.connect_timeout; not retried): "
            f"{_reason(exc)}; check the server and the network (workers leave the job for the queue to retry)"
        )
    if exc.is_retryable():
        after = f" after {retried_for:.0f} s of retries" if retried_for is not None else ""
        return StoreUnavailable(
            f"Neo4j at {uri} is unavailable ({_reason(exc)}){after}; check the server "
            "(workers leave the job for the queue to retry)"
        )
    return StoreError(f"Neo4j at {uri}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """A driver error in one line, preferring the network error underneath (e.g. connection refused)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and (current.strerror or str(current)):
            return (current.strerror or str(current)).lower()
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(getattr(current, "exceptions", ()))  # routing failures arrive as an ExceptionGroup
    # Server errors carry their text in .message; most driver-side errors only in str().
    text = (exc.message if isinstance(exc, Neo4jError) else None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@contextlib.contextmanager
def _quiet_driver_log() -> Iterator[None]:
    """Silence the driver's own log lines while we turn its failure into one clear error."""
    driver_log = logging.getLogger("neo4j")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        driver_log.setLevel(level)


# -- server notifications ------------------------------------------------------------------
# The driver logs every notification the server attaches to a result on
# "neo4j.notifications" (driver 6: "Received notification from DBMS server: %s" with a
# NotificationPrinter holding .notification and .query). queryNodes is deprecated in
# Cypher 25 from 2026.04 but still works: without a filter that notice would be logged
# for every search. The driver's server-side filter (notifications_min_severity,
# notifications_disabled_classifications) would drop every deprecation for good, and
# servers before 5.7 reject it before we could say "too old"; this filter instead lets
# each distinct notification through once per process, whatever its level.


def notification_key(record: logging.LogRecord) -> tuple[str, ...]:
    """What makes two logged notifications the same one: its status and description, not
    the query or the position in it."""
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        notification = getattr(arg, "notification", arg)
        fields = [getattr(notification, name, None) for name in
                  ("gql_status", "status_description", "code", "title", "description")]
        if any(value is not None for value in fields):
            return tuple("" if value is None else str(value) for value in fields)
    return (record.getMessage(),)


class OncePerNotification(logging.Filter):
    """A logging filter passing each distinct server notification once (thread-safe)."""

    def __init__(self, remember: int = 1024) -> None:
        super().__init__()
        self._seen: set[tuple[str, ...]] = set()
        self._remember = remember
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = notification_key(record)
        with self._lock:
            if key in self._seen:
                return False
            if len(self._seen) < self._remember:
                self._seen.add(key)
        return True


_install_lock = threading.Lock()


def notify_once(logger: logging.Logger | None = None) -> OncePerNotification:
    """Install (once) the filter on the driver's notification logger; returns it."""
    target = logger or logging.getLogger(NOTIFICATION_LOGGER)
    with _install_lock:
        for existing in target.filters:
            if isinstance(existing, OncePerNotification):
                return existing
        installed = OncePerNotification()
        target.addFilter(installed)
        return installed
