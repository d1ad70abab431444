"""A moved folder of photos under `imgwatch run`: how long until the store follows, and model time spent.

    python bench/moves.py [--photos 1000] [--weights random] [--workers 1]

Makes PHOTOS small distinct JPEGs in WATCHED/album, starts `imgwatch run WATCHED` on a fresh
data dir and waits until every photo is indexed and linked and the queue is idle. Then it
renames the folder (`mv WATCHED/album WATCHED/2024/album`, one rename(2)) and measures:

- until the store holds every new path and as many links as before, with every link that
  touched the folder now on the new paths (what `imgwatch similar` answers);
- until the queue is idle again (the follow-up index jobs of both ends are done);
- forward passes during the move: the images the workers' job_done lines counted as
  indexed minus those reused by content hash (should be 0; the links are compared too).
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
from pathlib import Path

import numpy as np
from PIL import Image

from imgwatch.datadir import EMBEDDED_DB_NAME
from imgwatch.store import EmbeddedGraphStore


def make_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):  # smooth random colour fields: small, distinct, decodable
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((128, 96), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=85)


def log_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def queue_idle(env: dict[str, str]) -> bool:
    status = json.loads(subprocess.run([sys.executable, "-m", "imgwatch", "status", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    queue = status.get("queue") or {}
    return not any(queue.get(key) for key in ("queued", "running", "queued_jobs", "running_jobs"))


def wait(condition, what: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 1800.0,
         poll: float = 0.02) -> float:
    started = time.perf_counter()
    while not condition():
        if process.poll() is not None:
            raise SystemExit(f"imgwatch run exited early:\n{log.read_text()[-4000:]}")
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-moves-") as tmp:
        data_dir, watched = Path(tmp) / "data", Path(tmp) / "photos"
        album, moved = watched / "album", watched / "2024" / "album"
        make_photos(album, args.photos)
        (watched / "2024").mkdir()
        env = dict(os.environ, IMGWATCH_GENERAL_DATA_DIR=str(data_dir), IMGWATCH_EMBEDDING_WEIGHTS=args.weights,
                   IMGWATCH_EMBEDDING_DEVICE="cpu", IMGWATCH_GENERAL_LOG_FORMAT="json",
                   XDG_CONFIG_HOME=str(Path(tmp) / "xdg"))
        log = Path(tmp) / "run.log"
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-m", "imgwatch", "run", str(watched),
                                        "--workers", str(args.workers)], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait(lambda: (data_dir / EMBEDDED_DB_NAME).exists(), "the store", process, log)
            with EmbeddedGraphStore(data_dir / EMBEDDED_DB_NAME) as store:
                began = time.perf_counter()
                wait(lambda: store.stats().images >= args.photos, "the first indexing", process, log, poll=0.5)
                wait(lambda: queue_idle(env), "an idle queue", process, log, poll=0.5)
                index_seconds = time.perf_counter() - began
                links_before = sorted((k.a, k.b, k.score) for k in store.links_at_least(-1.0))
                mark = len(log_lines(log))

                started = time.perf_counter()
                album.rename(moved)
                renamed_at = wait(lambda: sum(1 for _ in store.file_states(under=str(moved))) == args.photos
                                  and store.stats().links == len(links_before), "the renamed paths", process, log)
                idle_at = wait(lambda: queue_idle(env), "an idle queue after the move", process, log, poll=0.25)
                time.sleep(1.0)  # the last job_done line

                prefix, new_prefix = str(album) + os.sep, str(moved) + os.sep
                moved_path = lambda p: new_prefix + p[len(prefix):] if p.startswith(prefix) else p  # noqa: E731
                expected = sorted((*sorted((moved_path(a), moved_path(b))), s) for a, b, s in links_before)
                links_after = sorted((k.a, k.b, k.score) for k in store.links_at_least(-1.0))
        finally:
            process.send_signal(2)
            process.wait(timeout=120)
        after = log_lines(log)[mark:]
        jobs = [line for line in after if line.get("event") == "job_done"]
        passes = sum(int(line.get("indexed", 0)) - int(line.get("reused", 0)) for line in jobs)
        moves = [line for line in after if line.get("event") == "moves_done"]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"weights {args.weights}, {args.workers} worker(s)")
    print(f"first indexing of {args.photos} photos: {index_seconds:.1f} s; {len(links_before)} links")
    print(f"mv of the folder -> store holds the {args.photos} new paths with their links: "
          f"{renamed_at - started:.2f} s")
    print(f"mv -> queue idle (follow-up index jobs of both ends done): {idle_at - started:.2f} s")
    print(f"forward passes during the move: {passes} (index jobs: {len(jobs)}, "
          f"move jobs: {len(moves)}, renamed: {sum(int(m.get('renamed', 0)) for m in moves)})")
    print(f"links after == links before with renamed paths: {links_after == expected}")


if __name__ == "__main__":
    main()
