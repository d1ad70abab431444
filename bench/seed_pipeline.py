"""The naive "seed" way to find similar photos, as a baseline for imgwatch's throughput.

    python bench/seed_pipeline.py PHOTO_DIR [--threshold 0.9] [--weights PATH]

What a first script from the torchvision tutorial does, one image at a time: a full PIL
decode, the article's transforms (Resize(256), CenterCrop(224), ToTensor, Normalize), one
unbatched forward pass of torchvision's ResNet50 with the classifier removed, default torch
threading; at the end, every pair's cosine and a link for each pair at or above the
threshold. No queue, no store, no overlap of decoding with inference. The clock starts
after the model is built and stops once the links are computed.
Random weights unless --weights names a state_dict file (the speed is the same).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision import models, transforms

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

ARTICLE_TRANSFORMS = transforms.Compose([
    transforms.Resize(256),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])


@dataclass(frozen=True)
class SeedRun:
    images: int
    seconds: float  # decode + embed + all-pairs links, model building excluded
    embed_seconds: float  # of which the per-image loop (decode + transforms + forward pass)
    links: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def photo_paths(photo_dir: Path) -> list[Path]:
    return sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def build_network(weights: str | None = None, device: str = "cpu") -> torch.nn.Module:
    network = models.resnet50()
    if weights:
        network.load_state_dict(torch.load(weights, map_location="cpu"))
    network.fc = torch.nn.Identity()  # the 2048-d pooled features are the embedding
    return network.eval().to(device)


def run_seed_pipeline(paths: list[Path], network: torch.nn.Module, threshold: float = 0.9) -> SeedRun:
    device = next(network.parameters()).device
    started = time.perf_counter()
    embeddings = []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")  # full-resolution decode
            batch_of_one = ARTICLE_TRANSFORMS(image).unsqueeze(0).to(device)
            embeddings.append(network(batch_of_one)[0].cpu())
    embedded_at = time.perf_counter()
    unit = torch.nn.functional.normalize(torch.stack(embeddings), dim=1)
    similarity = unit @ unit.T
    above = torch.triu(similarity >= threshold, diagonal=1)  # each unordered pair once, no self-pairs
    links = int(above.sum())
    finished = time.perf_counter()
    return SeedRun(len(paths), finished - started, embedded_at - started, links)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--weights", default=None, help="a ResNet50 state_dict file (default: random weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    paths = photo_paths(args.photo_dir)
    if not paths:
        raise SystemExit(f"no photos in {args.photo_dir}; make some with bench/photos.py")
    run = run_seed_pipeline(paths, build_network(args.weights, args.device), args.threshold)
    print(f"seed-style: {run.images_per_second:7.2f} images/s ({run.images} photos in {run.seconds:.1f} s, "
          f"{run.embed_seconds:.1f} s decoding and embedding, {torch.get_num_threads()} torch threads; "
          f"{run.links} links >= {args.threshold})")


if __name__ == "__main__":
    main()
