from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.config import Config, ConfigError, env_var, load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_config_toml_documents_exactly_the_defaults() -> None:
    from_file = load_config(REPO / "config.toml", environ={})
    assert from_file == load_config(environ={"XDG_CONFIG_HOME": "/nonexistent"})
    assert from_file.links.threshold == 0.8 and from_file.links.top_k == 10
    assert from_file.watch.settle_seconds == 2 and from_file.queue.redis_url == ""


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[watch]\nsettle_seconds = 5\nbatch_size = 8\n[links]\ntop_k = 3\n')
    env = {env_var("watch.settle_seconds"): "7", env_var("general.roots"): "/a, /b"}
    config = load_config(config_file, {"watch.settle_seconds": 9.0}, environ=env)
    assert config.watch.settle_seconds == 9.0  # flag
    assert config.general.roots == ["/a", "/b"]  # environment, comma-separated list
    assert config.watch.batch_size == 8  # file
    assert config.links.top_k == 3  # file
    assert config.links.threshold == Config().links.threshold  # default
    assert load_config(config_file, environ=env).watch.settle_seconds == 7.0


def test_config_file_from_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[workers]\ncount = 3\n')
    assert load_config(environ={"IMGWATCH_CONFIG": str(config_file)}).workers.count == 3


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[watch]\nsettle_seconds = 'soon'\n", {}, r"watch\.settle_seconds.*c\.toml"),
        ("", {"IMGWATCH_LINKS_TOP_K": "many"}, r"links\.top_k \(from environment variable IMGWATCH_LINKS_TOP_K\)"),
        ("", {"IMGWATCH_LINKS_TOPK": "5"},
         r"unknown environment variable IMGWATCH_LINKS_TOPK: .*\(did you mean IMGWATCH_LINKS_TOP_K\?\)"),
        ("", {"IMGWATCH_SPEED": "fast"}, r"unknown environment variable IMGWATCH_SPEED: .*IMGWATCH_<SECTION>_<KEY>"),
        ("[links]\nthreshold = 1.5\n", {}, r"links\.threshold \(from .*c\.toml\)"),
        ("", {"IMGWATCH_WATCH_OBSERVER": "fanotify"},
         r"watch\.observer \(from environment variable IMGWATCH_WATCH_OBSERVER\)"),
        ("[watch]\nsettle = 1\n", {}, r"unknown config key watch\.settle"),
        ("[nope]\nx = 1\n", {}, r"unknown config section \[nope\]"),
        ("[watch\n", {}, r"not valid TOML"),
        ("[duplicates]\nprefer_formats = ['raw', 'jpg/heic', 'jpgg']\n", {},
         r"^invalid value for duplicates\.prefer_formats \(from .*c\.toml\): .*'jpgg' is no format name \(avif, bmp,"),
        ("", {"IMGWATCH_DUPLICATES_PREFER_FORMATS": "raw,jpeg,JPEG"},
         r"duplicates\.prefer_formats \(from environment .*\): .*each format once; 'jpeg' is listed twice"),
        ("[duplicates]\nprefer_folders = ['originals']\n", {}, r"duplicates\.prefer_folders .*relative path"),
        ("", {"IMGWATCH_DUPLICATES_PREFER_FOLDERS": "/photos,originals"},
         r"duplicates\.prefer_folders \(from environment .*\): .*'originals' is not one"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config_file, environ=env)


def test_imgwatch_variables_that_are_not_settings_are_no_error(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text("[workers]\ncount = 3\n")
    environ = {"IMGWATCH_CONFIG": str(config_file), "IMGWATCH_WEB_TOKEN": "secret", "IMGWATCH_NEO4J_PASSWORD": "pw",
               "IMGWATCH_TEST_NEO4J_URI": "neo4j://localhost", "NOT_IMGWATCH_AT_ALL": "1"}
    assert load_config(environ=environ).workers.count == 3


@pytest.mark.parametrize("text", [
    '[general]\nroots = ["/photos", "Pictures"]\n',
    '[general]\ndata_dir = "data"\n',
    '[embedding]\nweights = "resnet50.pth"\n',
    '[web]\ntoken_file = "token"\n',
])
def test_a_relative_path_in_a_config_file_is_an_error(tmp_path: Path, text: str) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=r"is a relative path, which would mean another place for each directory"):
        load_config(config_file, environ={})


def test_paths_from_home_keywords_and_relative_flags_are_fine(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[general]\nroots = ["~/Pictures", "/srv/photos"]\n[embedding]\nweights = "random"\n')
    config = load_config(config_file, overrides={"general.data_dir": "data"}, environ={})
    assert config.general.roots == ["~/Pictures", "/srv/photos"] and config.general.data_dir == "data"


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_embedding_engine_defaults_to_auto_and_takes_the_environment() -> None:
    assert load_config(environ={"XDG_CONFIG_HOME": "/nonexistent"}).embedding.engine == "auto"
    assert load_config(environ={env_var("embedding.engine"): "torch"}).embedding.engine == "torch"
    assert load_config(overrides={"embedding.engine": "onnxruntime"}, environ={}).embedding.engine == "onnxruntime"
    with pytest.raises(ConfigError, match=r"embedding\.engine \(from environment variable IMGWATCH_EMBEDDING_ENGINE\): "
                                          r"'tensorrt' \(expected auto, "
                                          r"torch, onnxruntime or openvino\)"):
        load_config(environ={"IMGWATCH_EMBEDDING_ENGINE": "tensorrt"})


@pytest.mark.parametrize(("text", "env", "flag", "meant", "source"), [
    ("", {}, "imagnet", "imagenet", "command line"),
    ("", {"IMGWATCH_EMBEDDING_WEIGHTS": "Random"}, None, "random", "environment variable IMGWATCH_EMBEDDING_WEIGHTS"),
    ('[embedding]\nweights = "IMAGENET1K_V2"\n', {}, None, "imagenet", "c.toml"),  # torchvision's names
    ("", {}, "DEFAULT", "imagenet", "command line"),
])
def test_a_mistyped_weights_name_says_which_name_was_meant(
    tmp_path: Path, text: str, env: dict[str, str], flag: str | None, meant: str, source: str
) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=rf"invalid value for embedding\.weights \(from [^)]*{source}\): .* is "
                                          rf"neither a weights name nor a file \(did you mean {meant}\?\)"):
        load_config(config_file, {"embedding.weights": flag}, environ=env)


def test_weights_paths_are_not_taken_for_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagnet").write_bytes(b"a file of that name")
    for weights in ("imagnet", "resnet50.pth", "/models/random"):  # a file here, a file name, a path
        assert load_config(overrides={"embedding.weights": weights}, environ={}).embedding.weights == weights


@pytest.mark.parametrize(("text", "env"), [("[workers]\ncount = 0\n", {}), ("", {"IMGWATCH_WORKERS_COUNT": "0"})])
def test_no_workers_is_refused_not_rounded_up(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=r"workers\.count \(from .*\): 0 \(expected an integer >= 1\)"):
        load_config(config_file, environ=env)


# -- a model file and its [embedding.preprocess] --------------------------------------------------


def test_a_model_file_and_its_preprocessing_come_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[embedding]\nmodel = "~/models/sscd.torchscript.pt"\n'
                           '[embedding.preprocess]\npolicy = "stretch"\nsize = 320\ndim = 512\n')
    env = {"IMGWATCH_EMBEDDING_PREPROCESS_MEAN": "0.5, 0.5, 0.5"}

    config = load_config(config_file, {"embedding.preprocess.std": [0.25, 0.25, 0.25]}, environ=env)

    preprocess = config.embedding.preprocess
    assert config.embedding.model == "~/models/sscd.torchscript.pt"
    assert (preprocess.policy, preprocess.size, preprocess.dim) == ("stretch", 320, 512)
    assert (preprocess.mean, preprocess.std) == ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert preprocess.resize == 256  # the default: ImageNet's
    assert config.sources["embedding.preprocess.mean"] == "environment variable IMGWATCH_EMBEDDING_PREPROCESS_MEAN"


@pytest.mark.parametrize(("text", "message"), [
    ('model = "/m/sscd.pt"', "invalid value for embedding.preprocess.dim (from defaults): 0 (expected the model "
     "file's output dimension, an integer >= 1: required with a model file)"),
    ('model = "/m/model.bin"\n[embedding.preprocess]\ndim = 8', "invalid value for embedding.model (from {file}): "
     "'/m/model.bin' (expected resnet50 or a model file whose name ends in .pt, .pth, .torchscript or .onnx)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\npolicy = "squash"',
     "embedding.preprocess.policy (from {file}): 'squash' (expected crop or stretch)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\nresize = 200', "embedding.preprocess.resize (from {file}): "
     "200 (expected the shorter side in pixels before the centre crop, at least embedding.preprocess.size)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\nmean = [0.5, 0.5]',
     "embedding.preprocess.mean (from {file}): [0.5, 0.5] (expected three numbers, one per RGB channel)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\nstd = [0.2, 0, 0.2]',
     "embedding.preprocess.std (from {file}): [0.2, 0.0, 0.2] (expected three numbers > 0, one per RGB channel)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\nmean = ["a", 1, 2]',
     "invalid value for embedding.preprocess.mean (from {file}): ['a', 1, 2] (could not convert string to float"),
    ('[embedding.preprocess]\nsize = 320', "invalid value for embedding.preprocess.size (from {file}): 320 (expected "
     "[embedding.preprocess] only with a model file in embedding.model; resnet50's preprocessing is fixed)"),
    ('model = "/m/a.onnx"\n[embedding.preprocess]\ndim = 8\ncrop = 224',
     "unknown config key embedding.preprocess.crop"),
    ('model = "models/a.onnx"\n[embedding.preprocess]\ndim = 8', "'models/a.onnx' is a relative path"),
])
def test_a_bad_model_setting_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text("[embedding]\n" + text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config_file, environ={})
    assert message.format(file=config_file) in str(raised.value)
    assert "\n" not in str(raised.value)
