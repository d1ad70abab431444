"""Model identities: which vector space a weights setting gives, known before loading it.

An identity is ``resnet50/<weights id>``; the store records the one its workers embed with.
A query (CLI search, web) must use the same, so it checks before loading the model and,
on a mismatch, says which setting gives the store's.
"""

from __future__ import annotations

import hashlib
import re

from imgwatch.errors import ModelMismatchError

MODEL_NAME = "resnet50"
PRETRAINED_ID = "IMAGENET1K_V2"  # torchvision's ResNet50_Weights.IMAGENET1K_V2


def random_weights_id(seed: int) -> str:
    return f"random-seed{seed}"


def file_weights_id(sha256_hex: str) -> str:
    return f"file-{sha256_hex[:12]}"


def weights_identity(weights: str, seed: int = 0) -> str | None:
    """The identity ``load_model(weights, seed=seed)`` gives; None for a file that cannot be
    read (loading it then says why). A weights file is hashed, not loaded."""
    if weights == "imagenet":
        weights_id = PRETRAINED_ID
    elif weights == "random":
        weights_id = random_weights_id(seed)
    else:
        try:
            with open(weights, "rb") as handle:
                weights_id = file_weights_id(hashlib.file_digest(handle, "sha256").hexdigest())
        except OSError:
            return None
    return f"{MODEL_NAME}/{weights_id}"


def weights_setting(identity: str) -> str:
    """How to configure the weights that give ``identity`` (for error messages)."""
    weights_id = identity.removeprefix(f"{MODEL_NAME}/")
    if weights_id == PRETRAINED_ID:
        return "--weights imagenet (embedding.weights = \"imagenet\")"
    if seed := re.fullmatch(r"random-seed(\d+)", weights_id):
        return f"--weights random and embedding.seed = {seed[1]}" + (" (the default)" if seed[1] == "0" else "")
    if digest := re.fullmatch(r"file-([0-9a-f]+)", weights_id):
        return (f"--weights PATH, the weights file the workers use (its SHA-256 starts with {digest[1]}: "
                "check with sha256sum)")
    return f"the weights the workers use ({identity})"


def check_query_model(recorded: str | None, identity: str | None, where: str) -> None:
    """Raise ModelMismatchError when a query whose model has ``identity`` (see weights_identity)
    would embed in another space than the store's ``recorded`` one; ``where`` says how to
    run the query again (e.g. "start `imgwatch web`")."""
    if recorded is None or identity is None or identity == recorded:
        return
    raise ModelMismatchError(
        f"the store holds embeddings from {recorded}, but the configured weights give {identity}: "
        f"{where} with {weights_setting(recorded)}"
    )
