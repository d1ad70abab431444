"""Freed decode memory goes back to the system: a process returns to its resting size.

Run in a fresh interpreter, as the web server runs: threads decode a big picture one after
another, each freeing it, and glibc keeps what they freed (its mmap threshold has risen past
Pillow's 16 MB blocks, so they come from the thread arenas). Each remedy alone brings the
process back: give_back_freed_memory after the decodes, or give_large_frees_back_at_once before.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

DECODES = """
import json, sys, threading
from PIL import Image
from imgwatch import memory

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))

if sys.argv[1] == "large frees given back at once":
    memory.give_large_frees_back_at_once()
Image.new("RGB", (4000, 4000)).load()  # a first big block, mapped and freed: glibc raises its mmap threshold
rest = rss_mib()
for _ in range(3):  # as the server's threadpool threads do, one at a time
    thread = threading.Thread(target=lambda: Image.new("RGB", (7000, 7000), (1, 2, 3)).reduce(8))
    thread.start()
    thread.join()
if sys.argv[1] == "freed memory given back after":
    memory.give_back_freed_memory()
print(json.dumps({"rest": rest, "after": rss_mib()}))
"""
PICTURE_MIB = 7000 * 7000 * 4 // 2**20  # RGB is kept as RGBX: 187 MiB


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc keeps freed memory this way")
@pytest.mark.parametrize("remedy", ["freed memory given back after", "large frees given back at once"])
def test_memory_freed_by_decodes_in_threads_goes_back_to_the_system(remedy: str) -> None:
    result = subprocess.run([sys.executable, "-c", DECODES, remedy], capture_output=True, text=True, timeout=120,
                            check=True)
    rss = json.loads(result.stdout)
    assert rss["after"] - rss["rest"] < PICTURE_MIB // 4, rss
