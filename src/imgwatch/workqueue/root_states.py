"""What each running daemon's roots are doing, announced on the queue's Redis for `imgwatch status`.

Only the daemon knows whether a root is watched (by inotify, or by polling), missing (a typo, a
share not mounted) or not watchable (the inotify watch limit). `imgwatch status` and the web page
read it here without talking to the daemon: the daemon writes one entry, its roots and their
states, whenever a state changes and every RENEW_SECONDS; Redis expires an entry that is not
renewed (no host's clock is trusted), so a killed daemon's roots drop out. A set names the
entries; a name whose entry expired is dropped by the next reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from imgwatch.workqueue.announcements import ENTRY_TTL_SECONDS, Announcements

WATCHING = "watching"  # inotify sees every change below it
POLLING = "polling"  # watch.observer = "polling": changes are found every watch.polling_interval
MISSING = "missing"  # not there: watched as soon as it appears
NOT_WATCHABLE = "not watchable"  # there, but no watch could be added (the inotify limit): only rescans find changes

ANNOUNCEMENT_TTL_SECONDS = ENTRY_TTL_SECONDS  # seconds an entry outlives its daemon's last renewal


@dataclass(frozen=True)
class RootState:
    root: str
    state: str  # WATCHING, POLLING, MISSING or NOT_WATCHABLE
    detail: str = ""  # why, and what to do, for any state but WATCHING and POLLING


class RootStates(Announcements):
    """daemon name → its roots' states, for as long as the daemon keeps renewing them."""

    KIND = "root-states"

    def publish(self, daemon: str, states: Sequence[RootState], ttl: int = ANNOUNCEMENT_TTL_SECONDS) -> None:
        """``daemon``'s roots are in ``states`` for the next ``ttl`` seconds (publish again to renew)."""
        self._put(daemon, [asdict(state) for state in states], ttl)

    def current(self) -> list[RootState]:
        """Every running daemon's roots with their states, by root (empty when no daemon runs)."""
        states = {RootState(**fields) for entry in self._live_values() for fields in entry}  # type: ignore[attr-defined]
        return sorted(states, key=lambda state: (state.root, state.state))
