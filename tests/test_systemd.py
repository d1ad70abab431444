"""The systemd units (systemd-analyze verify and security), their env example, and journal logging."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgwatch import log as imgwatch_log
from imgwatch.config import CONFIG_ENV, NEO4J_PASSWORD_ENV, SECTIONS, Config, env_var, load_config

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
SERVICE_DOCS = SYSTEMD_DIR.parent / "docs" / "service.md"
INSTALLED_EXEC = "/opt/imgwatch/bin/imgwatch"  # where docs/service.md's install steps put it
UNITS = {  # unit file -> (imgwatch subcommand, highest acceptable `systemd-analyze security` exposure)
    "imgwatch.service": ("run", 2.0),
    "imgwatch-daemon.service": ("daemon", 2.0),
    "imgwatch-worker@.service": ("worker", 3.0),
}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)")


def settings(unit: str) -> dict[str, list[str]]:
    """KEY -> every value it is given in ``unit`` (systemd allows repeats), sections merged."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(unit: str, key: str) -> str:
    values = settings(unit).get(key)
    assert values and len(values) == 1, f"{unit}: expected one {key}=, got {values}"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span as used in the units: "90", "30s", "3min", "2min 30s", "1h"."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), f"unparsed span {span!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def runnable_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of the units whose ExecStart runs this checkout's imgwatch (verify checks it exists),
    plus an instance of the worker template."""
    folder = tmp_path_factory.mktemp("units")
    for unit in UNITS:
        text = (SYSTEMD_DIR / unit).read_text()
        assert f"ExecStart={INSTALLED_EXEC} " in text
        runnable = text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={sys.executable} -m imgwatch ")
        (folder / unit).write_text(runnable)
    shutil.copy(folder / "imgwatch-worker@.service", folder / "imgwatch-worker@0.service")
    return folder


# -- what the units say ---------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_units_notify_restart_and_run_as_imgwatch(unit: str) -> None:
    command, _ = UNITS[unit]
    assert one(unit, "ExecStart") == f"{INSTALLED_EXEC} {command}"
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"  # only the main process: workers' READY=1 goes to `run`
    assert seconds(one(unit, "WatchdogSec")) >= 60
    assert one(unit, "Restart") == "on-failure"
    # RestartSec paces automatic restarts so that they never reach the start limit: an outage of
    # Redis, Neo4j or a share is ridden out however long it lasts
    restarts_in_window = seconds(one(unit, "StartLimitIntervalSec")) / seconds(one(unit, "RestartSec"))
    assert restarts_in_window < int(one(unit, "StartLimitBurst"))
    assert (one(unit, "User"), one(unit, "Group"), one(unit, "StateDirectory")) == ("imgwatch",) * 3
    env = settings(unit)["Environment"]
    assert "IMGWATCH_CONFIG=/etc/imgwatch/config.toml" in env and "IMGWATCH_GENERAL_DATA_DIR=%S/imgwatch" in env
    assert one(unit, "EnvironmentFile") == "-/etc/imgwatch/imgwatch.env"


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened(unit: str) -> None:
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
        "ProtectProc": "invisible", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native", "LockPersonality": "yes", "RestrictRealtime": "yes",
        "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "RemoveIPC": "yes", "CapabilityBoundingSet": "",
        "UMask": "0077", "SystemCallErrorNumber": "EPERM",
    }
    assert {key: one(unit, key) for key in expected} == expected
    assert settings(unit)["SystemCallFilter"] == ["@system-service", "~@privileged"]


def test_one_machine_unit_has_no_network_and_stops_its_workers_first() -> None:
    from imgwatch.supervisor import WORKER_STOP_GRACE_SECONDS

    unit = "imgwatch.service"
    assert (one(unit, "IPAddressDeny"), one(unit, "IPAddressAllow")) == ("any", "localhost")
    assert one(unit, "PrivateDevices") == "yes"
    # SIGTERM to `imgwatch run` alone: it stops the workers, then the queue they still need
    assert one(unit, "KillMode") == "mixed"
    assert seconds(one(unit, "TimeoutStopSec")) > WORKER_STOP_GRACE_SECONDS + 30  # + the queue's shutdown
    assert "MemoryDenyWriteExecute" not in settings(unit)  # PyTorch's oneDNN JIT needs W+X memory


def test_daemon_unit_denies_writable_executable_memory() -> None:
    unit = "imgwatch-daemon.service"
    assert one(unit, "MemoryDenyWriteExecute") == "yes"  # it loads no model
    assert one(unit, "PrivateDevices") == "yes"


def test_worker_template_gets_its_gpu_and_only_gpu_devices() -> None:
    unit = "imgwatch-worker@.service"
    env = settings(unit)["Environment"]
    assert "CUDA_VISIBLE_DEVICES=%i" in env and "IMGWATCH_EMBEDDING_DEVICE=cuda" in env
    assert (one(unit, "PrivateDevices"), one(unit, "DevicePolicy")) == ("no", "closed")
    assert settings(unit)["DeviceAllow"] == ["char-nvidia-frontend rw", "char-nvidia-uvm rw", "char-nvidia-caps r"]
    assert "MemoryDenyWriteExecute" not in settings(unit)


def test_env_example_names_only_real_settings() -> None:
    text = (SYSTEMD_DIR / "imgwatch.env.example").read_text()
    assignments = dict(re.findall(r"^#?(IMGWATCH_[A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE))
    assert len(assignments) >= 10
    config = Config()
    known = {env_var(f"{section}.{key}") for section in SECTIONS for key in vars(getattr(config, section))}
    assert set(assignments) <= known - {CONFIG_ENV, NEO4J_PASSWORD_ENV}  # secrets: only file paths
    assert not re.search(r"^IMGWATCH_", text, flags=re.MULTILINE), "the example sets nothing until uncommented"
    loaded = load_config(None, {}, environ=assignments)  # every example value is valid
    assert loaded.general.store == "neo4j" and loaded.queue.password_file == "/etc/imgwatch/redis-password"


def test_the_service_docs_tell_how_to_install_the_units() -> None:
    section = SERVICE_DOCS.read_text()
    for needle in ["systemd/imgwatch.service", "imgwatch-daemon.service", "imgwatch-worker@", "imgwatch.env.example",
                   "useradd --system", "systemctl enable --now", "journalctl -u imgwatch", "/etc/imgwatch/config.toml",
                   "resnet50-11ad3fa6.pth", "systemctl restart"]:
        assert needle in section, needle


# -- systemd-analyze -------------------------------------------------------------------


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [*UNITS, "imgwatch-worker@0.service"])
def test_systemd_analyze_verify_is_clean(runnable_units: Path, unit: str) -> None:
    result = subprocess.run([SYSTEMD_ANALYZE or "systemd-analyze", "verify", str(runnable_units / unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys and bad values too (it warns and ignores them): no output is the bar
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
@pytest.mark.parametrize(("unit", "highest"), [
    ("imgwatch.service", UNITS["imgwatch.service"][1]),
    ("imgwatch-daemon.service", UNITS["imgwatch-daemon.service"][1]),
    ("imgwatch-worker@0.service", UNITS["imgwatch-worker@.service"][1]),
])
def test_systemd_analyze_security_exposure(runnable_units: Path, unit: str, highest: float) -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE or "systemd-analyze", "security", "--offline=yes", "--no-pager", str(runnable_units / unit)],
        capture_output=True, text=True, timeout=60, check=False)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= highest, result.stdout


# -- logging to the journal (log.py) -------------------------------------------------------

_LOG_SCRIPT = """
import logging, sys
from imgwatch.log import configure_logging, get_logger
configure_logging(sys.argv[1], "info")
get_logger("imgwatch.test").info("worker_ready", model="resnet50")
get_logger("imgwatch.test").warning("root_missing", root="/srv/photos")
logging.getLogger("rq.worker").warning("library says %s", "hello")
"""
ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")  # structlog: T, stdlib: space


def _log_lines(tmp_path: Path, fmt: str, journal_stream: str | None) -> list[str]:
    """Run imgwatch's logging set-up in a process whose stderr is a file, as journald's stream is."""
    stderr_file = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal_stream == "this-file":
        stderr_file.touch()
        stat = stderr_file.stat()
        journal_stream = f"{stat.st_dev}:{stat.st_ino}"
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with open(stderr_file, "a") as stderr:
        subprocess.run([sys.executable, "-c", _LOG_SCRIPT, fmt], env=env, stderr=stderr, check=True, timeout=60)
    return stderr_file.read_text().splitlines()


@pytest.mark.parametrize("fmt", ["auto", "console"])
def test_journal_lines_have_a_priority_and_no_timestamp(tmp_path: Path, fmt: str) -> None:
    info, warning, library = _log_lines(tmp_path, fmt, journal_stream="this-file")
    assert info.startswith("<6>") and "worker_ready" in info and "model=resnet50" in info
    assert warning.startswith("<4>") and "root_missing" in warning
    assert library == "<4>WARNING rq.worker: library says hello"
    for line in (info, warning, library):
        assert not ISO_TIMESTAMP.search(line), line  # journald stamps every line itself
        assert "\x1b[" not in line, line  # no colour codes in the journal


def test_journal_json_lines_keep_their_timestamp_field(tmp_path: Path) -> None:
    info, warning, _library = _log_lines(tmp_path, "json", journal_stream="this-file")
    assert info.startswith("<6>{") and warning.startswith("<4>{")
    record = json.loads(info[3:])  # journald strips the <N> prefix: the message is the JSON object
    assert record["event"] == "worker_ready" and record["level"] == "info" and ISO_TIMESTAMP.match(record["timestamp"])


@pytest.mark.parametrize("journal_stream", [None, "1:2", "garbage"])
def test_without_the_journal_lines_are_json_with_timestamps(tmp_path: Path, journal_stream: str | None) -> None:
    # JOURNAL_STREAM naming another stream (inherited by a child whose stderr was redirected) is not the journal
    info, warning, library = _log_lines(tmp_path, "auto", journal_stream=journal_stream)
    assert json.loads(info)["event"] == "worker_ready" and ISO_TIMESTAMP.match(json.loads(info)["timestamp"])
    assert json.loads(warning)["level"] == "warning"
    assert ISO_TIMESTAMP.match(library) and library.endswith("WARNING rq.worker: library says hello")


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as stream, open(tmp_path / "other", "w") as other:
        monkeypatch.setattr(sys, "stderr", stream)
        stat = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert imgwatch_log.stderr_is_journal()
        monkeypatch.setattr(sys, "stderr", other)
        assert not imgwatch_log.stderr_is_journal()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not imgwatch_log.stderr_is_journal()
