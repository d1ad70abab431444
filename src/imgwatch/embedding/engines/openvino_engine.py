"""OpenVINO on the CPU in mixed precision: ResNet50's first stages in float32, the rest in bfloat16.

On CPUs that compute bfloat16 natively (AMX, AVX512-BF16) bfloat16 convolutions run several
times faster than float32 ones, but rounding the early activations moves embeddings too far:
bfloat16 throughout gave cosine 0.9957 with torch's on real photos (the stem and layer1 lose
the most). From layer3 on (56 % of the multiply-adds) bfloat16 keeps cosine 0.99994 and the
whole network runs ~1.6x ONNX Runtime's float32 on a 2-core Sapphire Rapids VM
(bench/engines.py). So the network is exported as two ONNX parts, compiled once in float32
and once in bfloat16. A CPU without native bfloat16 runs both parts in float32 (exact).
"""

from __future__ import annotations

import functools
import os
import queue
import sys
from io import BytesIO

# `import openvino` also imports its model conversion tool, which reports the import to Google
# Analytics (openvino-telemetry) unless the user has opted out: no consent file counts as yes.
# imgwatch reads ONNX and converts nothing, and a photo service must not phone home, so the tool
# stays unimported; openvino's __init__ skips it when its import fails.
sys.modules.setdefault("openvino.tools.ovc", None)  # type: ignore[arg-type]

import numpy as np  # noqa: E402
import openvino  # noqa: E402
import torch  # noqa: E402

from imgwatch.embedding.engines.contract import MIXED_PRECISION_COSINE, ExportedEngine  # noqa: E402
from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing  # noqa: E402

ENGINE_NAME = "openvino"
# The first stage run in bfloat16; everything before it stays float32.
BFLOAT16_FROM = "layer3"


def split_network(network: torch.nn.Module) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """(float32 part, bfloat16 part) of a headless torchvision ResNet: their composition is ``network``."""
    children = [(name, module) for name, module in network.named_children() if name != "fc"]
    names = [name for name, _ in children]
    if BFLOAT16_FROM not in names or "avgpool" not in names:
        raise ValueError(f"expected a torchvision ResNet with {BFLOAT16_FROM} and avgpool, got {names}")
    cut = names.index(BFLOAT16_FROM)
    first = torch.nn.Sequential(*[module for _, module in children[:cut]])
    rest = torch.nn.Sequential(*[module for _, module in children[cut:]], torch.nn.Flatten(1))
    return first.eval(), rest.eval()


@functools.cache  # the CPU does not change: auto's choice and the engine ask it once between them
def native_bfloat16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (else it would emulate or refuse it)."""
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoEngine(ExportedEngine):
    """Two compiled parts called one after the other, with one pair of infer requests per caller.

    ``threads`` is each call's thread count (0: every core). The parts are compiled with one
    OpenVINO stream per ``threads`` cores, so the Embedder's concurrent streams each get theirs.
    ``second_part`` None: ``first_part`` is the whole network, run in float32 (a model file, whose
    layers that bear bfloat16 are not known).
    """

    engine = ENGINE_NAME

    def __init__(
        self, first_part: bytes, second_part: bytes | None, name: str, weights_id: str, dim: int, threads: int = 0,
        preprocessing: Preprocessing = IMAGENET,
    ) -> None:
        super().__init__(name, weights_id, dim, preprocessing)
        self.bfloat16 = second_part is not None and native_bfloat16()
        if self.bfloat16:
            self.precision, self.min_cosine = "float32+bfloat16", MIXED_PRECISION_COSINE
        cores = max(1, len(os.sched_getaffinity(0)))
        threads = threads or cores
        settings = {
            "PERFORMANCE_HINT": "LATENCY",  # explicit streams/threads below; no request batching
            "NUM_STREAMS": str(max(1, cores // threads)),
            "INFERENCE_NUM_THREADS": str(max(threads, cores // threads * threads)),
        }
        core = openvino.Core()
        self._first = core.compile_model(
            core.read_model(BytesIO(first_part)), "CPU", {**settings, "INFERENCE_PRECISION_HINT": "f32"})
        self._second = None if second_part is None else core.compile_model(
            core.read_model(BytesIO(second_part)), "CPU",
            {**settings, "INFERENCE_PRECISION_HINT": "bf16" if self.bfloat16 else "f32"})
        self._idle: queue.SimpleQueue[tuple[openvino.InferRequest, openvino.InferRequest | None]] = queue.SimpleQueue()

    def _features(self, images: np.ndarray) -> np.ndarray:
        try:
            first, second = self._idle.get_nowait()
        except queue.Empty:
            first = self._first.create_infer_request()
            second = None if self._second is None else self._second.create_infer_request()
        try:
            middle = first.infer({0: images})[0]
            if second is None:
                return np.array(middle)  # a copy: the request reuses its buffer
            return np.array(second.infer({0: middle})[0])
        finally:
            self._idle.put((first, second))
