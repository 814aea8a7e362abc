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
