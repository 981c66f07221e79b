"""A sweep file as a lab writes it: settings named and checked before anything runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from db.base import ConfigError
from loop.config import parse_config
from loop.sweep.plan import load_sweep
from tests.loop.conftest import Cli


def _write(folder: Path, text: str, base: str | None = None) -> Path:
    if base is not None:
        (folder / "base.toml").write_text(base)
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


def test_a_grid_and_named_settings_become_checked_session_files_one_per_setting_and_seed(
    tmp_path: Path,
) -> None:
    plan = load_sweep(_write(tmp_path, """
[sweep]
name = "radius"
base = "base.toml"
seeds = [3, 4]

[grid]
"synthesis.trust_radius" = [0.15, 0.3]
"rounds.count" = [2, 3]

[settings.short]
rounds.images_per_target = 2
""", base="[rounds]\ncount = 1\n"))  # fmt: skip
    names = [s.name for s in plan.settings]
    assert names == [
        "short", "trust_radius=0.15 count=2", "trust_radius=0.15 count=3", "trust_radius=0.3 count=2",
        "trust_radius=0.3 count=3",
    ]  # fmt: skip
    assert plan.problems == {}
    short = plan.settings[0]
    assert short.config is not None
    assert (short.config.rounds.count, short.config.rounds.images_per_target) == (1, 2)  # the base's, changed
    tasks = plan.tasks()
    assert [(t.setting, t.seed) for t in tasks[:2]] == [("short", 3), ("short", 4)]
    assert len(tasks) == 10
    config = parse_config(tomllib.loads(tasks[1].session_toml))
    assert (config.session.seed, config.session.subject, config.rounds.images_per_target) == (
        4,
        "sub-seed4",
        2,
    )
    assert tasks[0].session == tasks[1].session != tasks[2].session  # one label per setting
    assert len({t.ref for t in tasks}) == 10
    again = load_sweep(tmp_path / "sweep.toml")
    assert [t.ref for t in again.tasks()] == [t.ref for t in tasks]  # the same labels every time


def test_a_setting_whose_session_file_is_wrong_is_named_with_everything_wrong_and_runs_nothing(
    tmp_path: Path,
) -> None:
    plan = load_sweep(_write(tmp_path, """
[sweep]
seeds = [0]

[settings.fine]
synthesis.steps = 16

[settings.wrong]
synthesis.steps = 0
synthesis.strategy = "gradient-descent"
model.nonsense = 1
"""))  # fmt: skip
    assert plan.name == "sweep"  # the file's name when none is given
    assert list(plan.problems) == ["wrong"]
    problem = plan.problems["wrong"]
    for part in ("steps", "gradient-descent", "nonsense"):  # everything wrong, at once
        assert part in problem
    assert [t.setting for t in plan.tasks()] == ["fine"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[sweep]\nname = 'a b'\n", "[sweep] name must be"),
        ("[sweep]\nseeds = [1, 1]\n", "seeds has one twice"),
        ("[sweep]\nseeds = []\n", "seeds must be a list"),
        ("[sweep]\npool = 0\n", "pool must be a whole number"),
        ("[sweep]\nworkers = 2\n", "unknown key(s) workers"),
        ("[sweeps]\n", "unknown section(s) [sweeps]"),
        ("[settings.x]\nsession.seed = 3\n", "changes [session]"),
        ("[grid]\n'steps' = [1, 2]\n", '"section.key"'),
        ("[grid]\n'synthesis.steps' = 4\n", "must be a list of the values"),
        ("[sweep]\nbase = 'missing.toml'\n", "missing.toml does not exist"),
        ("[settings.a]\nsynthesis = 3\n", "section.key = value"),
        ("[sweep\n", "is not valid TOML"),
    ],
)
def test_a_wrong_sweep_file_is_refused_naming_the_file_and_what_is_wrong(
    tmp_path: Path, text: str, says: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    assert says in str(caught.value)


def test_the_command_refuses_a_scheduler_it_cannot_reach_in_one_line(cortexloop: Cli, tmp_path: Path) -> None:
    path = _write(tmp_path, "[sweep]\nseeds = [0]\n")
    result = cortexloop("sweep", path, "--out", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    both = cortexloop("sweep", path, "--scheduler", "tcp://127.0.0.1:9", "--workers", "2")
    assert both.returncode == 1
    assert "not both" in both.stderr
