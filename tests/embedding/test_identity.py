"""Model identities known before loading: the same as load_model gives, and the advice on a mismatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.embedding import EmbeddingModel
from imgwatch.embedding.identity import check_query_model, weights_identity, weights_setting
from imgwatch.errors import ModelMismatchError


def test_a_weights_setting_names_the_identity_its_model_has(
    random_model: EmbeddingModel, calibrated_weights: Path, calibrated_model: EmbeddingModel,
) -> None:
    assert weights_identity("random", seed=0) == random_model.identity == "resnet50/random-seed0"
    assert weights_identity(str(calibrated_weights)) == calibrated_model.identity
    assert weights_identity("imagenet") == "resnet50/IMAGENET1K_V2"  # torchvision's download, not loadable here
    assert weights_identity("/no/such/weights.pth") is None  # loading it says what is wrong


@pytest.mark.parametrize(("identity", "advice"), [
    ("resnet50/IMAGENET1K_V2", "--weights imagenet"),
    ("resnet50/random-seed0", "--weights random"),
    ("resnet50/random-seed7", "--weights random and embedding.seed = 7"),
    ("resnet50/file-0123456789ab", "SHA-256 starts with 0123456789ab"),
])
def test_the_advice_names_the_setting_that_gives_the_stores_model(identity: str, advice: str) -> None:
    assert advice in weights_setting(identity)


def test_a_query_with_other_weights_is_refused_before_the_model_loads() -> None:
    check_query_model(None, "resnet50/IMAGENET1K_V2", "search again")  # nothing indexed yet: anything goes
    check_query_model("resnet50/random-seed0", "resnet50/random-seed0", "search again")
    check_query_model("resnet50/random-seed0", None, "search again")  # an unreadable file: load_model says why
    with pytest.raises(ModelMismatchError) as raised:
        check_query_model("resnet50/random-seed0", "resnet50/IMAGENET1K_V2", "search again")
    assert str(raised.value) == (
        "the store holds embeddings from resnet50/random-seed0, but the configured weights give "
        "resnet50/IMAGENET1K_V2: search again with --weights random and embedding.seed = 0 (the default)"
    )
