from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.errors import AlreadyRunning, DataDirUnusable
from tests.helpers import make_config


def test_one_run_per_data_dir_and_a_refused_one_leaves_the_lock_intact(tmp_path: Path) -> None:
    data_dir = make_config(tmp_path / "data").data_dir
    with data_dir.exclusive_run_lock():
        owner = (tmp_path / "data" / "run.lock").read_text()
        with pytest.raises(AlreadyRunning, match="already using"), data_dir.exclusive_run_lock():
            pass
        assert (tmp_path / "data" / "run.lock").read_text() == owner != ""
    with data_dir.exclusive_run_lock():  # released on exit
        pass


def test_an_unusable_data_dir_says_which_and_how_to_fix_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataDirUnusable, match="cannot use data dir.*--data-dir"), \
            make_config(blocker / "x").data_dir.exclusive_run_lock():
        pass
