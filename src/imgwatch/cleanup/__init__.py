"""Clearing duplicates without losing a photo: plan (plan.py), manifest (manifest.py), moving one
file safely (transfer.py), the desktop's trash (trash.py), and carrying a manifest out or back
with the store in step (mover.py). Nothing here deletes a photo."""

from imgwatch.cleanup.manifest import Manifest, Move
from imgwatch.cleanup.mover import Cleanup
from imgwatch.cleanup.plan import Destination, Refusal

__all__ = ["Cleanup", "Destination", "Manifest", "Move", "Refusal"]
