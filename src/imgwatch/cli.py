"""The `imgwatch` command line."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from imgwatch.config import LOG_FORMATS, STORE_BACKENDS, Config, load_config
from imgwatch.errors import exit_on_error
from imgwatch.files import canonical_path

if TYPE_CHECKING:
    from imgwatch.store import Match  # the store loads only in the commands that use it


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--config/--data-dir/--weights on every command, turned into one Config."""

    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                  help="Config file (default: $IMGWATCH_CONFIG or ~/.config/imgwatch/config.toml).")
    @click.option("--data-dir", default=None, help="Where the store and the embedded queue live.")
    @click.option("--weights", default=None, help="imagenet | random | PATH to a ResNet50 state_dict.")
    @click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
    @functools.wraps(command)
    def wrapper(config_file: str | None, data_dir: str | None, weights: str | None,
                log_format: str | None, **kwargs: Any) -> Any:
        from imgwatch.log import configure_logging

        with exit_on_error():
            overrides: dict[str, Any] = {
                "general.data_dir": data_dir,
                "embedding.weights": weights,
                "general.log_format": log_format,
            }
            roots = kwargs.pop("roots", None)
            if roots:
                overrides["general.roots"] = [canonical_path(r) for r in roots]
            config = load_config(config_file, overrides)
            configure_logging(config.general.log_format, config.general.log_level)
            return command(config, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgwatch")
def main() -> None:
    """Watch photo folders and find similar images."""


# -- processes -----------------------------------------------------------------


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--workers", type=int, default=None, help="Worker processes (default: workers.count).")
@common_options
def run(config: Config, workers: int | None) -> None:
    """Embedded queue + daemon + workers: index ROOTS and keep watching them."""
    from imgwatch.supervisor import run_all

    if workers is not None:
        config.workers.count = max(1, workers)
    sys.exit(run_all(config))


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@common_options
def daemon(config: Config) -> None:
    """Watch ROOTS and put work on the queue (workers run elsewhere)."""
    import signal

    from imgwatch.daemon.service import Daemon
    from imgwatch.store import open_store
    from imgwatch.workqueue import FailureLedger, WorkQueue

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    work_queue = WorkQueue.from_config(config)
    with open_store(config) as store:
        Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue).run(stop)


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@common_options
def worker(config: Config, burst: bool) -> None:
    """Embed, store and link images from the queue."""
    from imgwatch.workers.worker import run_worker

    run_worker(config, burst=burst)


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@common_options
def scan(config: Config) -> None:
    """Reconcile ROOTS against the store once: enqueue what changed, then exit."""
    from imgwatch.daemon.service import reconcile_and_enqueue
    from imgwatch.store import open_store
    from imgwatch.workqueue import FailureLedger, WorkQueue

    if not config.general.roots:
        raise click.UsageError("no folders to scan: pass ROOT arguments or set general.roots")
    work_queue = WorkQueue.from_config(config)
    with open_store(config) as store:
        plan = reconcile_and_enqueue(config, store, FailureLedger.for_queue(work_queue), work_queue)
    click.echo(f"enqueued {len(plan.changed)} new or changed and {len(plan.gone)} removed file(s); "
               f"{plan.unchanged} unchanged")


# -- queries -------------------------------------------------------------------


def _print_matches(matches: list[Match], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"path": m.path, "score": round(m.score, 6)} for m in matches], indent=2))
        return
    for match in matches:
        click.echo(f"{match.score:.4f}  {match.path}")


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score}.")
@common_options
def search(config: Config, image: str, top: int, as_json: bool) -> None:
    """Images most similar to IMAGE (any file; it need not be indexed)."""
    from imgwatch.embedding import Embedder, load_model
    from imgwatch.store import ModelMismatchError, open_store

    with open_store(config, create=False) as store:
        recorded = store.recorded_model()  # (model, dim) the workers embed with; None before the first image
        model = load_model(config.embedding.weights, config.embedding.device, config.embedding.seed)
        if recorded is not None and recorded[0] != model.identity:
            raise ModelMismatchError(
                f"the store holds embeddings from {recorded[0]} but this search uses {model.identity}; "
                "pass the same --weights the workers use"
            )
        embedder = Embedder(model, batch_size=1, decode_threads=1)
        try:
            query = embedder.embed_file(os.path.abspath(image))
        finally:
            embedder.close()
        _print_matches(store.nearest(query.vector, top), as_json)


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score}.")
@common_options
def similar(config: Config, path: str, as_json: bool) -> None:
    """The SIMILAR_TO neighbours of an indexed PATH (no model needed)."""
    from imgwatch.store import open_store

    with open_store(config, create=False) as store:
        _print_matches(store.neighbours(canonical_path(path)), as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@common_options
def status(config: Config, as_json: bool) -> None:
    """Queued and running work, failed items with reasons, image and link counts."""
    from imgwatch.reports import gather_status

    report = gather_status(config)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.as_text())


# -- maintenance ---------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
def doctor(config: Config, as_json: bool) -> None:
    """Check the store and the queue: server version, index state, counts."""
    from imgwatch.reports import gather_doctor

    report = gather_doctor(config)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.as_text())


@main.command()
@click.option("--to", "target_backend", type=click.Choice(STORE_BACKENDS), required=True,
              help="The backend to copy into; the other one is the source.")
@common_options
def migrate(config: Config, target_backend: str) -> None:
    """Copy every image, embedding and link into another store backend (no re-embedding).

    `--to neo4j` copies the embedded store in --data-dir into the [neo4j] server;
    `--to embedded` copies back. Stop imgwatch first. Safe to interrupt: running it
    again resumes.
    """
    from imgwatch.store import open_store
    from imgwatch.store.migrate import migrate as copy_store
    source_backend = "neo4j" if target_backend == "embedded" else "embedded"
    with config.data_dir.exclusive_run_lock(), open_store(config, backend=source_backend, create=False) as source, \
            open_store(config, backend=target_backend) as target:
        totals = source.stats()
        click.echo(f"copying {totals.images} images and {totals.links} links from {source_backend} "
                   f"({totals.location}) to {target_backend} ({target.stats().location})", err=True)
        with click.progressbar(length=totals.images + totals.links, label="migrating", file=sys.stderr) as bar:
            report = copy_store(source, target, progress=lambda _phase, done: bar.update(done))
    click.echo(f"copied {report.images_copied} images ({report.images_skipped} were already there) and "
               f"{report.links_copied} links to {target_backend}. To use it: set general.store = "
               f"\"{target_backend}\" (or IMGWATCH_GENERAL_STORE={target_backend}).")


if __name__ == "__main__":
    main()
