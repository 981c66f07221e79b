"""A sweep file: a base session file, the settings to vary, the seeds; checked before anything runs.

::

    [sweep]
    name = "trust-radius"        # the sweep's name in the database (letters, digits, - and _)
    base = "session.toml"        # the session file every setting changes (default: the embedded defaults)
    seeds = [3, 4, 5]            # each setting runs once per seed (the virtual subject and the session's)
    pool = 2000                  # natural images no session shows, each seed's truth is judged against
    threads = 1                  # torch threads per session on a worker

    [grid]                       # every combination of these values ...
    "synthesis.trust_radius" = [0.15, 0.3]
    "synthesis.strategy" = ["adaptive", "screened"]

    [settings.fast]              # ... and named settings, each a part of a session file
    synthesis.steps = 64

A grid setting is named by its values (``trust_radius=0.15 strategy=adaptive``).
With neither ``[grid]`` nor ``[settings]`` the sweep runs the base alone.
Each setting becomes a session file (the base with its changes), checked as
``cortexloop session check`` checks one: a setting whose file is wrong is a
problem of that setting, named, and the others still run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.base import ConfigError
from loop.config import SESSION_SECTIONS, SessionConfig, load_config, parse_config, to_toml

__all__ = ["SessionTask", "Setting", "SweepPlan", "load_sweep", "slug"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SWEEP_KEYS = {"name", "base", "seeds", "pool", "threads"}


@dataclass(frozen=True)
class Setting:
    """One setting of a sweep: its name and its changes to the base session file, by section."""

    name: str
    overrides: dict[str, dict[str, Any]]
    config: SessionConfig | None  # the base with the changes; None when they are wrong (see problem)
    problem: str | None = None

    @property
    def slug(self) -> str:
        """The setting's name as a file name."""
        return slug(self.name)


@dataclass(frozen=True)
class SessionTask:
    """One simulated session of a sweep: what a worker needs to run it, and nothing else."""

    sweep: str
    setting: str
    seed: int
    session_toml: str  # the setting's session file, labels and seed set
    subject: str  # its labels, the same wherever it runs
    session: str
    threads: int

    @property
    def ref(self) -> str:
        return f"{self.subject}/{self.session}"


@dataclass(frozen=True)
class SweepPlan:
    """A sweep file, read and checked."""

    name: str
    source: Path
    text: str  # the sweep file, verbatim
    base: SessionConfig
    base_toml: str | None  # the base session file's text, when one was given
    seeds: tuple[int, ...]
    pool: int
    threads: int
    settings: tuple[Setting, ...] = field(default=())

    @property
    def problems(self) -> dict[str, str]:
        """Each setting whose session file is wrong, by name, and what is wrong."""
        return {s.name: s.problem for s in self.settings if s.problem is not None}

    def tasks(self) -> list[SessionTask]:
        """Every session the sweep runs (settings with a problem run none), setting by setting."""
        tasks = []
        for setting in self.settings:
            if setting.config is None:
                continue
            for seed in self.seeds:
                subject = f"sub-seed{seed}"
                session = f"ses-{self.label_of(setting)}"
                config = dataclasses.replace(
                    setting.config,
                    session=dataclasses.replace(
                        setting.config.session, subject=subject, session=session, seed=seed, kind="simulation"
                    ),
                )
                tasks.append(
                    SessionTask(
                        self.name, setting.name, seed, to_toml(config), subject, session, self.threads
                    )
                )
        return tasks

    def label_of(self, setting: Setting) -> str:
        """The session label of a setting's sessions: the sweep's name and a digest of the setting's."""
        digest = hashlib.sha256(setting.name.encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9]", "", self.name)[:40] + digest


def slug(setting: str) -> str:
    """A setting's name as a file name (its session file, its sessions' reports)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", setting).strip("_") or "setting"


def load_sweep(path: Path) -> SweepPlan:
    """Read and check a sweep file; :class:`ConfigError` names what is wrong in it.

    A setting whose session file would be wrong is not an error here: it is
    the setting's :attr:`Setting.problem`, reported by name, and the other
    settings still run.
    """
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"sweep", "grid", "settings"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) [{'], ['.join(unknown)}]; sections: sweep, grid, settings"
        )
    head = _table(data, "sweep", path)
    problems = []
    if set(head) - SWEEP_KEYS:
        problems.append(f"[sweep] has unknown key(s) {', '.join(sorted(set(head) - SWEEP_KEYS))}")
    name = head.get("name", path.stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(
            f"[sweep] name must be 1-64 letters, digits, - or _ (a letter or digit first), not {name!r}"
        )
    seeds = head.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        problems.append(f"[sweep] seeds must be a list of whole numbers 0 or more, not {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"[sweep] seeds has one twice: {seeds}")
    pool, threads = head.get("pool", 2000), head.get("threads", 1)
    for key, value in (("pool", pool), ("threads", threads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"[sweep] {key} must be a whole number 1 or more, not {value!r}")
    base, base_toml = SessionConfig(), None
    if "base" in head:
        base_path = path.parent / str(head["base"])
        base = load_config(base_path)  # its own errors name it
        base_toml = base_path.read_text()
    named = _table(data, "settings", path)
    grid = _table(data, "grid", path)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems), problems=problems)
    changes = [(n, _overrides(v, f"[settings.{n}]", path)) for n, v in named.items()] + _grid(grid, path)
    if not changes:
        changes = [("base", {})]
    names = [n for n, _ in changes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: more than one setting is named {', '.join(map(repr, twice))}")
    settings = tuple(_setting(n, o, base) for n, o in changes)
    return SweepPlan(
        name=str(name),
        source=path,
        text=text,
        base=base,
        base_toml=base_toml,
        seeds=tuple(seeds),
        pool=int(pool),
        threads=int(threads),
        settings=settings,
    )


def _table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table of keys")
    return table


def _overrides(table: Any, where: str, path: Path) -> dict[str, dict[str, Any]]:
    """A setting's changes by section: ``synthesis.steps = 64`` or ``synthesis = {steps = 64}``."""
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(
            f"{path}: {where} must hold section.key = value lines, such as synthesis.steps = 64"
        )
    if "session" in table:
        raise ConfigError(
            f"{path}: {where} changes [session]; a sweep sets each session's labels, seed and database "
            "itself (the seeds are [sweep] seeds)"
        )
    return {section: dict(keys) for section, keys in table.items()}


def _grid(grid: dict[str, Any], path: Path) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """Every combination of the grid's values, each named by them."""
    axes = []
    for key, values in grid.items():
        section, _, name = key.partition(".")
        if not name or "." in name:
            raise ConfigError(
                f'{path}: [grid] keys are "section.key", such as "synthesis.steps", not {key!r}'
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: [grid] {key} must be a list of the values to try, not {values!r}")
        axes.append((section, name, values))
    if any(section == "session" for section, _, _ in axes):
        raise ConfigError(f"{path}: [grid] varies [session]; the sweep sets each session's labels and seed")
    short = [name for _, name, _ in axes]
    labels = [name if short.count(name) == 1 else f"{section}.{name}" for section, name, _ in axes]
    out = []
    for combination in itertools.product(*(values for _, _, values in axes)) if axes else ():
        overrides: dict[str, dict[str, Any]] = {}
        for (section, name, _), value in zip(axes, combination, strict=True):
            overrides.setdefault(section, {})[name] = value
        out.append(
            (
                " ".join(f"{label}={_shown(v)}" for label, v in zip(labels, combination, strict=True)),
                overrides,
            )
        )
    return out


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _setting(name: str, overrides: dict[str, dict[str, Any]], base: SessionConfig) -> Setting:
    """The setting's session file: the base with its changes, checked; or what is wrong with it."""
    data = tomllib.loads(to_toml(base))  # the base as its file holds it
    unknown = sorted(set(overrides) - set(SESSION_SECTIONS))
    if unknown:
        return Setting(name, overrides, None, f"unknown section(s) {', '.join(unknown)}")
    for section, keys in overrides.items():
        data[section] = {**data[section], **keys}
    try:
        config = parse_config(data, source=base.source)
    except ConfigError as exc:
        return Setting(name, overrides, None, "; ".join(exc.problems) or str(exc))
    if config.training.image_set:  # a worker reads it from its own folder: the path must not be relative
        training = dataclasses.replace(
            config.training, image_set=str(config.resolve(config.training.image_set).resolve())
        )
        config = dataclasses.replace(config, training=training)
    return Setting(name, overrides, config)
