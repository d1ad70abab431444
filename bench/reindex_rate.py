"""Reindex rate against ingest rate under `imgwatch run`, on one machine.

    python bench/reindex_rate.py PHOTO_DIR [--workers 1] [--engine auto|torch|onnxruntime]

`imgwatch run` indexes PHOTO_DIR on a fresh data dir with random weights of seed 0, timed from its
worker's `worker_ready` log line until the store holds every photo (the ingest rate, as bench/e2e.py
times it). Then `imgwatch reindex` changes the model to random weights of seed 1 (another vector
space, the same cost per photo), timed from the command until the store's model is the new one: the
workers load the second model, embed every photo into the pending space and one of them switches.
Reported: both rates, the reindex without its model load (from the `reindex_model_loaded` line to
the `model_switched` one), and the switch itself (its `seconds` field).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from imgwatch.datadir import EMBEDDED_DB_NAME
from imgwatch.store import EmbeddedGraphStore

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
NEW_MODEL = "resnet50/random-seed1"


def _logged(log_path: Path, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def _at(line: dict[str, object]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def _wait(condition: object, process: subprocess.Popen[bytes], log_path: Path) -> None:
    while not condition():  # type: ignore[operator]
        if process.poll() is not None:
            raise SystemExit(f"imgwatch run exited early:\n{log_path.read_text()}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--engine", default=None, help="embedding.engine for the run (default: the config's)")
    args = parser.parse_args()
    photos = sorted(p for p in args.photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{len(photos)} photos, {args.workers} worker(s), engine {args.engine or 'the config default'}")
    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-") as data_dir:
        env = dict(os.environ, IMGWATCH_GENERAL_DATA_DIR=data_dir, IMGWATCH_EMBEDDING_WEIGHTS="random",
                   IMGWATCH_EMBEDDING_SEED="0", IMGWATCH_GENERAL_LOG_FORMAT="json",
                   XDG_CONFIG_HOME=os.path.join(data_dir, "xdg"))
        if args.engine:
            env["IMGWATCH_EMBEDDING_ENGINE"] = args.engine
        log_path = Path(data_dir) / "run.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "imgwatch", "run", str(args.photo_dir), "--workers", str(args.workers)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: '"worker_ready"' in log_path.read_text(), process, log_path)
            ready_at = time.perf_counter()
            with EmbeddedGraphStore(Path(data_dir) / EMBEDDED_DB_NAME) as store:
                _wait(lambda: store.stats().images >= len(photos), process, log_path)
                ingest_seconds = time.perf_counter() - ready_at
                asked_at, asked_wall = time.perf_counter(), time.time()
                subprocess.run([sys.executable, "-m", "imgwatch", "reindex"], check=True, capture_output=True,
                               env=dict(env, IMGWATCH_EMBEDDING_SEED="1"))
                _wait(lambda: (store.recorded_model() or ("",))[0] == NEW_MODEL, process, log_path)
                reindex_seconds = time.perf_counter() - asked_at
        finally:
            process.send_signal(2)
            process.wait(timeout=120)
        loaded = min(_at(line) for line in _logged(log_path, "reindex_model_loaded"))
        switched = _logged(log_path, "model_switched")[0]
        jobs = _logged(log_path, "reindex_job_done")
    count = len(photos)
    embedding_seconds = _at(switched) - loaded
    print(f"ingest:  {count / ingest_seconds:6.2f} images/s ({ingest_seconds:.1f} s from worker_ready)")
    print(f"reindex: {count / reindex_seconds:6.2f} images/s ({reindex_seconds:.1f} s from `imgwatch reindex` to the "
          f"switch; {loaded - asked_wall:.1f} s of it loading the second model)")
    print(f"reindex without the model load: {count / embedding_seconds:6.2f} images/s "
          f"({embedding_seconds:.1f} s; {sum(float(line['seconds']) for line in jobs):.1f} s inside "
          f"{len(jobs)} reindex jobs)")
    print(f"switch:  {switched['seconds']} s ({switched['links']} links of the new space computed, then one "
          "transaction)")


if __name__ == "__main__":
    main()
