"""Model identities known before loading (the same as load_model gives, and the advice on a mismatch), and
which weights a process loads for a store (the configured ones, else the store's own, hash-checked)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imgwatch.config import Config, load_config
from imgwatch.embedding import EmbeddingModel
from imgwatch.embedding.identity import (
    check_query_model,
    choose_weights,
    configured_model,
    query_weights,
    weights_identity,
    weights_setting,
)
from imgwatch.errors import ModelFileUnavailable, ModelMismatchError, WeightsUnavailable


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


# -- which weights a process loads for a store ------------------------------------------


@pytest.fixture
def unconfigured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The configuration of someone who set no weights anywhere (no config file, no environment)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    return load_config(environ={})


def configured(weights: str) -> Config:
    return load_config(overrides={"embedding.weights": weights}, environ={})


def stored_weights_file(path: Path) -> tuple[str, tuple[str, str]]:
    """A weights file (any bytes: choosing hashes, never loads) as a worker records it: the
    identity of the model it gives, and (absolute path, SHA-256)."""
    path.write_bytes(b"a ResNet50 state_dict")
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"resnet50/file-{sha256[:12]}", (str(path), sha256)


def test_with_no_weights_configured_the_stores_own_are_chosen(unconfigured: Config, tmp_path: Path) -> None:
    identity, recorded_file = stored_weights_file(tmp_path / "resnet50.pth")

    chosen = query_weights(unconfigured, identity, recorded_file, "search again")

    assert (chosen.weights, chosen.identity, chosen.file) == (recorded_file[0], identity, recorded_file)
    assert choose_weights(unconfigured, "resnet50/random-seed7", None, "search again").weights == "random"
    assert choose_weights(unconfigured, "resnet50/random-seed7", None, "search again").seed == 7
    assert choose_weights(unconfigured, "resnet50/IMAGENET1K_V2", None, "search again").weights == "imagenet"
    assert choose_weights(unconfigured, None, None, "search again").weights == "imagenet"  # nothing recorded yet


def test_a_store_from_before_weights_files_were_recorded_still_says_which_to_pass(unconfigured: Config) -> None:
    with pytest.raises(ModelMismatchError, match=r"give resnet50/IMAGENET1K_V2: search again with --weights PATH"):
        query_weights(unconfigured, "resnet50/file-0123456789ab", None, "search again")


def test_the_stores_weights_file_moved_or_changed_says_what_to_do(unconfigured: Config, tmp_path: Path) -> None:
    weights = tmp_path / "resnet50.pth"
    identity, recorded_file = stored_weights_file(weights)
    moved = tmp_path / "models" / "resnet50.pth"
    moved.parent.mkdir()
    os.rename(weights, moved)

    with pytest.raises(WeightsUnavailable) as raised:
        query_weights(unconfigured, identity, recorded_file, "search again")
    assert str(raised.value) == (
        f"the store holds embeddings from {identity}, made with the weights file {weights}, which no longer exists: "
        f"put the file back, or search again with --weights PATH, the weights file the workers use (its SHA-256 "
        f"starts with {recorded_file[1][:12]}: check with sha256sum)"
    )
    # Configured where it is now, it is used (and a worker records it there).
    chosen = choose_weights(configured(str(moved)), identity, recorded_file, "start imgwatch again")
    assert chosen.identity == identity and chosen.file == (str(moved), recorded_file[1])

    weights.write_bytes(b"other weights")
    with pytest.raises(WeightsUnavailable, match=r"which has changed since \(its SHA-256 now starts with "
                       + hashlib.sha256(b"other weights").hexdigest()[:12]):
        query_weights(unconfigured, identity, recorded_file, "search again")


def test_configured_weights_of_another_model_are_refused_naming_the_stores_file(tmp_path: Path) -> None:
    identity, recorded_file = stored_weights_file(tmp_path / "resnet50.pth")

    with pytest.raises(ModelMismatchError) as raised:
        query_weights(configured("imagenet"), identity, recorded_file, "search again")

    assert str(raised.value) == (
        f"the store holds embeddings from {identity}, but the configured weights give resnet50/IMAGENET1K_V2: "
        f"search again with --weights {recorded_file[0]}, the store's weights file (or with no weights setting at all)"
    )
    env_set = load_config(environ={"IMGWATCH_EMBEDDING_WEIGHTS": "random"})  # the environment configures too
    with pytest.raises(ModelMismatchError):
        query_weights(env_set, identity, recorded_file, "search again")


def test_a_weights_file_is_chosen_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity, recorded_file = stored_weights_file(tmp_path / "resnet50.pth")
    monkeypatch.chdir(tmp_path)

    chosen = choose_weights(configured("resnet50.pth"), None, None, "start imgwatch again")

    assert (chosen.weights, chosen.identity, chosen.file) == (recorded_file[0], identity, recorded_file)


# -- model files ---------------------------------------------------------------------------------


def model_file_config(model: Path, **preprocess: object) -> Config:
    values = {"embedding.model": str(model), "embedding.preprocess.dim": 512,
              **{f"embedding.preprocess.{key}": value for key, value in preprocess.items()}}
    return load_config(overrides=values, environ={})


def test_a_model_files_identity_is_its_kind_content_and_preprocessing(tmp_path: Path) -> None:
    model = tmp_path / "sscd.torchscript.pt"
    model.write_bytes(b"a TorchScript archive")  # choosing hashes, never loads
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()

    chosen = configured_model(model_file_config(model))

    assert chosen.identity is not None and chosen.identity.startswith(f"torchscript/file-{sha256[:12]}-preprocess-")
    assert (chosen.model, chosen.file, chosen.dim) == (str(model), (str(model), sha256), 512)
    assert configured_model(model_file_config(model)).identity == chosen.identity  # the same setting, the same space
    others = [configured_model(model_file_config(model, policy="stretch", size=320)).identity,
              configured_model(model_file_config(model, resize=288)).identity,
              configured_model(model_file_config(model, mean=[0.5, 0.5, 0.5])).identity]
    assert len({chosen.identity, *others}) == 4  # each preprocessing its own vector space
    onnx = tmp_path / "sscd.onnx"
    onnx.write_bytes(b"a TorchScript archive")
    assert configured_model(model_file_config(onnx)).identity == chosen.identity.replace("torchscript/", "onnx/")
    model.write_bytes(b"another model")
    assert configured_model(model_file_config(model)).identity != chosen.identity


def test_a_model_file_that_cannot_be_read_is_refused_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "gone.onnx"
    with pytest.raises(ModelFileUnavailable) as raised:
        configured_model(model_file_config(missing))
    assert str(raised.value) == (f"cannot read the model file {missing} (embedding.model, from command line): "
                                 'No such file or directory; fix the path, or set embedding.model = "resnet50"')


def test_a_query_with_another_model_than_the_stores_model_file_names_the_setting(tmp_path: Path) -> None:
    model = tmp_path / "dinov2.onnx"
    model.write_bytes(b"an ONNX graph")
    workers = configured_model(model_file_config(model, mean=[0.5, 0.5, 0.5]))
    assert workers.identity is not None and workers.file is not None

    assert query_weights(model_file_config(model, mean=[0.5, 0.5, 0.5]), workers.identity, workers.file,
                         "search again").identity == workers.identity
    for other in (configured("random"), model_file_config(model)):  # ResNet50; the file with other preprocessing
        with pytest.raises(ModelMismatchError) as raised:
            query_weights(other, workers.identity, workers.file, "search again")
        assert str(raised.value).startswith(f"the store holds embeddings from {workers.identity}, but the configured ")
        assert str(raised.value).endswith(
            f'search again with embedding.model = "{model}", the store\'s onnx model file, and the '
            f"[embedding.preprocess] the workers use (its hash: {workers.preprocessing.fingerprint})")
