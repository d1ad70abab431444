from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.config import ConfigError
from imgwatch.supervisor import AlreadyRunning, exclusive_run_lock
from tests.conftest import make_config


def test_one_run_per_data_dir_and_a_refused_one_leaves_the_lock_intact(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with exclusive_run_lock(config):
        owner = (tmp_path / "data" / "run.lock").read_text()
        with pytest.raises(AlreadyRunning, match="already using"), exclusive_run_lock(config):
            pass
        assert (tmp_path / "data" / "run.lock").read_text() == owner != ""
    with exclusive_run_lock(config):  # released on exit
        pass


def test_an_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot use data dir"), exclusive_run_lock(make_config(blocker / "x")):
        pass
