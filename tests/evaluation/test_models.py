"""One function turns a model setting into a loaded engine, refusing before it loads what it can."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgwatch.config import load_config
from imgwatch.errors import ConfigError, WeightsUnavailable
from imgwatch.evaluation.models import load_eval_model
from tests.embedding.tiny_models import TINY_DIM, write_onnx
from tests.helpers import make_config


def test_the_store_model_and_another_one(tmp_path: Path, calibrated_weights: Path) -> None:
    config = make_config(tmp_path / "data", **{"embedding.engine": "torch"})  # weights: random, seed 0
    recorded = ("resnet50/random-seed0", None)
    own = load_eval_model(config, None, recorded)
    assert own.identity == "resnet50/random-seed0" and own.in_store_space and own.setting == "the store's model"
    other = load_eval_model(config, str(calibrated_weights), recorded)
    assert other.identity.startswith("resnet50/file-") and not other.in_store_space
    assert other.setting == str(calibrated_weights) and other.engine.engine == "torch"
    assert other.plan.batch_size >= 1


def test_a_store_weights_file_that_moved_is_refused_before_loading(tmp_path: Path, calibrated_weights: Path) -> None:
    config = load_config(overrides={"general.data_dir": str(tmp_path / "data"), "embedding.device": "cpu",
                                    "embedding.engine": "torch"},
                         environ={})  # no weights configured: the store's
    moved = tmp_path / "weights.pth"
    shutil.copyfile(calibrated_weights, moved)
    recorded = load_eval_model(config, str(moved), None).identity
    moved.unlink()
    with pytest.raises(WeightsUnavailable, match="no longer exists.*run `imgwatch eval` again with --weights"):
        load_eval_model(config, None, (recorded, (str(moved), "0" * 64)))


def test_a_model_file_is_named_by_a_config_file_that_declares_its_preprocessing(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", **{"embedding.engine": "auto"})  # the store's: ResNet50, random
    model_file = write_onnx(tmp_path / "tiny.onnx", dim=TINY_DIM, size=64)
    described = tmp_path / "tiny.toml"
    described.write_text(f'[embedding]\nmodel = "{model_file}"\n\n[embedding.preprocess]\npolicy = "stretch"\n'
                         f"size = 64\ndim = {TINY_DIM}\n")
    other = load_eval_model(config, str(described), ("resnet50/random-seed0", None))
    assert other.identity.startswith("onnx/file-") and not other.in_store_space
    assert other.engine.dim == TINY_DIM and other.setting == str(described)
    with pytest.raises(ConfigError, match=r"--model .*tiny\.onnx: a model file needs its preprocessing and dim"):
        load_eval_model(config, str(model_file), None)
    described.write_text(f'[embedding]\nmodel = "{model_file}"\n')  # no dim: refused as any config would be
    with pytest.raises(ConfigError, match="embedding.preprocess.dim"):
        load_eval_model(config, str(described), None)
