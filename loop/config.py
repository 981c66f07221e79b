"""A session's configuration: one TOML file, validated before anything starts.

Every section and key is known: an unknown one is an error that names the
file, the section and the keys it could have been (a typo must not silently
fall back to a default in front of the scanner). Values are type-checked and
checked against each other (more targets per round than candidate ROIs, a
trial longer than its onset-to-onset interval...). ``cortexloop session
init`` writes :data:`EXAMPLE`, a commented file that loads to the defaults.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.base import ConfigError

__all__ = [
    "EXAMPLE",
    "AtlasConfig",
    "ModelConfig",
    "RoundsConfig",
    "ScannerConfig",
    "SessionConfig",
    "SessionSection",
    "SimulationConfig",
    "SynthesisSettings",
    "TrainingConfig",
    "load_config",
    "parse_config",
    "to_toml",
]

POLICIES = ("all", "worst")
CONTROLS = ("best_natural", "median_natural", "other_targets")
DESIGNS = ("event", "block")


@dataclass(frozen=True)
class SessionSection:
    subject: str = "sub-01"
    session: str = "ses-01"
    kind: str = "simulation"
    database: str = "cortexloop.sqlite"
    output: str = "session"
    seed: int = 0


@dataclass(frozen=True)
class AtlasConfig:
    labels: str = ""
    names: str = ""


@dataclass(frozen=True)
class ScannerConfig:
    tr_s: float = 2.0
    bridge: str = "tcp://127.0.0.1:5555"
    presenter: str = "tcp://127.0.0.1:5560"
    key_file: str = "cortexloop.key"
    stimulus_dir: str = ""
    volume_timeout_s: float = 30.0
    trigger_timeout_s: float = 60.0


@dataclass(frozen=True)
class TrainingConfig:
    images: int = 100
    repeated: int = 20
    repeats: int = 3
    design: str = "event"
    trial_s: float = 1.0
    isi_s: float = 4.0
    lead_in_s: float = 6.0
    lead_out_s: float = 16.0


@dataclass(frozen=True)
class RoundsConfig:
    count: int = 3
    targets: tuple[str, ...] = ("V1", "V4", "LO", "FFA", "PPA")
    targets_per_round: int = 5
    images_per_target: int = 4
    repeats: int = 2
    policy: str = "all"
    controls: tuple[str, ...] = CONTROLS
    trial_s: float = 1.0
    isi_s: float = 4.0


@dataclass(frozen=True)
class SynthesisSettings:
    steps: int = 64
    image_size: int = 96
    display_size: int = 256
    objective: str = "voxel-weighted"
    diversity: float = 0.1
    learning_rate: float = 0.02
    init: str = "best"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "efficientnet-lite0"
    image_size: int = 96
    budget: int = 1000
    reduction: str = "pool"
    folds: int = 5


@dataclass(frozen=True)
class SimulationConfig:
    subject: str = "default"
    speed: float = 20.0
    format: str = "nifti"
    truth: str = ""


@dataclass(frozen=True)
class SessionConfig:
    """The whole file; ``source`` is where it was read from (for messages and relative paths)."""

    session: SessionSection = field(default_factory=SessionSection)
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    source: str = "<defaults>"

    @property
    def database_target(self) -> str | Path:
        """The database: an SQLAlchemy URL as written, else a path relative to the file's folder."""
        database = self.session.database
        return database if "://" in database else self.resolve(database)

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        base = Path(self.source).parent if self.source != "<defaults>" else Path(".")
        return (base / path) if path and not Path(path).is_absolute() else Path(path)


def load_config(path: Path | str) -> SessionConfig:
    """Read and check a session file; :class:`ConfigError` says what is wrong and where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"session file {path} does not exist; write an example with `cortexloop session init`"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"session file {path} is not valid TOML: {exc}") from None
    return parse_config(data, source=str(path))


def parse_config(data: dict[str, Any], *, source: str = "<text>") -> SessionConfig:
    unknown = sorted(set(data) - set(SESSION_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) [{'], ['.join(unknown)}]; sections: {', '.join(SESSION_SECTIONS)}"
        )
    sections = {}
    for name, kind in SESSION_SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table of keys")
        sections[name] = _section(kind, table, name, source)
    config = SessionConfig(**sections, source=source)
    _check(config)
    return config


SESSION_SECTIONS: dict[str, type[Any]] = {
    "session": SessionSection,
    "atlas": AtlasConfig,
    "scanner": ScannerConfig,
    "training": TrainingConfig,
    "rounds": RoundsConfig,
    "synthesis": SynthesisSettings,
    "model": ModelConfig,
    "simulation": SimulationConfig,
}


def _section(kind: type[Any], table: dict[str, Any], name: str, source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: [{name}] has unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(kind)
    values = {}
    for key, value in table.items():
        expected = hints[key]
        if typing.get_origin(expected) is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: [{name}] {key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif expected is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{source}: [{name}] {key} must be a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(f"{source}: [{name}] {key} must be {expected.__name__}, got {value!r}")
        values[key] = value
    return kind(**values)


def _check(c: SessionConfig) -> None:
    problems = []
    where = c.source
    if c.session.kind not in ("simulation", "scanner"):
        problems.append(f"[session] kind is {c.session.kind!r}; use simulation or scanner")
    if not c.scanner.tr_s > 0:
        problems.append(f"[scanner] tr_s must be positive, got {c.scanner.tr_s}")
    t = c.training
    if t.design not in DESIGNS:
        problems.append(f"[training] design is {t.design!r}; use {' or '.join(DESIGNS)}")
    if t.repeated > t.images:
        problems.append(f"[training] repeated ({t.repeated}) cannot exceed images ({t.images})")
    if t.repeats < 1 or t.images < 10:
        problems.append("[training] needs at least 10 images and repeats >= 1")
    for section, trial, isi in (
        ("training", t.trial_s, t.isi_s),
        ("rounds", c.rounds.trial_s, c.rounds.isi_s),
    ):
        if not 0 < trial < isi:
            problems.append(f"[{section}] trial_s ({trial}) must be positive and shorter than isi_s ({isi})")
    r = c.rounds
    if r.policy not in POLICIES:
        problems.append(f"[rounds] policy is {r.policy!r}; use {' or '.join(POLICIES)}")
    if not 1 <= r.targets_per_round <= len(r.targets):
        problems.append(
            f"[rounds] targets_per_round ({r.targets_per_round}) must be between 1 and the "
            f"{len(r.targets)} targets listed"
        )
    bad = sorted(set(r.controls) - set(CONTROLS))
    if bad:
        problems.append(f"[rounds] unknown control(s) {', '.join(bad)}; known: {', '.join(CONTROLS)}")
    if r.count < 0 or r.images_per_target < 1 or r.repeats < 1:
        problems.append("[rounds] count must be >= 0, images_per_target and repeats >= 1")
    from stimulus.synthesis.objectives import OBJECTIVES

    if c.synthesis.objective not in OBJECTIVES:
        problems.append(f"[synthesis] objective is {c.synthesis.objective!r}; use {', '.join(OBJECTIVES)}")
    if c.synthesis.init not in ("best", "noise", "grey"):
        problems.append(f"[synthesis] init is {c.synthesis.init!r}; use best, noise or grey")
    if c.simulation.format not in ("nifti", "dicom") or not c.simulation.speed > 0:
        problems.append("[simulation] format must be nifti or dicom and speed positive")
    if c.session.kind == "scanner" and not (c.atlas.labels and c.atlas.names):
        problems.append("[atlas] labels and names are required in a scanner session")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


EXAMPLE = """\
# A cortexloop session. Every key is optional; the values shown are the defaults.
# Unknown sections or keys are errors. Paths are relative to this file.

[session]
subject = "sub-01"
session = "ses-01"
kind = "simulation"            # simulation (virtual subject) or scanner
database = "cortexloop.sqlite" # a path (SQLite) or an SQLAlchemy URL
output = "session"             # stimuli, models, events and reports go here
seed = 0

[atlas]
# A NIfTI label image on the run's grid and a TSV with columns index and name.
# Leave empty in a simulation: the virtual subject's atlas is used.
labels = ""
names = ""

[scanner]
tr_s = 2.0
bridge = "tcp://127.0.0.1:5555"     # where `cortexloop bridge watch` serves volumes
presenter = "tcp://127.0.0.1:5560"  # where `cortexloop present` serves
key_file = "cortexloop.key"         # `cortexloop bridge keygen`; the same file on every computer
stimulus_dir = ""                   # the presenter's stimulus folder (default: <output>/stimuli)
volume_timeout_s = 30.0
trigger_timeout_s = 60.0

[training]
images = 100        # natural images in the training run
repeated = 20       # of which this many are shown `repeats` times (the noise ceiling)
repeats = 3
design = "event"    # event (one image per trial) or block
trial_s = 1.0       # how long each image is shown
isi_s = 4.0         # onset to onset
lead_in_s = 6.0
lead_out_s = 16.0

[rounds]
count = 3
targets = ["V1", "V4", "LO", "FFA", "PPA"]   # candidate target ROIs
targets_per_round = 5
images_per_target = 4
repeats = 2         # every image of a round is shown this many times
policy = "all"      # all (in turn) or worst (those the model predicts worst)
controls = ["best_natural", "median_natural", "other_targets"]
trial_s = 1.0
isi_s = 4.0

[synthesis]
steps = 64
image_size = 96      # pixels the model sees while optimizing (the model's)
display_size = 256   # pixels written for the presenter
objective = "voxel-weighted"
diversity = 0.1
learning_rate = 0.02
init = "best"        # best (from the images that drove the target most so far), noise or grey

[model]
backbone = "efficientnet-lite0"
image_size = 96
budget = 1000        # features per layer
reduction = "pool"   # pool or smooth
folds = 5

[simulation]
subject = "default"  # or a TOML file of virtual-subject settings
speed = 20.0         # times faster than real time
format = "nifti"     # nifti or dicom
truth = ""           # ground truth to score against (`cortexloop simulate` sets it)
"""


def to_toml(config: SessionConfig) -> str:
    """The configuration as a session file that :func:`load_config` reads back to the same values."""
    lines = [f"# cortexloop session file (written from {config.source})"]
    for name in SESSION_SECTIONS:
        lines.append(f"\n[{name}]")
        for key, value in dataclasses.asdict(getattr(config, name)).items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    import json

    return json.dumps(str(value))  # a TOML basic string is a JSON string
