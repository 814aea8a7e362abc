"""The ``insarwatch`` command line: a thin Typer layer over the library modules.

Each command parses its options, loads settings, calls one or two library functions and
prints the result. Errors the user can act on (``InsarwatchError``) become one line on
stderr and exit code 2 (bad input) or 1 (runtime failure) instead of a traceback.

It stays one module past ~500 lines on purpose: it is the table of every command and its
options and help (what ``insarwatch --help`` lists), with no logic of its own to split off.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from . import console
from .config import Settings, load_settings
from .errors import InsarwatchError

app = typer.Typer(
    name="insarwatch",
    help="Watch a LiCSAR drop directory, caption interferograms with BLIP and alert volcanologists.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


CONFIG_HELP = "Settings file (default /etc/insarwatch/insarwatch.toml)."


class Invocation:
    """Per-invocation options shared by every command; settings load on first use."""

    def __init__(self, config: Path | None, verbose: bool) -> None:
        self.config = config
        self.verbose = verbose
        self._settings: Settings | None = None

    def use_config(self, config: Path) -> None:
        self.config = config
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help=CONFIG_HELP, envvar="INSARWATCH_CONFIG"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    console.setup_logging(verbose)
    ctx.obj = Invocation(config, verbose)


_CONFIG_PARAMETER = inspect.Parameter(
    "config", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)],
)


def command(*, examples: list[str], **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose help ends with examples and whose errors are one line.

    A command that reads settings (it takes ``ctx``) also accepts ``--config`` after its
    name, as in ``insarwatch watch --config FILE``, overriding the global option.
    """
    epilog = "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  $ {example}" for example in examples)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        reads_settings = "ctx" in signature.parameters

        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            config = kw.pop("config", None)
            if config is not None:
                kw["ctx"].obj.use_config(config)
            try:
                return fn(*args, **kw)
            except InsarwatchError as exc:
                console.stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None

        if reads_settings:
            wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
                parameters=[*signature.parameters.values(), _CONFIG_PARAMETER])
            wrapper.__annotations__ = {**fn.__annotations__, "config": _CONFIG_PARAMETER.annotation}
        return app.command(epilog=epilog, **kwargs)(wrapper)

    return decorate


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj.settings


def show(result: dict[str, Any] | list[dict[str, Any]], as_json: bool, table: Callable[[], Table | None]) -> None:
    """Print a command's result: with ``--json`` one indented object, or one object per line
    for a list (JSON Lines, for jq and pipes); else the rich table ``table`` builds, if any."""
    import json

    if as_json:
        if isinstance(result, list):
            for row in result:
                typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            typer.echo(json.dumps(result, indent=2))
        return
    built = table()
    if built is not None:
        console.stdout.print(built)


def key_value_table(title: str, rows: dict[str, Any]) -> Table:
    """Two columns, names in bold and values right-aligned; floats to four decimals."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@command(examples=[
    "insarwatch status",
    "insarwatch status --json",
    "INSARWATCH_VAR_DIR=/tmp/iw insarwatch status --json | jq .counts",
])
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Show what the service has done: interferograms per state, queue, alerts, deliveries, model.

    Reads the state database read-only, so it is safe while the daemon runs; with no
    database yet every count is zero.
    """
    from datetime import datetime, timezone

    from .registry import ModelStore
    from .store import Store

    settings = settings_of(ctx)
    try:  # a broken model must not hide the counts: it is reported beside them
        current, model_problem = ModelStore(settings.models_dir).in_use(), None
    except InsarwatchError as exc:
        current, model_problem = None, str(exc)
    with Store.open_readonly(settings.state_db) as store:
        summary = {**store.status_summary(datetime.now(timezone.utc)),
                   "model_version": current.name if current else None, "model_problem": model_problem}

    def table() -> Table:
        last = summary["last_processed"]
        error = summary["last_error"]
        built = key_value_table(f"insarwatch status ({settings.state_db})", summary["counts"])
        built.add_section()
        for label, value in (
            ("queue length", summary["queue_length"]),
            ("alerts (7 days / total)", f"{summary['alerts_7d']} / {summary['alerts_total']}"),
            ("pending deliveries", summary["pending_deliveries"]),
            ("given-up deliveries", summary["given_up_deliveries"]),
            ("model version", summary["model_version"] or "none"),
            ("model problem", summary["model_problem"] or "none"),
            ("last processed", f"{last['key']} at {last['at']}" if last else "never"),
            ("last error", f"{error['key']}: {error['error']} ({error['at']})" if error else "none"),
        ):
            built.add_row(label, str(value))
        return built

    show(summary, as_json, table)


@command(examples=[
    "insarwatch report --since 2026-11-01",
    "insarwatch report --since 2026-11-01 --until 2026-11-07",
    "insarwatch report --since 2026-11-16 --until 2026-11-22 --send",
])
def report(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="First day (YYYY-MM-DD, UTC) of the period.")],
    until: Annotated[str | None, typer.Option(
        "--until", help="Last day (YYYY-MM-DD, UTC, included); default now.")] = None,
    send: Annotated[bool, typer.Option(
        "--send", help="Also e-mail/post the digest through the outbox (once per period).")] = False,
) -> None:
    """Write a digest of a period: per volcano and frame, what arrived, was rejected (by reason),
    was processed and raised a review or an alert, with links to the alert pages.

    The digest goes to <var>/reports/digests/ as HTML and JSON; the paths are printed.
    """
    from datetime import datetime, timezone

    from . import notify, reports
    from .store import Store

    settings = settings_of(ctx)
    now = datetime.now(timezone.utc)
    start, end = reports.digest_period(since, until, now)
    if send:
        if not settings.state_db.exists():
            raise InsarwatchError(f"{settings.state_db}: no state database yet; nothing to send")
        with Store(settings.state_db) as store:
            rendered, new = notify.publish_digest(store, settings, start, end, now)
            if not new:
                console.stderr.print("this period's digest was sent before; not sending it again")
            run = notify.deliver_due(store, settings, now)
        console.stderr.print(f"delivered {run.delivered}, retrying {run.retrying}, given up {run.given_up}")
    else:
        # Only read, so this is safe beside a running daemon.
        with Store.open_readonly(settings.state_db) as store:
            rendered = reports.build_digest_report(reports.digest_from_store(store, start, end, settings), now)
    html_path, json_path = reports.write_report(rendered, settings.reports_dir)
    typer.echo(html_path)
    typer.echo(json_path)


def _with_beams(settings: Settings, beams: int | None) -> Settings:
    if beams is None:
        return settings
    return settings.model_copy(update={"captioning": settings.captioning.model_copy(update={"num_beams": beams})})


@command(examples=[
    "insarwatch train --data /srv/datasets/hephaestus-clean --preset tiny",
    "insarwatch train --data /srv/datasets/hephaestus-clean --base /srv/models/blip-image-captioning-base",
    "insarwatch train --data DATASET --preset tiny --epochs 5 --only-if-better --json",
    "insarwatch train --data DATASET --arch git",
    "insarwatch train --data DATASET --base /srv/models/git-base",
])
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Dataset directory made by `insarwatch prepare`.")],
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Preset name (tiny, base, git-tiny, git-base) or a preset JSON file; "
                         "default the architecture's tiny, or its base with --base.")] = None,
    base: Annotated[Path | None, typer.Option(
        "--base", help="Fine-tune this local snapshot (BLIP or GIT) instead of training from scratch.")] = None,
    arch: Annotated[str | None, typer.Option(
        "--arch", help="Architecture: blip or git (default: the preset's, or the --base snapshot's, else blip).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Override the preset's epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Override the batch size.")] = None,
    learning_rate: Annotated[float | None, typer.Option(
        "--learning-rate", min=0, help="Override the peak learning rate.")] = None,
    beams: Annotated[int | None, typer.Option(
        "--beams", min=1, help="Beam width for the test evaluation (default captioning.num_beams).")] = None,
    only_if_better: Annotated[bool, typer.Option(
        "--only-if-better", help="Make the new version current only if its test ROUGE-L >= the current one's.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Train a captioner, index the training split, evaluate on the test split and register
    the result under <var>/models/. `current` moves to it only if evaluation succeeded
    (and, with --only-if-better, it beats the current model). Ctrl-C keeps the best epoch so far.
    """
    import training

    settings = _with_beams(settings_of(ctx), beams)
    chosen = training.choose_preset(preset, arch, base).with_training(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate
    )
    with console.progress(transient=True) as bars:
        outcome = training.train(data, chosen, settings, bars, base=base, only_if_better=only_if_better)
    show({
        "version": outcome.version.name, "path": str(outcome.version.path),
        "made_current": outcome.made_current, "reason": outcome.reason,
        "best_epoch": outcome.fit.best_epoch, "interrupted": outcome.fit.interrupted,
        "metrics": outcome.metrics,
    }, as_json, lambda: key_value_table(f"test metrics of {outcome.version.name}", outcome.metrics))
    if as_json:
        return
    moved = "made current" if outcome.made_current else "NOT made current"
    typer.echo(f"registered {outcome.version.path} ({moved}: {outcome.reason})")


@command(examples=[
    "insarwatch evaluate --model current --data /srv/datasets/hephaestus-clean",
    "insarwatch evaluate --model 20261123T221500Z --data DATASET --json",
    "insarwatch evaluate --model /srv/models/my-blip --data DATASET --beams 1",
    "insarwatch evaluate --tiles ../shared/realdata/c1 --out c1.jsonl",
])
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset directory made by `insarwatch prepare`.")] = None,
    tiles: Annotated[Path | None, typer.Option(
        "--tiles", help="Folder of labelled tiles instead: DIR/1/* deformation, DIR/0/* none.")] = None,
    model: Annotated[str, typer.Option(
        "--model", help="Registered version name, `current`, or a model directory.")] = "current",
    beams: Annotated[int | None, typer.Option(
        "--beams", min=1, help="Beam width (default captioning.num_beams).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="With --tiles: write one JSON line per image (caption, finding, vote, level) here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Recompute a model's test metrics (ROUGE, BLEU, retrieval exact match, deformation
    precision/recall/F1) on a dataset's test split, exactly as `insarwatch train` does.

    With --tiles, measure it on labelled real tiles instead: per tile, precision, recall,
    false-alarm rate and balanced accuracy of the caption's deformation call, of the
    neighbour vote alone (vote >= alerts.review_vote), and of the decision (alert; alert or review).
    """
    import training

    if (data is None) == (tiles is None):
        raise InsarwatchError("give exactly one of --data DATASET or --tiles DIR")
    if out is not None and tiles is None:
        raise InsarwatchError("--out goes with --tiles")
    settings = _with_beams(settings_of(ctx), beams)
    if tiles is not None:
        _evaluate_tiles(model, tiles, settings, out, as_json)
        return
    with console.progress(transient=True) as bars:
        version, evaluation = training.evaluate(model, data, settings, bars)
    show({"version": version.name, "metrics": evaluation.metrics}, as_json,
         lambda: key_value_table(f"test metrics of {version.name}", evaluation.metrics))


def _evaluate_tiles(model: str, tiles: Path, settings: Settings, out: Path | None, as_json: bool) -> None:
    from training.real_tiles import evaluate_model_on_tiles, write_lines

    with console.progress(transient=True) as bars:
        evaluation = evaluate_model_on_tiles(model, tiles, settings, bars)
    for error in evaluation.refused:
        console.stderr.print(f"skipped {error}", markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        write_lines(evaluation, out)
    summary = evaluation.summary()

    def table() -> Table:
        built = Table(title=f"model {summary['version']}: {summary['deforming']} deforming, "
                            f"{summary['quiet']} quiet ({summary['refused']} unreadable)", caption=summary["tiles"])
        for name in ("call", "precision", "recall", "false alarms", "balanced accuracy", "tp/fp/tn/fn"):
            built.add_column(name, justify="left" if name == "call" else "right", no_wrap=name == "call")
        for call, row in summary["calls"].items():
            built.add_row(call, f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                          f"{row['false_alarm_rate']:.3f}", f"{row['balanced_accuracy']:.3f}",
                          f"{row['tp']}/{row['fp']}/{row['tn']}/{row['fn']}")
        return built

    show(summary, as_json, table)


@command(examples=[
    "insarwatch compare --data /srv/datasets/hephaestus-clean",
    "insarwatch compare --data DATASET --tiles ../shared/realdata/c1 --workdir /tmp/compare --json",
])
def compare(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Dataset directory made by `insarwatch prepare`.")],
    tiles: Annotated[Path | None, typer.Option(
        "--tiles", help="Labelled real tiles: DIR/1/*.png deforming, DIR/0/*.png not.")] = None,
    workdir: Annotated[Path, typer.Option(
        "--workdir", help="Where the compared models, compare.json and the figure go (models are reused).")
    ] = Path("insarwatch-compare"),
    blip_preset: Annotated[str, typer.Option("--blip-preset", help="BLIP's training preset name or JSON file.")
    ] = "tiny",
    git_preset: Annotated[str, typer.Option("--git-preset", help="GIT's training preset name or JSON file.")
    ] = "git-tiny",
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Rerun the captioning paper's comparison on one dataset split: BLIP, GIT, retrieval only
    and insarwatch's hybrid decision, with ROUGE, BLEU, exact match, deformation P/R/F1 and
    tiles per second (and deformation P/R/F1 on --tiles).

    Captioners are trained from their tiny presets into WORKDIR/models, or reused when one was
    trained there on this dataset with the same preset; the service's models are not touched.
    Writes WORKDIR/compare.json and WORKDIR/compare-validation.png (validation ROUGE/BLEU per epoch).
    """
    from training.compare import compare as run_compare

    with console.progress(transient=True) as bars:
        result = run_compare(data, workdir, settings_of(ctx), bars, tiles=tiles,
                             presets=(("BLIP", blip_preset), ("GIT", git_preset)))
    show(result.to_dict(), as_json, result.table)
    if not as_json:
        typer.echo(f"table: {result.table_file}")
        typer.echo(f"figure: {result.figure or 'none (no validation history)'}")


@command(examples=[
    "insarwatch prepare hephaestus/ --out dataset/",
    "insarwatch prepare hephaestus/ --out dataset/ --dry-run --json | jq .classes",
    "insarwatch synth-dataset /tmp/heph --n 400 --seed 1 && insarwatch prepare /tmp/heph --out /tmp/dataset",
])
def prepare(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="Hephaestus-style ROOT: annotations/*.json with images/ or a LiCSAR layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="DATASET directory to write images/ and manifest.jsonl into.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Count what the annotations decide; write nothing (images may be absent).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as one JSON object.")] = False,
) -> None:
    """Curate annotated interferograms into a training set exactly as the captioning paper did.

    Drops annotations by the Hephaestus label rules (and deforming ones under
    curation.deforming_min_confidence, 0.8: the paper's unstated rule), keeps palette
    (P-mode) PNGs only, uses every deforming sample and as many non-deforming ones drawn
    with random.Random(17) (the other way round if non-deforming are fewer), converts to RGB
    and splits 90/10 then 10% of train for validation (seed 17). Malformed annotations and
    missing images are listed and skipped; with --dry-run, images of unknown mode (missing)
    are counted as "unknown" and selected as if they were P-mode.
    """
    from collections.abc import Iterator, Sequence

    from .hephaestus import Candidate, prepare as prepare_dataset

    settings = settings_of(ctx)
    with console.progress() as bar:

        def track(items: Sequence[Candidate]) -> Iterator[Candidate]:
            task = bar.add_task("converting to RGB", total=len(items))
            for item in items:
                yield item
                bar.advance(task)

        result = prepare_dataset(root, out, settings.imaging, track, curation=settings.curation, dry_run=dry_run)
    for skipped in (*result.malformed, *result.unusable):
        console.stderr.print(f"skipped {skipped.path}: {skipped.reason}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        show(result.to_dict(), as_json, lambda: None)
        return
    for table in result.tables():
        console.stdout.print(table)


@command(examples=[
    "insarwatch caption 124D_04854_171313/interferograms/20201009_20201021/20201009_20201021.geo.diff.png",
    "insarwatch caption patches/*.png --json > captions.jsonl",
    "insarwatch caption tile.png --model 20261123T221500Z",
    "insarwatch caption tile.png --model ./blip-image-captioning-base",
])
def caption(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(
        help="PNG interferograms (whole frames are tiled), patches, or .geo.diff_pha.tif phase GeoTIFFs.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Model version, 'current', or a model directory (a bare captioner: no neighbours).",
    )] = "current",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per tile instead of a table.")] = False,
) -> None:
    """Caption PNG interferograms with BLIP and show the most similar expert-captioned examples.

    Frames are cut into imaging.tile_size tiles; each tile gets a caption, its
    retrieval.k nearest neighbours from the model's FAISS index and the daemon's decision
    for it (level alert, review or quiet, and the neighbours' vote). An image that cannot be
    decoded is reported on one line and skipped; the exit code is then 2.
    """
    from .caption_files import describe_tiles, read_tiles
    from .describe import load_bundle
    from .registry import ModelStore
    from .volcanoes import catalogue_for

    settings = settings_of(ctx)
    bundle = load_bundle(ModelStore(settings.models_dir).resolve(model), settings)
    read = read_tiles(images, settings.imaging, bundle.model_input)
    for error in read.refused:
        console.stderr.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
    for problem in read.problems:
        console.stderr.print(f"warning: sibling not used: {problem}", markup=False, highlight=False, soft_wrap=True)
    with console.progress(transient=True) as bar:
        task = bar.add_task(f"captioning with {bundle.version.name}", total=len(read.tiles))
        captioned = describe_tiles(read.tiles, bundle, settings.retrieval.k, settings.alerts,
                                   lambda done: bar.advance(task, done),
                                   read.grids, catalogue_for(settings.volcanoes) if read.grids else None, read.unread)

    def table() -> Table | None:
        if not captioned:
            return None
        built = Table(title=f"captions by model {bundle.version.name}", show_lines=True)
        for name in ("image", "tile", "box", "caption", "level", "nearest examples (similarity, source)"):
            built.add_column(name, overflow="fold")
        for item in captioned:
            nearest = "\n".join(f"{round(n.similarity, 4):.3f} {n.record.source}: {n.record.caption}"
                                for n in item.described.neighbours)
            text = item.described.caption.text + (" (retrieved)" if item.described.caption.retrieved else "")
            built.add_row(item.image.name, str(item.tile.index), ",".join(map(str, item.tile.box)), text,
                          item.decision.level, nearest or "no index")
        return built

    show([item.to_dict() for item in captioned], as_json, table)
    if read.refused:
        console.stderr.print(f"{len(read.refused)} of {len(images)} images could not be captioned")
        raise typer.Exit(2)


def _pair(text: str, separator: str, what: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(separator))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not {what}") from None
    if first <= 0 or second <= 0:
        raise typer.BadParameter(f"{text!r}: both numbers must be positive")
    return first, second


@command(examples=[
    "insarwatch synth /tmp/drop --frames 4 --seed 1",
    "insarwatch synth /tmp/drop --frames 2 --seed 7 --size 448x448 --pairs 2",
    "insarwatch synth /tmp/drop --frames 6 --seed 3 --volcano 400,300",
])
def synth(
    ctx: typer.Context,
    drop: Annotated[Path, typer.Argument(help="Drop directory to write the LiCSAR layout into.")],
    frames: Annotated[int, typer.Option("--frames", min=1, help="Number of frames.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="Consecutive interferograms per frame.")] = 3,
    size: Annotated[str, typer.Option("--size", help="Frame size WIDTHxHEIGHT in pixels.")] = "1200x1000",
    volcano: Annotated[str | None, typer.Option(
        "--volcano", help="Volcano pixel position X,Y (default the frame centre).")] = None,
) -> None:
    """Write a synthetic LiCSAR drop: whole frames of wrapped phase (P-mode PNG) with
    .geo.cc.png coherence and .geo.diff_pha.tif / .geo.cc.tif GeoTIFFs georeferenced around
    a real GVP volcano, deformation near the volcano in every other frame.

    DROP/synth-truth.jsonl records, per interferogram, whether it deforms, the source type,
    intensity, the tiles (imaging.tile_size / tile_stride from the settings) that hold
    the deformation and the volcano the frame is placed around (volcano_name).
    """
    from .synthetic.drop import TRUTH_FILE, write_drop

    imaging = settings_of(ctx).imaging
    width, height = _pair(size, "x", "WIDTHxHEIGHT")
    position = _pair(volcano, ",", "X,Y") if volcano else None
    if position and not (position[0] < width and position[1] < height):
        raise typer.BadParameter(f"volcano {volcano} lies outside the {size} frame")
    with console.progress() as bar:
        task = bar.add_task("interferograms", total=frames * pairs)
        written = write_drop(drop, frames, seed, size=(width, height), volcano=position, pairs=pairs,
                                       tile_size=imaging.tile_size, tile_stride=imaging.tile_stride,
                                       advance=lambda: bar.advance(task))
    deforming = sum(frame.deforming for frame in written)
    typer.echo(f"{drop}: {frames} frames ({deforming} deforming), {frames * pairs} interferograms; "
               f"truth in {drop / TRUTH_FILE}")


@command(examples=[
    "insarwatch synth-dataset /tmp/hephaestus --n 1200 --seed 17",
    "insarwatch synth-dataset /tmp/patches --n 50 --seed 1 && insarwatch prepare /tmp/patches --out /tmp/dataset",
])
def synth_dataset(
    root: Annotated[Path, typer.Argument(help="Directory for images/ and annotations/.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of patches.")] = 1200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (patch i is the same for any --n).")] = 0,
) -> None:
    """Write Hephaestus-style 224x224 patches with annotation JSON and expert captions.

    About half deform (Mogi, Sill, Dyke, Spheroid, Earthquake at low/medium/high
    intensity); about one in ten carries a flag every curation filter removes, and 8% of
    the rest are RGBA.
    """
    from .synthetic.patches import write_dataset

    with console.progress() as bar:
        task = bar.add_task("patches", total=n)
        counts = write_dataset(root, n, seed, advance=lambda: bar.advance(task))
    typer.echo(f"{root}: {n} patches, {counts['deforming']} deforming, {counts['non_deforming']} not, "
               f"{counts['flagged']} flagged for removal, {counts['rgba']} RGBA")


@command(examples=[
    "echo 'A sill-type deformation pattern of low intensity can be detected on the central side.' | insarwatch findings",
    "insarwatch findings --file captions.txt > findings.jsonl",
    "insarwatch caption tile.png --json | jq -r .caption | insarwatch findings",
])
def findings(
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="Read captions from this UTF-8 file instead of stdin.")] = None,
) -> None:
    """Parse captions, one per line, into findings: one JSON object per line, in order.

    Each object is {"recognized", "deformation", "patterns": [{"type", "intensity",
    "location"}], "atmosphere", "low_coherence", "processing_error"}. Every input line gets
    an output line — a blank line is an empty caption ({"recognized": false, ...}) — so
    line N of the output always describes line N of the input.
    """
    import contextlib
    import json
    import sys

    from .errors import InputError
    from .findings import parse_caption

    if file is None:
        source, name = contextlib.nullcontext(sys.stdin.buffer), "<stdin>"
    else:
        try:
            source, name = file.open("rb"), str(file)
        except OSError as exc:
            raise InputError(file, exc.strerror or str(exc)) from None
    with source as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(name, f"line {number} is not UTF-8 ({exc.reason})") from None
            typer.echo(json.dumps(parse_caption(text.rstrip("\r\n")).to_dict(), ensure_ascii=False))


@command(examples=[
    "insarwatch watch",
    "insarwatch watch --once",
    "INSARWATCH_DROP_DIR=/data/licsar INSARWATCH_VAR_DIR=/tmp/iw insarwatch watch --once",
])
def watch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="Scan the drop, process everything present, deliver, and exit (cron, the demo).")] = False,
) -> None:
    """Watch the drop directory and caption, check and report every interferogram that arrives.

    Runs until SIGTERM/SIGINT (SIGHUP reloads the configuration). Under systemd it reports
    readiness, heartbeats and a status line through the notify socket. Progress is kept in
    <var>/state.db, so a restart never loses or repeats a frame.
    """
    from .daemon import run_daemon

    invocation = ctx.obj
    raise typer.Exit(run_daemon(invocation.settings, invocation.config, once=once))


@command(examples=[
    "insarwatch demo",
    "insarwatch demo --workdir /tmp/insarwatch-demo",
])
def demo(
    workdir: Annotated[Path, typer.Option(
        "--workdir", help="Where the drop, the training set, the model and the reports go.")] = Path("insarwatch-demo"),
    frames: Annotated[int, typer.Option("--frames", min=1, help="Synthetic frames (2 interferograms each).")] = 4,
    patches: Annotated[int, typer.Option("--patches", min=20, help="Synthetic training patches.")] = 1200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 7,
    preset: Annotated[str, typer.Option("--preset", help="Training preset name or JSON file.")] = "offline",
) -> None:
    """Run the whole service once on built-in synthetic data: make a LiCSAR-style drop and a
    training set, train the offline recipe's model (reused when WORKDIR already has one), process the
    drop as `watch --once` would, write the reports, and compare the decisions with the truth.

    Needs no network, no GPU and no configuration; /etc/insarwatch is not read.
    """
    from .demo import run_demo

    with console.progress(transient=True) as bars:
        summary = run_demo(workdir, bars, frames=frames, patches=patches, seed=seed, preset=preset)
    table = Table(title=f"insarwatch demo — model {summary.model_version}"
                        f"{' (trained now)' if summary.trained else ' (reused)'}")
    table.add_column("interferogram", no_wrap=True)
    for column in ("synthetic truth", "state", "decision"):
        table.add_column(column)
    for row in summary.rows:
        decision = row.level or (row.detail or "")
        table.add_row(row.key, row.truth, row.state, decision)
    console.stdout.print(table)
    metrics = summary.metrics
    if metrics:
        console.stdout.print(
            f"test metrics: ROUGE-L {metrics.get('rougeL', float('nan')):.3f}, "
            f"deformation F1 {metrics.get('deformation_f1', float('nan')):.3f}, "
            f"retrieval exact match {metrics.get('retrieval_exact_match', float('nan')):.3f}")
    console.stdout.print(f"finished in {summary.seconds:.0f} s; alert pages under "
                         f"{summary.workdir / 'var' / 'reports' / 'alerts'}")
    typer.echo(f"digest: {summary.digest_html}")


@command(examples=[
    "insarwatch retry 124D_04854_171313/20230105_20230117",
    "insarwatch retry --reason decode",
    "insarwatch retry --quarantined --json",
])
def retry(
    ctx: typer.Context,
    keys: Annotated[list[str] | None, typer.Argument(
        help="Interferogram keys (FRAME/PAIR, as `status` and the digest show them).", show_default=False)] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Every interferogram rejected for this reason (decode, too_small, nodata_fraction...).")] = None,
    quarantined: Annotated[bool, typer.Option("--quarantined", help="Every quarantined interferogram.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the keys queued as one JSON object.")] = False,
) -> None:
    """Queue rejected, failed or quarantined interferograms again, on purpose: the running
    daemon (or the next `watch --once`) reads them afresh, attempts reset.

    Give keys, or --reason R for every one rejected for R, or --quarantined. Keys are
    queued all together or, when one cannot be (unknown, never an interferogram, not
    stopped), none is.
    """
    from datetime import datetime, timezone

    from .store import Store

    if sum((bool(keys), reason is not None, quarantined)) != 1:
        raise typer.BadParameter("give interferogram keys, --reason R or --quarantined (one of them)")
    settings = settings_of(ctx)
    if not settings.state_db.exists():
        raise InsarwatchError(f"{settings.state_db}: no state database yet; nothing to retry")
    now = datetime.now(timezone.utc)
    with Store(settings.state_db) as store:
        if keys:
            with store.transaction():
                for key in keys:
                    store.retry(key, now)
            queued = list(keys)
        else:
            queued = store.retry_all("quarantined" if quarantined else "rejected", now, reason)
    console.stderr.print(f"queued {len(queued)} interferogram(s) again" if queued else "nothing to retry")

    def table() -> Table:
        built = Table(title="queued again", show_header=False)
        for key in queued:
            built.add_row(key)
        return built

    show({"queued": queued}, as_json, table)


@command(examples=[
    "insarwatch backfill /data/licsar --since 2019-01-01 --until 2020-12-31",
    "insarwatch backfill /data/licsar --frames 124D_04854_171313 --workers 2",
    "insarwatch backfill /data/licsar --address ray://head.example.org:10001 --workers 8 --gpus-per-worker 1",
    "insarwatch backfill /data/licsar --address auto --model 20261123T221500Z --notify",
])
def backfill(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="Root of a LiCSAR archive (<FRAME>/interferograms/<PAIR>/...).")],
    since: Annotated[str | None, typer.Option(
        "--since", help="Only pairs whose second date is on or after this day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Only pairs whose second date is on or before this day (YYYY-MM-DD).")] = None,
    frames: Annotated[str | None, typer.Option("--frames", help="Only these frames: F,F,...")] = None,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster: ray://HOST:10001, HOST:6379 or auto; default a local Ray on this machine.",
    )] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Model actors (each loads the model once).")] = 2,
    gpus_per_worker: Annotated[float | None, typer.Option(
        "--gpus-per-worker", min=0, help="GPUs per model actor; default 1 when the cluster has GPUs, else 0.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model version name or `current`.")] = "current",
    notify: Annotated[bool, typer.Option(
        "--notify", help="Also e-mail/post the alerts found (default: report pages only).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Caption a LiCSAR archive's history on a Ray cluster, exactly as the daemon would have.

    Interferograms the state database already holds for the model version are skipped;
    the rest go through the daemon's own steps into the same database, so status, reports
    and digests show them like watched ones. Stopped or killed, it carries on where it was
    when run again.
    """
    from datetime import date, datetime, timezone

    from .backfill import Cluster, Selection, parse_frames, run_backfill

    def day(text: str | None, option: str) -> date | None:
        try:
            return None if text is None else date.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a date YYYY-MM-DD", param_hint=option) from None

    try:
        selection = Selection(day(since, "--since"), day(until, "--until"), parse_frames(frames))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--frames") from None
    summary = run_backfill(settings_of(ctx), archive, selection=selection,
                           cluster=Cluster(address, workers, gpus_per_worker), model=model, notify_all=notify,
                           clock=lambda: datetime.now(timezone.utc))
    rows = summary.rows()
    show({**rows, "counts": summary.counts}, as_json, lambda: key_value_table(f"backfill of {archive}", rows))
