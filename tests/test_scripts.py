"""The README's commands: `scripts/run` as a user types it, from their own folder."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import process_env, store_mismatch, wait_for

CHECKOUT = Path(__file__).resolve().parent.parent


def test_scripts_run_resolves_relative_folders_against_the_callers_directory(
    tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    home = tmp_path / "home"
    write_photo(home / "Pictures" / "coffee.jpg", "coffee")
    env = process_env(tmp_path)
    del env["IMGWATCH_GENERAL_DATA_DIR"]  # given relatively on the command line instead
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(CHECKOUT / "scripts" / "run"), "Pictures", "--data-dir", "data"],
                                   cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: process.poll() is not None or '"watching"' in log_path.read_text(),
                 f"the run to start watching; log:\n{log_path.read_text()}")
        [watching] = [json.loads(line) for line in log_path.read_text().splitlines()
                      if line.startswith("{") and '"watching"' in line]
        assert watching["roots"] == [str(home / "Pictures")]
        wait_for(lambda: store_mismatch(home / "data", home / "Pictures") is None,
                 f"the photo indexed in ./data; log:\n{log_path.read_text()}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log_path.read_text()
