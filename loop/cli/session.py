"""``cortexloop session``: write and check a session's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.errors import ConfigError
from loop.cli._common import console
from loop.config import EXAMPLE, load_config

app = typer.Typer(help="A session's configuration: init, check.", no_args_is_help=True)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example.")] = Path("session.toml"),
) -> None:
    """Write a commented example session file (every key, with its default)."""
    try:
        with open(path, "x") as f:
            f.write(EXAMPLE)
    except FileExistsError:
        raise ConfigError(f"{path} exists; choose another name or move it away first") from None
    console.print(f"wrote {path}; edit it, then check it with `cortexloop session check {path}`")


@app.command()
def check(path: Annotated[Path, typer.Argument(help="The session file.", show_default=False)]) -> None:
    """Validate a session file and say what the session will do."""
    config = load_config(path)
    s, t, r = config.session, config.training, config.rounds
    shown = t.images + t.repeated * (t.repeats - 1)
    console.print(f"{path}: valid. {s.kind} session {s.subject}/{s.session}, TR {config.scanner.tr_s:g} s")
    console.print(
        f"training: {t.images} natural images ({t.repeated} shown {t.repeats} times), {shown} trials, "
        f"{t.design} design, {t.trial_s:g} s every {t.isi_s:g} s"
    )
    console.print(
        f"rounds: {r.count} x {r.targets_per_round} targets ({r.policy}) x {r.images_per_target} images, "
        f"controls: {', '.join(r.controls) or 'none'}"
    )
