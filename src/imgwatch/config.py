"""Configuration: defaults < config file < IMGWATCH_* environment < command-line flags.

Every key lives in a section of ``config.toml``; its environment variable is
``IMGWATCH_<SECTION>_<KEY>`` (upper case). Invalid values fail with the key's
name and where the value came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgwatch.datadir import DataDir
from imgwatch.embedding.identity import MODEL_FILE_KINDS, MODEL_NAME, model_file_kind
from imgwatch.embedding.preprocessing import IMAGENET, POLICIES
from imgwatch.errors import ConfigError
from imgwatch.keeper import DEFAULT_PREFER_FORMATS, prefer_folders_problem, prefer_formats_problem
from imgwatch.photos.formats import DEFAULT_EXTENSIONS

ENV_PREFIX = "IMGWATCH_"
CONFIG_ENV = "IMGWATCH_CONFIG"

# Allowed values, named once: validation, the CLI's choices and the code that acts on them use these.
STORE_BACKENDS = ("embedded", "neo4j")
LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
OBSERVERS = ("inotify", "polling")
DEVICES = ("auto", "cpu", "cuda")
JPEG_DECODERS = ("auto", "gpu", "cpu")
EMBEDDING_ENGINES = ("auto", "torch", "onnxruntime", "openvino")


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "imgwatch")


def _default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "imgwatch" / "config.toml"


@dataclass
class GeneralConfig:
    data_dir: str = field(default_factory=_default_data_dir)
    roots: list[str] = field(default_factory=list)
    store: str = "embedded"
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"


@dataclass
class WatchConfig:
    observer: str = "inotify"  # inotify | polling
    polling_interval: float = 5.0
    settle_seconds: float = 2.0
    batch_size: int = 32
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    exclude: list[str] = field(default_factory=lambda: [".*", "@eaDir", "#recycle"])
    rescan_seconds: float = 86400.0  # 0: no periodic rescan


@dataclass
class QueueConfig:
    # Empty: `imgwatch run` starts an embedded server on a unix socket in the data dir.
    redis_url: str = ""
    # A file holding the Redis password, so it never has to sit in config.toml.
    password_file: str = ""
    name: str = "imgwatch"
    job_timeout: int = 1800


@dataclass
class PreprocessConfig:
    """A model file's preprocessing and output dimension ([embedding.preprocess]); ResNet50's is fixed."""

    policy: str = IMAGENET.policy  # crop: shorter side to `resize`, centre crop `size`; stretch: straight to `size`
    resize: int = IMAGENET.resize
    size: int = IMAGENET.size
    mean: list[float] = field(default_factory=lambda: list(IMAGENET.mean))
    std: list[float] = field(default_factory=lambda: list(IMAGENET.std))
    dim: int = 0  # the model's output dimension: required with a model file, checked when it loads


@dataclass
class EmbeddingConfig:
    model: str = MODEL_NAME  # resnet50 | /path/to/model.{pt,pth,torchscript,onnx}
    weights: str = "imagenet"  # imagenet | random | /path/to/state_dict.pth (resnet50's)
    device: str = "auto"  # auto | cpu | cuda
    engine: str = "auto"  # auto | torch | onnxruntime | openvino (see config.toml)
    batch_size: int = 0  # 0: automatic (CPU: 8; CUDA: 64)
    decode_threads: int = 0  # 0: automatic (CPU: 2; CUDA: every core of the worker's share)
    jpeg_decoder: str = "auto"  # auto (on CUDA: nvJPEG and the decode threads together) | gpu | cpu
    streams: int = 0  # 0: automatic (CPU: one per core; CUDA: two)
    threads: int = 0  # torch threads per stream; 0: automatic
    seed: int = 0
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass
class LinksConfig:
    threshold: float = 0.8
    top_k: int = 10


@dataclass
class WorkersConfig:
    count: int = 1
    max_attempts: int = 3  # failures (crashes included) before a file waits until it changes


NEO4J_PASSWORD_ENV = "IMGWATCH_NEO4J_PASSWORD"
NEO4J_URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


@dataclass
class Neo4jConfig:
    uri: str = "neo4j://localhost:7687"
    user: str = "neo4j"
    database: str = "neo4j"
    # The password comes from $IMGWATCH_NEO4J_PASSWORD or this file, never from config.toml.
    password_file: str = ""
    connect_timeout: float = 5.0
    # How long a store operation keeps retrying through an outage before its job fails.
    retry_seconds: float = 120.0


WEB_TOKEN_ENV = "IMGWATCH_WEB_TOKEN"


@dataclass
class WebConfig:
    # Loopback by default; any other address needs a token ($IMGWATCH_WEB_TOKEN or token_file).
    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port
    # The access token is read from $IMGWATCH_WEB_TOKEN or this file, never from config.toml.
    token_file: str = ""
    max_upload_mb: float = 50.0
    thumbnail_size: int = 256  # pixels, the long side of grid thumbnails


@dataclass
class DuplicatesConfig:
    """The keeper rule's settings (see keeper.py): which copy of a photo is marked to keep."""

    # Format names best first; formats of equal rank joined by "/". Unlisted formats come last.
    prefer_formats: list[str] = field(default_factory=lambda: list(DEFAULT_PREFER_FORMATS))
    prefer_folders: list[str] = field(default_factory=list)  # absolute folders, best first
    # Where the web page's "move the others" puts copies (outside the watched folders); empty: the trash.
    move_to: str = ""


@dataclass
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    neo4j: Neo4jConfig = field(default_factory=Neo4jConfig)
    web: WebConfig = field(default_factory=WebConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    # Where each key set by load_config came from (a file, an environment variable, the command
    # line); a key not in it has its default (e.g. embedding.weights: then the store's own).
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def data_dir(self) -> DataDir:
        return DataDir(Path(self.general.data_dir).expanduser().resolve())

    @property
    def root_paths(self) -> list[Path]:
        """Resolved roots; one nested in another is covered by it and dropped."""
        from imgwatch.files import outermost

        return [Path(r) for r in outermost(str(Path(r).expanduser().resolve()) for r in self.general.roots)]


# The settings sections by name (Config.sources is bookkeeping, not a section).
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "sources"}
# Tables inside a section, by dotted name: [embedding.preprocess] in a file, IMGWATCH_EMBEDDING_PREPROCESS_*.
SUBSECTIONS = ("embedding.preprocess",)


def section_of(config: Config, name: str) -> Any:
    """The settings object of a section or subsection by its dotted name."""
    section: Any = config
    for part in name.split("."):
        section = getattr(section, part)
    return section


def _parse(key: str, raw: Any, kind: str, source: str) -> Any:
    """Coerce one value to the field's type; strings come from env or flags."""
    where = f"{key} (from {source})"
    try:
        if kind == "list[str]":
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                return list(raw)
            raise ValueError("expected a list of strings")
        if kind == "list[float]":
            parts = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(parts, list) or any(isinstance(x, bool) for x in parts):
                raise ValueError("expected a list of numbers")
            return [float(x) for x in parts]
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return float(raw)
        if kind == "str":
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {where}: {raw!r} ({exc})") from None
    raise AssertionError(f"unsupported config type {kind}")


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


def _validate(config: Config, sources: Mapping[str, str]) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("general.store", config.general.store in STORE_BACKENDS, _one_of(STORE_BACKENDS)),
        ("general.log_format", config.general.log_format in LOG_FORMATS, _one_of(LOG_FORMATS)),
        ("general.log_level", config.general.log_level in LOG_LEVELS, _one_of(LOG_LEVELS)),
        ("watch.observer", config.watch.observer in OBSERVERS, _one_of(OBSERVERS)),
        ("watch.polling_interval", config.watch.polling_interval > 0, "a number > 0"),
        ("watch.settle_seconds", config.watch.settle_seconds >= 0, "a number >= 0"),
        ("watch.batch_size", config.watch.batch_size >= 1, "an integer >= 1"),
        ("watch.extensions", bool(config.watch.extensions), "a non-empty list"),
        ("queue.name", bool(config.queue.name), "a non-empty string"),
        ("queue.job_timeout", config.queue.job_timeout >= 1, "an integer >= 1"),
        ("embedding.device", config.embedding.device in DEVICES, _one_of(DEVICES)),
        ("embedding.engine", config.embedding.engine in EMBEDDING_ENGINES, _one_of(EMBEDDING_ENGINES)),
        ("embedding.weights", bool(config.embedding.weights), "imagenet, random or a file path"),
        ("embedding.batch_size", config.embedding.batch_size >= 0, "an integer >= 0 (0: automatic)"),
        ("embedding.decode_threads", config.embedding.decode_threads >= 0, "an integer >= 0 (0: automatic)"),
        ("embedding.jpeg_decoder", config.embedding.jpeg_decoder in JPEG_DECODERS, _one_of(JPEG_DECODERS)),
        ("embedding.streams", config.embedding.streams >= 0, "an integer >= 0 (0: automatic)"),
        ("embedding.threads", config.embedding.threads >= 0, "an integer >= 0 (0: automatic)"),
        ("embedding.model", config.embedding.model == MODEL_NAME or model_file_kind(config.embedding.model) is not None,
         f"{MODEL_NAME} or a model file whose name ends in {_one_of(tuple(MODEL_FILE_KINDS))}"),
        *_preprocess_checks(config.embedding, sources),
        ("links.threshold", -1.0 <= config.links.threshold <= 1.0, "a cosine between -1 and 1"),
        ("links.top_k", config.links.top_k >= 1, "an integer >= 1"),
        ("workers.count", config.workers.count >= 1, "an integer >= 1"),
        ("workers.max_attempts", config.workers.max_attempts >= 1, "an integer >= 1"),
        ("watch.rescan_seconds", config.watch.rescan_seconds >= 0, "a number of seconds >= 0 (0: never)"),
        ("neo4j.uri", config.neo4j.uri.partition("://")[0] in NEO4J_URI_SCHEMES and "://" in config.neo4j.uri,
         "a URI like neo4j://host:7687 (schemes: " + ", ".join(NEO4J_URI_SCHEMES) + ")"),
        ("neo4j.database", bool(config.neo4j.database), "a database name"),
        ("neo4j.connect_timeout", config.neo4j.connect_timeout > 0, "a number of seconds > 0"),
        ("neo4j.retry_seconds", config.neo4j.retry_seconds >= 0, "a number of seconds >= 0"),
        ("web.host", bool(config.web.host.strip()), "an address to listen on, e.g. 127.0.0.1"),
        ("web.port", 0 <= config.web.port <= 65535, "a TCP port, 0..65535 (0: any free port)"),
        ("web.max_upload_mb", config.web.max_upload_mb > 0, "a number of MiB > 0"),
        ("web.thumbnail_size", 32 <= config.web.thumbnail_size <= 1024, "pixels, 32..1024"),
        *_problems_as_checks({"duplicates.prefer_formats": prefer_formats_problem(config.duplicates.prefer_formats),
                              "duplicates.prefer_folders": prefer_folders_problem(config.duplicates.prefer_folders)}),
    ]
    for key, ok, expected in checks:
        if not ok:
            section, name = key.rsplit(".", 1)
            value = getattr(section_of(config, section), name)
            source = sources.get(key, "defaults")
            raise ConfigError(f"invalid value for {key} (from {source}): {value!r} (expected {expected})")


def _problems_as_checks(problems: Mapping[str, str | None]) -> list[tuple[str, bool, str]]:
    """Checks whose expectation names what is wrong (None: nothing)."""
    return [(key, problem is None, problem or "") for key, problem in problems.items()]


def _preprocess_checks(embedding: EmbeddingConfig, sources: Mapping[str, str]) -> list[tuple[str, bool, str]]:
    """[embedding.preprocess] describes a model file; ResNet50's preprocessing is fixed."""
    preprocess = embedding.preprocess
    if embedding.model == MODEL_NAME:
        # A key set with resnet50 would be ignored: refused rather than left to look effective.
        return [(key, False, f"[embedding.preprocess] only with a model file in embedding.model; {MODEL_NAME}'s "
                 "preprocessing is fixed") for key in sources if key.startswith("embedding.preprocess.")][:1]
    return [
        ("embedding.preprocess.dim", preprocess.dim >= 1,
         "the model file's output dimension, an integer >= 1: required with a model file"),
        ("embedding.preprocess.policy", preprocess.policy in POLICIES, _one_of(POLICIES)),
        ("embedding.preprocess.size", 16 <= preprocess.size <= 4096, "the model's input size in pixels, 16..4096"),
        ("embedding.preprocess.resize", preprocess.policy != "crop" or preprocess.size <= preprocess.resize <= 8192,
         "the shorter side in pixels before the centre crop, at least embedding.preprocess.size"),
        ("embedding.preprocess.mean", len(preprocess.mean) == 3, "three numbers, one per RGB channel"),
        ("embedding.preprocess.std", len(preprocess.std) == 3 and all(x > 0 for x in preprocess.std),
         "three numbers > 0, one per RGB channel"),
    ]


# Keys that name files or folders. In a config file they must be absolute (or start with ~): a
# relative one would mean another place for each directory imgwatch is started from.
PATH_KEYS = ("general.roots", "general.data_dir", "queue.password_file", "embedding.weights", "embedding.model",
             "neo4j.password_file", "web.token_file", "duplicates.prefer_folders",
             "duplicates.move_to")
_WEIGHTS_NAMES = ("imagenet", "random")
_NAMES_NOT_PATHS = (*_WEIGHTS_NAMES, MODEL_NAME)  # values of path keys that name something instead
# What a mistyped weights name likely meant; torchvision calls the weights "imagenet" loads DEFAULT.
_WEIGHTS_SPELLINGS = {**{name: name for name in _WEIGHTS_NAMES}, "default": "imagenet"}


def _check_weights_name(value: str, source: str) -> None:
    """A weights value close to a weights name, with no file of that name, is a typo of the name:
    say which, rather than "cannot read weights file" once the model loads."""
    if value in _WEIGHTS_NAMES or os.sep in value or os.path.exists(os.path.expanduser(value)):
        return
    close = difflib.get_close_matches(value.lower(), _WEIGHTS_SPELLINGS, n=1)
    if close:
        raise ConfigError(f"invalid value for embedding.weights (from {source}): {value!r} is neither a weights "
                          f"name nor a file (did you mean {_WEIGHTS_SPELLINGS[close[0]]}?)")


def _check_not_relative(key: str, value: Any, source: str) -> None:
    for path in value if isinstance(value, list) else [value]:
        if path and path not in _NAMES_NOT_PATHS and not os.path.isabs(os.path.expanduser(path)):
            raise ConfigError(
                f"invalid value for {key} (from {source}): {path!r} is a relative path, which would mean "
                "another place for each directory imgwatch starts in; write it absolute or from ~"
            )


def _apply(config: Config, values: Mapping[str, Mapping[str, Any]], source: str, sources: dict[str, str],
           *, from_file: bool = False) -> None:
    for section_name, section_values in values.items():
        if section_name not in SECTIONS and section_name not in SUBSECTIONS:
            raise ConfigError(f"unknown config section [{section_name}] (from {source})")
        if not isinstance(section_values, Mapping):
            raise ConfigError(f"[{section_name}] must be a table (from {source})")
        section = section_of(config, section_name)
        kinds = {f.name: str(f.type) for f in dataclasses.fields(section)}
        for key, raw in section_values.items():
            if f"{section_name}.{key}" in SUBSECTIONS:
                _apply(config, {f"{section_name}.{key}": raw}, source, sources, from_file=from_file)
                continue
            if section_name == "neo4j" and key == "password":
                raise ConfigError(
                    f"neo4j.password (from {source}) is not read from configuration: keep the secret out "
                    f"of config files and set {NEO4J_PASSWORD_ENV} or neo4j.password_file instead"
                )
            if section_name == "web" and key == "token":
                raise ConfigError(
                    f"web.token (from {source}) is not read from configuration: keep the secret out "
                    f"of config files and set {WEB_TOKEN_ENV} or web.token_file instead"
                )
            if key not in kinds:
                raise ConfigError(f"unknown config key {section_name}.{key} (from {source})")
            value = _parse(f"{section_name}.{key}", raw, kinds[key], source)
            if f"{section_name}.{key}" == "embedding.weights":
                _check_weights_name(value, source)
            if from_file and f"{section_name}.{key}" in PATH_KEYS:
                _check_not_relative(f"{section_name}.{key}", value, source)
            setattr(section, key, value)
            sources[f"{section_name}.{key}"] = source


# IMGWATCH_* variables that are not settings: read where they are used, or by the test suite.
_OTHER_ENV = (CONFIG_ENV, NEO4J_PASSWORD_ENV, WEB_TOKEN_ENV)
_TEST_ENV_PREFIX = ENV_PREFIX + "TEST_"


def _apply_env(config: Config, environ: Mapping[str, str], sources: dict[str, str]) -> None:
    """Apply every IMGWATCH_<SECTION>_<KEY> variable, each named as the source of its value;
    an IMGWATCH_ variable that is no setting (a typo) is an error rather than silently ignored."""
    defaults = Config()
    settings = {env_var(f"{section_name}.{f.name}"): (section_name, f.name)
                for section_name in (*SECTIONS, *SUBSECTIONS)
                for f in dataclasses.fields(section_of(defaults, section_name))
                if f"{section_name}.{f.name}" not in SUBSECTIONS}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _OTHER_ENV or var.startswith(_TEST_ENV_PREFIX):
            continue
        if var not in settings:
            names = [name.removeprefix(ENV_PREFIX) for name in (*settings, *_OTHER_ENV)]
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX), names, n=1)  # the shared prefix aside
            hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "settings are IMGWATCH_<SECTION>_<KEY>"
            raise ConfigError(f"unknown environment variable {var}: no imgwatch setting has that name ({hint})")
        section_name, key = settings[var]
        _apply(config, {section_name: {key: environ[var]}}, f"environment variable {var}", sources)


def env_var(key: str) -> str:
    """The environment variable for a dotted key, e.g. 'watch.settle_seconds'."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration.

    ``config_file``: explicit path (must exist); otherwise ``$IMGWATCH_CONFIG``,
    then ``~/.config/imgwatch/config.toml`` if present. ``overrides``: dotted
    keys from command-line flags, e.g. ``{"general.data_dir": "/tmp/x"}``.
    """
    environ = os.environ if environ is None else environ
    config = Config()
    sources = config.sources  # dotted key -> where its value came from, for error messages

    path: Path | None = None
    if config_file is not None:
        path = Path(config_file).expanduser()
    elif environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV]).expanduser()
    elif _default_config_file().is_file():
        path = _default_config_file()
    if path is not None:
        try:
            with path.open("rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        _apply(config, file_values, str(path), sources, from_file=True)

    _apply_env(config, environ, sources)

    flag_values: dict[str, dict[str, Any]] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section_name, key = dotted.rsplit(".", 1)
        flag_values.setdefault(section_name, {})[key] = value
    _apply(config, flag_values, "command line", sources)

    _validate(config, sources)
    return config


def neo4j_password(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The Neo4j password: $IMGWATCH_NEO4J_PASSWORD, else neo4j.password_file, else none."""
    environ = os.environ if environ is None else environ
    if environ.get(NEO4J_PASSWORD_ENV):
        return environ[NEO4J_PASSWORD_ENV]
    if config.neo4j.password_file:
        return read_secret_file(config.neo4j.password_file, "the Neo4j password")
    return None


def web_token(config: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The web page's access token: $IMGWATCH_WEB_TOKEN, else web.token_file, else none."""
    environ = os.environ if environ is None else environ
    if environ.get(WEB_TOKEN_ENV):
        return environ[WEB_TOKEN_ENV].strip()
    if config.web.token_file:
        return read_secret_file(config.web.token_file, "the web token") or None
    return None


def read_secret_file(path: str, what: str) -> str:
    """Read a password from a file (first line), with an error that says which file."""
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc.strerror}") from None
