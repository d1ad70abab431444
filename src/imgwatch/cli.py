"""The `imgwatch` command line."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from imgwatch.config import LOG_FORMATS, STORE_BACKENDS, Config, load_config
from imgwatch.display import human_size
from imgwatch.errors import EXIT_INTERRUPTED, EXIT_PARTLY, ImgwatchError, exit_on_error, printable
from imgwatch.files import canonical_path, folder_argument, root_of

if TYPE_CHECKING:
    from imgwatch.cleanup import Cleanup, Destination
    from imgwatch.duplicates import DuplicateGroup
    from imgwatch.store import GraphStore, Match  # the store loads only in the commands that use it


# The options every command takes, before its name or after it (`imgwatch --data-dir X search`
# or `imgwatch search --data-dir X`); given in both places, the one after the name wins.
_COMMON_OPTIONS = (
    click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                 help="Config file (default: $IMGWATCH_CONFIG or ~/.config/imgwatch/config.toml)."),
    click.option("--data-dir", metavar="DIR", default=None, help="Where the store and the embedded queue live."),
    click.option("--weights", metavar="NAME|PATH", default=None,
                 help="imagenet | random | PATH to a ResNet50 state_dict."),
    click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
                 help="Log lines on stderr: console or JSON (auto: console on a terminal or the journal)."),
    click.option("-v", "--verbose", is_flag=True, default=None,
                 help="Also log progress (info) lines; only run, daemon, worker and web log them unasked."),
)


def _with_common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_COMMON_OPTIONS):
        function = option(function)
    return function


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The common options of a one-shot command, turned into one Config: its output is its
    answer, so it logs only warnings and errors unless --verbose."""
    return _configured(command, service=False)


def service_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The common options of a long-running process, whose log (info lines too) is its output."""
    return _configured(command, service=True)


def _configured(command: Callable[..., Any], *, service: bool) -> Callable[..., Any]:
    @_with_common_options
    @functools.wraps(command)
    def wrapper(config_file: str | None, data_dir: str | None, weights: str | None,
                log_format: str | None, verbose: bool | None, **kwargs: Any) -> Any:
        from imgwatch.log import configure_logging

        given_before = click.get_current_context().obj or {}  # main() keeps what came before the name
        config_file, data_dir, weights, log_format, verbose = (
            given_before.get(name) if value is None else value
            for name, value in (("config_file", config_file), ("data_dir", data_dir), ("weights", weights),
                                ("log_format", log_format), ("verbose", verbose)))
        with exit_on_error():
            overrides: dict[str, Any] = {
                "general.data_dir": data_dir,
                "embedding.weights": weights,
                "general.log_format": log_format,
                "embedding.model": kwargs.pop("model_setting", None),  # a command's own --model (reindex)
            }
            roots = kwargs.pop("roots", None)
            if roots:
                overrides["general.roots"] = [canonical_path(r) for r in roots]
            config = load_config(config_file, overrides)
            configure_logging(config.general.log_format, config.general.log_level, quiet=not (service or verbose))
            return command(config, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="imgwatch")
@_with_common_options
@click.pass_context
def main(ctx: click.Context, **common: Any) -> None:
    """Watch photo folders and find similar images.

    The options below may also follow the command's name.
    """
    from imgwatch.datadir import private_umask

    ctx.obj = common  # read by the command's own options (common_options)
    private_umask()  # every file imgwatch creates (data dir, store, queue) is private to this user


# -- processes -----------------------------------------------------------------


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default: workers.count).")
@click.option("--web", is_flag=True, help="Also serve the web page ([web] host and port).")
@service_options
def run(config: Config, workers: int | None, web: bool) -> None:
    """Embedded queue + daemon + workers: index ROOTS and keep watching them."""
    from imgwatch.supervisor import run_all

    if workers is not None:
        config.workers.count = workers
    sys.exit(run_all(config, web=web))


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@service_options
def daemon(config: Config) -> None:
    """Watch ROOTS and put work on the queue (workers run elsewhere)."""
    from imgwatch import sdnotify
    from imgwatch.daemon.service import Daemon
    from imgwatch.signals import stop_on_signals
    from imgwatch.store import open_store
    from imgwatch.workqueue import FailureLedger, WorkQueue

    stop = stop_on_signals()
    work_queue = WorkQueue.from_config(config)
    with open_store(config) as store:
        watcher = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
        sdnotify.ready()  # under systemd (Type=notify): queue reachable, store open, roots valid
        sdnotify.status(f"watching {len(watcher.roots)} folder(s)")
        with sdnotify.watchdog_pings():
            watcher.run(stop)


@main.command()
@click.argument("roots", nargs=-1, type=click.Path(file_okay=False))
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@service_options
def worker(config: Config, burst: bool) -> None:
    """Embed, store and link images from the queue (only paths below ROOTS / general.roots)."""
    from imgwatch import sdnotify
    from imgwatch.workers.worker import run_worker

    with sdnotify.watchdog_pings():  # under systemd with WatchdogSec=; run_worker sends READY=1
        run_worker(config, burst=burst)


@main.command()
@click.argument("folders", nargs=-1, metavar="[ROOT]...", type=click.Path(file_okay=False))
@common_options
def scan(config: Config, folders: tuple[str, ...]) -> None:
    """Reconcile ROOTS against the store once: enqueue what changed, then exit.

    Without ROOT: the folders the running workers index, else general.roots.
    """
    from imgwatch.daemon.scan import scan_and_enqueue
    from imgwatch.errors import ImgwatchError
    from imgwatch.store import open_store
    from imgwatch.workqueue import FailureLedger, WorkQueue
    from imgwatch.workqueue.worker_roots import WorkerRoots, check_workers_take

    for folder in folders:
        if not os.path.exists(folder):
            raise ImgwatchError(f"cannot scan {folder}: the folder does not exist (check the path)")
    work_queue = WorkQueue.from_config(config)
    announced = WorkerRoots.for_queue(work_queue).current()
    if folders:
        config.general.roots = [canonical_path(folder) for folder in folders]
        check_workers_take([str(p) for p in config.root_paths], announced)
    elif announced:  # what a running `imgwatch run` (or `imgwatch worker`) indexes
        config.general.roots = announced
        click.echo(f"scanning the folders the running workers index: {printable(', '.join(announced))}", err=True)
    elif not config.general.roots:
        raise click.UsageError("no folders to scan: pass ROOT arguments or set general.roots "
                               "(while `imgwatch run` runs, scan takes the folders its workers index)")
    failures = FailureLedger.for_queue(work_queue)
    with open_store(config) as store:
        scanned = scan_and_enqueue(config, store, failures, work_queue, leave_queued=True)
    already = f"; {scanned.already_queued} already queued" if scanned.already_queued else ""
    click.echo(f"enqueued {scanned.changed} new or changed and {scanned.gone} removed file(s){already}; "
               f"{scanned.plan.unchanged} unchanged")
    if scanned.plan.paths and sys.stderr.isatty():
        _follow_backlog(work_queue, failures)


def _follow_backlog(work_queue: Any, failures: Any) -> None:
    """On a terminal, a progress bar of the backlog until it is done. Ctrl-C stops following it only:
    the queued work goes on (exit code EXIT_INTERRUPTED)."""
    from imgwatch.progress import follow_backlog
    from imgwatch.workqueue.status import take_snapshot

    def pending() -> int:
        return take_snapshot(work_queue, failures, max_failed_jobs=1).pending_paths

    if take_snapshot(work_queue, failures, max_failed_jobs=1).workers == 0:
        click.echo("no worker is running: the work waits in the queue until one starts "
                   "(`imgwatch run` or `imgwatch worker`)", err=True)
        return
    try:
        follow_backlog(pending)
    except KeyboardInterrupt:
        click.echo("stopped following; the queued files are indexed in the background "
                   "(`imgwatch status` shows how far)", err=True)
        sys.exit(EXIT_INTERRUPTED)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@common_options
def retry(config: Config, paths: tuple[str, ...]) -> None:
    """Re-queue failed files: all of them, or those given and those below given folders.

    Their attempt counts start again, so rescans retry them up to workers.max_attempts times.
    """
    from imgwatch.workqueue import WorkQueue
    from imgwatch.workqueue.failures import retry_failed

    work_queue = WorkQueue.from_config(config)
    selection = [folder_argument(p) for p in paths]
    requeued = retry_failed(work_queue, selection, config.watch.batch_size)
    for chosen in selection:
        if not any(root_of(path, [chosen]) for path in requeued):
            click.echo(f"no failed file at or below {printable(chosen)}")
    if requeued or not selection:
        click.echo(f"requeued {len(requeued)} failed file(s)")


@main.command()
@click.option("--model", "model_setting", metavar="NAME|PATH", default=None,
              help="The new model: resnet50 (with --weights) or a model file (embedding.model).")
@click.option("--abort", is_flag=True, help="Drop the reindex under way; the store keeps its model.")
@common_options
def reindex(config: Config, abort: bool) -> None:
    """Embed every image with a new model while search keeps the current one, then switch to it.

    The new model: embedding.model / embedding.weights as configured, or --model / --weights. The
    running workers do the work; on a terminal a progress bar follows it. Ctrl-C stops watching,
    not the reindex.
    """
    from imgwatch.embedding.identity import MODEL_NAME
    from imgwatch.reindex import start_reindex
    from imgwatch.store import open_store
    from imgwatch.unwatched import watched_roots
    from imgwatch.workqueue import FailureLedger, WorkQueue, take_snapshot
    from imgwatch.workqueue.worker_roots import WorkerRoots

    with open_store(config, create=False) as store:
        if abort:
            _abort_reindex(store)
            return
        work_queue = WorkQueue.from_config(config)
        workers = take_snapshot(work_queue, FailureLedger.for_queue(work_queue), max_failed_jobs=1).workers
        if workers == 0:
            raise ImgwatchError("no worker is running, and the workers embed the images with the new model: "
                                "start `imgwatch run` (or `imgwatch worker`), then run `imgwatch reindex` again")
        roots = watched_roots([str(p) for p in config.root_paths], WorkerRoots.for_queue(work_queue).current())
        started = start_reindex(config, store, work_queue, workers, roots)
        space, recorded = started.space, store.recorded_model()
        how = "re-indexing" if started.opened else "the re-index under way goes on:"
        click.echo(f"{how} {space.total} images with {space.model} ({space.embedded} done, {started.queued} queued); "
                   f"search keeps using {recorded[0] if recorded else '-'} until it is complete", err=True)
        if not space.model.startswith(f"{MODEL_NAME}/"):  # its preprocessing is known only to a config
            click.echo("workers load a model file from their own config: restart `imgwatch run` (or the workers) "
                       "with this embedding.model and [embedding.preprocess] now", err=True)
        if sys.stderr.isatty():
            _follow_reindex(config, store, space.model)
        else:
            click.echo("`imgwatch status` shows how far it is", err=True)


def _abort_reindex(store: GraphStore) -> None:
    space, recorded = store.pending_space(), store.recorded_model()
    if space is None or not store.abort_space():
        click.echo("no re-index is under way")
        return
    click.echo(f"dropped the re-index to {space.model}; the store keeps {recorded[0] if recorded else '-'}")


def _follow_reindex(config: Config, store: GraphStore, model: str) -> None:
    """A progress bar of the reindex until the store switched to ``model``. Ctrl-C stops following only:
    the workers go on (exit code EXIT_INTERRUPTED)."""
    from imgwatch.progress import follow_count
    from imgwatch.reindex import switch_if_complete

    def sample() -> tuple[int, int] | None:
        space = store.pending_space()
        if space is not None and space.complete:
            switch_if_complete(store, config)  # whoever finds it complete switches
            space = store.pending_space()
        return None if space is None else (space.embedded, space.total)

    try:
        follow_count(sample, unit="images")
    except KeyboardInterrupt:
        click.echo("\nstopped watching; the re-index goes on in the workers: run `imgwatch reindex` again to watch",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    recorded = store.recorded_model()
    if recorded is None or recorded[0] != model:
        raise ImgwatchError(f"the re-index to {model} was dropped (`imgwatch reindex --abort`); "
                            f"the store keeps {recorded[0] if recorded else '-'}")
    click.echo(f"done: the store now uses {model}; search, similar and duplicates answer with it")


# -- queries -------------------------------------------------------------------


_top_option = click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
                           help="How many matches to print, best first.")


def _print_matches(matches: list[Match], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"path": m.path, "score": round(m.score, 6)} for m in matches], indent=2))
        return
    for match in matches:
        click.echo(f"{match.score:.4f}  {printable(match.path)}")


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@_top_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score}.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw IMAGE and the results, with scores and names, into this PNG (or .jpg/.webp).")
@common_options
def search(config: Config, image: str, top: int, as_json: bool, sheet: str | None) -> None:
    """Images most similar to IMAGE (any file; it need not be indexed)."""
    from imgwatch.ranking import left_out_note
    from imgwatch.store import open_store
    from imgwatch.use_cases import QueryModel, search_with_file

    with open_store(config, create=False) as store:
        ranking = search_with_file(store, QueryModel(config, "search again"), image, top)
        _print_matches(ranking.matches, as_json)
        if ranking.itself:  # on stderr: stdout stays one scored line (or the JSON list) per result
            click.echo(printable(left_out_note(ranking.itself)), err=True)
        indexed_as = canonical_path(image)  # as the store names it, when IMAGE is an indexed photo
        contents = _indexed_contents(store, ranking.matches, indexed_as)
    if sheet:
        _write_sheet(config, indexed_as, ranking.matches, sheet, contents)


@main.command()
@click.argument("path", type=click.Path())
@_top_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score}.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw PATH and its neighbours, with scores and names, into this PNG (or .jpg/.webp).")
@common_options
def similar(config: Config, path: str, top: int, as_json: bool, sheet: str | None) -> None:
    """The SIMILAR_TO neighbours of an indexed PATH (no model needed)."""
    from imgwatch.store import open_store
    from imgwatch.use_cases import similar as neighbours_of

    indexed = canonical_path(path)
    with open_store(config, create=False) as store:
        matches = neighbours_of(store, indexed, top, reasons_from=config)
        _print_matches(matches, as_json)
        contents = _indexed_contents(store, matches, indexed)
    if sheet:
        _write_sheet(config, indexed, matches, sheet, contents)


def _indexed_contents(store: GraphStore, matches: list[Match], *paths: str) -> dict[str, str]:
    """The indexed SHA-256 of each match (and ``paths``): the content a cached thumbnail must show."""
    stored = store.get_many([*paths, *(m.path for m in matches)])
    return {path: image.sha256 for path, image in stored.items()}


def _write_sheet(config: Config, query: str, matches: list[Match], out: str, contents: dict[str, str]) -> None:
    """The contact sheet of a query and its matches; thumbnails of indexed images come from the cache."""
    from imgwatch.datadir import as_the_user_would_create
    from imgwatch.sheet import SheetItem, write_sheet
    from imgwatch.thumbnails import ThumbnailCache

    items = [SheetItem(m.path, f"{m.score:.4f}", contents.get(m.path)) for m in matches]
    existed = os.path.exists(out)  # a sheet written over keeps the mode it has
    written = write_sheet(SheetItem(query, "query", contents.get(query)), items, out,
                          ThumbnailCache.for_data_dir(config.data_dir))
    if not existed:
        as_the_user_would_create(written)
    click.echo(f"contact sheet: {printable(str(written))} (the query and {len(items)} result(s))", err=True)


@main.command()
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=0.95, show_default=True,
              help="Cosine against the keeper at or above which images count as copies (not below links.threshold).")
@click.option("--exact", is_flag=True, help="Only exact copies: the same content (SHA-256); no links read.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of groups: {keep, reason, images: [...]}.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV rows: group,path,keep,width,height,size,score,reason,decision.")
@click.option("--all", "show_decided", is_flag=True, help="Also show the groups your decisions settle, marked.")
@click.option("--not-duplicates", "not_duplicates", is_flag=True,
              help="Decide that the PATHS are not duplicates of each other (a burst, a series): their group is hidden.")
@click.option("--keep", metavar="PATH", default=None,
              help="Decide to keep PATH over the PATHS: it is their keeper, and their group is hidden.")
@click.option("--undecide", is_flag=True, help="Drop the decisions about the PATHS' contents: their groups come back.")
@click.option("--move-to", "move_to", metavar="DIR", type=click.Path(file_okay=False), default=None,
              help="Move every copy but the keeper of the groups shown into DIR (mirroring its path below its root).")
@click.option("--trash", is_flag=True, help="Like --move-to, into the desktop's trash of each file's volume.")
@click.option("--dry-run", "dry_run", is_flag=True, help="With --move-to/--trash: say what would move, move nothing.")
@click.option("--into-watched", "into_watched", is_flag=True,
              help="Allow --move-to a folder inside a watched one (its photos are indexed there again).")
@click.option("--undo", "undo", metavar="MANIFEST", type=click.Path(dir_okay=False), default=None,
              help="Put back everything the clean-up of MANIFEST moved.")
@click.argument("paths", nargs=-1, type=click.Path())
@common_options
def duplicates(config: Config, threshold: float, exact: bool, as_json: bool, as_csv: bool, show_decided: bool,
               not_duplicates: bool, keep: str | None, undecide: bool, move_to: str | None, trash: bool,
               dry_run: bool, into_watched: bool, undo: str | None, paths: tuple[str, ...]) -> None:
    """Groups of duplicates (copies, resized or re-encoded), the one to keep marked with why (no model needed).

    Each image in a group scores at least --threshold against the keeper (read from the SIMILAR_TO
    links); --exact groups identical files by content hash. Groups you decided about (--not-duplicates,
    --keep) are hidden until another copy joins them; --all shows them.

    --move-to DIR or --trash clears the groups shown: every copy but the keeper moves, after a
    manifest of the moves is written; --undo MANIFEST puts them back. Nothing is ever deleted.
    """
    from imgwatch import duplicates as found
    from imgwatch.store import open_store
    from imgwatch.use_cases import duplicates_to_show, keeper_rule

    acting = [name for name, given in (("--not-duplicates", not_duplicates), ("--keep", keep is not None),
                                       ("--undecide", undecide), ("--move-to", move_to is not None),
                                       ("--trash", trash), ("--undo", undo is not None)) if given]
    if len(acting) > 1:
        raise click.UsageError(f"{' and '.join(acting)} exclude each other")
    if dry_run and move_to is None and not trash:
        raise click.UsageError("--dry-run goes with --move-to DIR or --trash")
    if into_watched and move_to is None:
        raise click.UsageError("--into-watched goes with --move-to DIR")
    if acting and acting[0] in ("--not-duplicates", "--keep", "--undecide"):
        _decide(config, not_duplicates, keep, paths)
        return
    if paths:
        raise click.UsageError("PATHS are for --not-duplicates, --keep PATH or --undecide")
    if (as_json or as_csv) and acting:
        raise click.UsageError("--json and --csv list the groups; a clean-up says what it moves")
    if undo is not None:
        _undo(config, undo)
        return
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    threshold_source = click.get_current_context().get_parameter_source("threshold")
    if exact and threshold_source is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--exact and --threshold exclude each other (exact copies need no threshold)")
    cleaning = move_to is not None or trash
    with open_store(config, create=False) as store:
        if cleaning and not dry_run:
            _finish_unfinished(config, store)  # before the groups are read: it moves files
        groups, hidden = duplicates_to_show(store, exact=exact, threshold=threshold,
                                            links_threshold=config.links.threshold, rule=keeper_rule(config),
                                            show_decided=show_decided)
        if cleaning:
            from imgwatch.cleanup import Destination

            destination = Destination.folder(move_to, into_watched=into_watched) if move_to else Destination.trash()
            _clean_up(config, store, groups, destination, dry_run)
            return
    if as_json:
        click.echo(found.as_json_text(groups))
    elif as_csv:
        click.echo(found.as_csv(groups))
    else:
        click.echo(found.as_text(groups, None if exact else threshold, hidden))


def _clean_up(config: Config, store: GraphStore, groups: list[DuplicateGroup], destination: Destination,
              dry_run: bool) -> None:
    """`duplicates --move-to DIR / --trash [--dry-run]`: move every copy but the keeper of ``groups``."""
    from imgwatch.use_cases import move_duplicates

    with _PhaseBars() as bars:
        cleanup = move_duplicates(config, store, groups, destination, dry_run=dry_run, progress=bars.advance)
    where = printable(destination.describe())
    if dry_run:
        for move in cleanup.moves:
            click.echo(f"{printable(move.source)} -> {printable(move.target)} ({human_size(move.size)})")
        click.echo(f"would move {len(cleanup.moves)} cop{'y' if len(cleanup.moves) == 1 else 'ies'} "
                   f"({human_size(cleanup.bytes)}) out of the library into {where}; nothing moved (dry run)")
    elif cleanup.manifest is None:
        click.echo("nothing to move")
    else:
        click.echo(f"{_moved_line(cleanup)} into {where}")
        click.echo(f"manifest: {printable(str(cleanup.manifest))}")
        click.echo(f"undo: imgwatch duplicates --undo {printable(str(cleanup.manifest))}")
    _say_refused(cleanup)
    if cleanup.refused:
        click.get_current_context().exit(EXIT_PARTLY)


class _PhaseBars:
    """A progress bar on stderr per phase of a long task (a terminal shows it; a pipe gets its label)."""

    def __init__(self) -> None:
        self._phase: str | None = None
        self._bar: Any = None

    def advance(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            self._phase = phase
            self._bar = click.progressbar(length=total, label=phase, file=sys.stderr).__enter__()
        self._bar.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> _PhaseBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _finish_unfinished(config: Config, store: GraphStore) -> None:
    """Finish the clean-ups a kill stopped part-way, saying so."""
    from imgwatch.use_cases import finish_unfinished

    for finished in finish_unfinished(config, store):
        click.echo(f"finished an earlier clean-up that was stopped part-way: {_moved_line(finished)}; "
                   f"manifest: {printable(str(finished.manifest))}")
        _say_refused(finished)


def _undo(config: Config, manifest: str) -> None:
    from imgwatch.store import open_store
    from imgwatch.use_cases import undo_cleanup

    with open_store(config, create=False) as store:
        cleanup = undo_cleanup(config, store, manifest)
    if not cleanup.moves and not cleanup.refused:
        click.echo(f"nothing to put back: {printable(manifest)} was undone already")
        return
    click.echo(f"put back {len(cleanup.moves)} cop{'y' if len(cleanup.moves) == 1 else 'ies'} "
               f"({human_size(cleanup.bytes)}) where they were")
    if cleanup.to_index_again:
        click.echo(f"{cleanup.to_index_again} of them are back in watched folders: they are indexed again "
                   "(the running daemon sees them; `imgwatch run` looks at its start)")
    _say_refused(cleanup)
    if cleanup.refused:
        click.get_current_context().exit(EXIT_PARTLY)


def _moved_line(cleanup: Cleanup) -> str:
    return f"moved {len(cleanup.moves)} cop{'y' if len(cleanup.moves) == 1 else 'ies'} ({human_size(cleanup.bytes)})"


def _say_refused(cleanup: Cleanup) -> None:
    """Each file left in place, with why, on stderr."""
    if not cleanup.refused:
        return
    click.echo(f"left in place: {len(cleanup.refused)} file(s)", err=True)
    for refusal in cleanup.refused:
        click.echo(f"  {printable(refusal.path)}: {printable(refusal.reason)}", err=True)


def _decide(config: Config, not_duplicates: bool, keep: str | None, paths: tuple[str, ...]) -> None:
    """`duplicates --not-duplicates / --keep / --undecide`: record or drop a decision, say so in one line."""
    from imgwatch import decisions
    from imgwatch.store import open_store

    with open_store(config, create=False) as store:
        if not_duplicates:
            decision = decisions.decide_not_duplicates(store, paths)
            click.echo(f"decided: the {len(paths)} images are not duplicates ({len(decision.hashes)} contents); "
                       "their group is hidden until another copy joins (`imgwatch duplicates --all` shows it)")
        elif keep is not None:
            decisions.decide_keep(store, keep, paths)
            click.echo(f"decided: keep {printable(keep)} over {len(paths)} other(s); their group is hidden until "
                       "another copy joins (`imgwatch duplicates --all` shows it)")
        else:
            if not paths:
                raise click.UsageError("--undecide needs the paths whose decisions to drop")
            forgotten = decisions.undecide(store, paths)
            click.echo(f"dropped {forgotten} decision(s) about those contents: their groups are shown again"
                       if forgotten else "no decision was about those contents: nothing changed")


@main.command("eval")
@click.option("--sample", "sample_size", type=click.IntRange(min=2), default=200, show_default=True,
              help="How many photos to make edited copies of.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which photos are drawn (same seed, same photos).")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Draw the photos from this folder instead of the store.")
@click.option("--model", "models", multiple=True, metavar="NAME|PATH",
              help="A model to evaluate (imagenet | random | weights file | a .toml naming a model file and its "
                   "preprocessing); repeat to compare. Default: the store's.")
@click.option("--distractors", type=click.IntRange(min=0), default=1000, show_default=True,
              help="For a model the store holds no vectors of: other library photos to search among.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw the worst misses into this PNG (or .jpg/.webp).")
@common_options
def eval_command(config: Config, sample_size: int, seed: int, folder: str | None, models: tuple[str, ...],
                 distractors: int, as_json: bool, sheet: str | None) -> None:
    """How well the model finds edited copies of your photos, and which thresholds to use.

    Edited copies go to a temporary folder; the store is only read.
    """
    from imgwatch.evaluation.run import EvalOptions, evaluate

    report = evaluate(config, EvalOptions(sample_size, seed, folder, models, distractors, sheet))
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.as_text())
    if sheet:
        click.echo(f"misses sheet: {printable(sheet)}", err=True)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: web.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: web.port, 8765).")
@service_options
def web(config: Config, host: str | None, port: int | None) -> None:
    """Serve the web page: search by photo, neighbours, duplicates, status (and its JSON API).

    Any address but loopback needs a token: $IMGWATCH_WEB_TOKEN or web.token_file.
    """
    from imgwatch.signals import stop_on_signals
    from imgwatch.web import serve

    if host is not None:
        config.web.host = host
    if port is not None:
        config.web.port = port
    stop = stop_on_signals()
    serve(config, stop, on_ready=lambda url: click.echo(f"imgwatch web: serving on {url}", err=True))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
@common_options
def status(config: Config, as_json: bool, watch: bool) -> None:
    """Queued and running work, failed items with reasons, image and link counts."""
    from imgwatch.reports import gather_status

    def show() -> None:
        report = gather_status(config)
        click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.as_text())

    if not watch:
        show()
        return
    on_terminal = sys.stdout.isatty()
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            if on_terminal:
                click.echo("\x1b[H\x1b[2J", nl=False)  # redraw in place
            show()
            if not on_terminal:
                click.echo()
            time.sleep(1.0)


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
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False))
@common_options
def forget(config: Config, folders: tuple[str, ...]) -> None:
    """Remove the images below FOLDERS from the store: folders no longer watched.

    Their links and failed-file records go too; the files are not touched. A watched
    folder (general.roots, or one a running worker indexes) is refused: its files would be
    indexed again.
    """
    from imgwatch.use_cases import forget as forget_below

    chosen = [folder_argument(f) for f in folders]
    noted = False
    for folder, forgotten in forget_below(config, chosen):
        if forgotten.failures is None and not noted:
            click.echo(f"the failed-file records below {printable(', '.join(chosen))} stay "
                       "(the queue is not running); run forget again while imgwatch runs to clear them", err=True)
            noted = True
        records = "" if forgotten.failures is None else f" and {forgotten.failures} failed-file record(s)"
        click.echo(f"forgot {forgotten.images} image(s){records} below {printable(folder)}")


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
                   f"({printable(totals.location)}) to {target_backend} ({printable(target.stats().location)})",
                   err=True)
        with click.progressbar(length=totals.images + totals.links, label="migrating", file=sys.stderr) as bar:
            report = copy_store(source, target, progress=lambda _phase, done: bar.update(done))
    click.echo(f"copied {report.images_copied} images ({report.images_skipped} were already there), "
               f"{report.links_copied} links and {report.decisions_copied} duplicate decisions to {target_backend}. "
               "To use it: set general.store = "
               f"\"{target_backend}\" (or IMGWATCH_GENERAL_STORE={target_backend}).")


if __name__ == "__main__":
    main()
