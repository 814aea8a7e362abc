"""The ``insarwatch`` command line: a thin Typer layer over the library modules.

Each command parses its options, loads settings, calls one or two library functions and
prints the result. Errors the user can act on (``InsarwatchError``) become one line on
stderr and exit code 2 (bad input) or 1 (runtime failure) instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

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


class State:
    """Per-invocation options shared by every command; settings load on first use."""

    def __init__(self, config: Path | None, verbose: bool) -> None:
        self.config = config
        self.verbose = verbose
        self._settings: Settings | None = None

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
        typer.Option("--config", "-c", help="Settings file (default /etc/insarwatch/insarwatch.toml).",
                     envvar="INSARWATCH_CONFIG"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    console.setup_logging(verbose)
    ctx.obj = State(config, verbose)


def command(*, examples: list[str], **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose help ends with examples and whose errors are one line."""
    epilog = "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  $ {example}" for example in examples)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except InsarwatchError as exc:
                console.stderr.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None

        return app.command(epilog=epilog, **kwargs)(wrapper)

    return decorate


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj.settings


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
    import json
    import os
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    from .store import read_status

    settings = settings_of(ctx)
    current = settings.models_dir / "current"
    summary = {
        **read_status(settings.state_db, datetime.now(timezone.utc)),
        "model_version": Path(os.readlink(current)).name if current.is_symlink() else None,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"insarwatch status ({settings.state_db})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for state, count in summary["counts"].items():
        table.add_row(state, str(count))
    table.add_section()
    last = summary["last_processed"]
    error = summary["last_error"]
    for label, value in (
        ("queue length", summary["queue_length"]),
        ("alerts (7 days / total)", f"{summary['alerts_7d']} / {summary['alerts_total']}"),
        ("pending deliveries", summary["pending_deliveries"]),
        ("given-up deliveries", summary["given_up_deliveries"]),
        ("model version", summary["model_version"] or "none"),
        ("last processed", f"{last['key']} at {last['at']}" if last else "never"),
        ("last error", f"{error['key']}: {error['error']} ({error['at']})" if error else "none"),
    ):
        table.add_row(label, str(value))
    Console().print(table)


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
    exists = settings.state_db.exists()
    if send and not exists:
        raise InsarwatchError(f"{settings.state_db}: no state database yet; nothing to send")
    # Without --send the database is only read, so this is safe beside a running daemon.
    with Store(settings.state_db if exists else Path(":memory:"), readonly=exists and not send) as store:
        digest = reports.digest_from_store(store, start, end, settings)
        rendered = reports.build_digest_report(digest, now)
        html_path, json_path = reports.write_report(rendered, settings.reports_dir)
        typer.echo(html_path)
        typer.echo(json_path)
        if send:
            if not notify.publish(store, digest.key, rendered, settings, now):
                console.stderr.print(f"digest {digest.key} was sent before; not sending it again")
            run = notify.deliver_due(store, settings, now)
            console.stderr.print(f"delivered {run.delivered}, retrying {run.retrying}, given up {run.given_up}")
