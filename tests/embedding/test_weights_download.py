"""Downloading the ImageNet weights says so through the log, never by a print into a progress bar's line."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from imgwatch.embedding.model import download_once


def test_a_download_is_one_log_line_and_nothing_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    served = tmp_path / "served" / "resnet50-0123abcd.pth"  # a real download, from a file:// URL
    served.parent.mkdir()
    served.write_bytes(b"not really weights, but bytes to fetch " * 1000)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    with structlog.testing.capture_logs() as logs:
        cached = download_once(served.as_uri())
        again = download_once(served.as_uri())  # from the cache: nothing to say

    assert cached == again == tmp_path / "torch" / "hub" / "checkpoints" / served.name  # where torchvision looks
    assert cached.read_bytes() == served.read_bytes()
    assert [(log["event"], log["to"]) for log in logs] == [("weights_download", str(cached))]
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # torch.hub prints "Downloading: ..." to stdout
