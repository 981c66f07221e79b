"""A session's configuration: one TOML file, validated before anything starts.

Every section and key is known: an unknown one is an error that names the
file, the section and the keys it could have been (a typo must not silently
fall back to a default in front of the scanner). Values are type-checked
(a key typed with a ``Literal`` takes only its choices, read from the type)
and checked against each other (more targets per round than candidate ROIs,
a trial longer than its onset-to-onset interval...). Each section turns
itself into what the library it configures takes (:meth:`ModelConfig.encoding`,
:meth:`SynthesisSettings.synthesis`, ``.timing`` of the training run and the
rounds), so every key reaches the code it names. ``cortexloop session init``
writes :data:`EXAMPLE`, a commented file that loads to the defaults.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from db.base import ConfigError
from loop.plans import Design, Timing, planned_volumes
from stimulus.names import BackboneName, CvKind, ObjectiveKind, ReductionMethod
from stimulus.present.plan import FixationSettings

if TYPE_CHECKING:
    from stimulus.encoding import EncodingConfig
    from stimulus.synthesis import SynthesisConfig

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

SessionKindName = Literal["simulation", "scanner"]
Policy = Literal["all", "worst"]
Control = Literal["best_natural", "median_natural"]
StrategyName = Literal["best-measured", "from-noise", "screened", "adaptive"]  # loop.strategies.STRATEGIES
VolumeFormat = Literal["nifti", "dicom"]


@dataclass(frozen=True)
class SessionSection:
    subject: str = "sub-01"
    session: str = "ses-01"
    kind: SessionKindName = "simulation"
    database: str = "cortexloop.sqlite"
    output: str = "session"
    seed: int = 0


@dataclass(frozen=True)
class AtlasConfig:
    labels: str = ""
    names: str = ""
    # The head position the atlas is drawn for: an earlier session's reference.npz (a later day of the same
    # subject). Empty: this session's own first volume.
    reference: str = ""


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
    image_set: str = ""  # a lab's folder or TSV of images (stimulus.image_sets); "": the built-in set
    repeated: int = 20
    repeats: int = 3
    design: Design = "event"
    trial_s: float = 1.0
    isi_s: float = 4.0
    lead_in_s: float = 6.0
    lead_out_s: float = 16.0

    @property
    def timing(self) -> Timing:
        return Timing(trial_s=self.trial_s, isi_s=self.isi_s, lead_in_s=self.lead_in_s,
                      lead_out_s=self.lead_out_s, design=self.design)  # fmt: skip


@dataclass(frozen=True)
class RoundsConfig:
    count: int = 3
    targets: tuple[str, ...] = ("V1", "V4", "LO", "FFA", "PPA")
    targets_per_round: int = 5
    images_per_target: int = 4
    repeats: int = 2
    policy: Policy = "all"
    controls: tuple[Control, ...] = ("best_natural", "median_natural")
    trial_s: float = 1.0
    isi_s: float = 4.0
    lead_in_s: float = 6.0
    lead_out_s: float = 16.0

    @property
    def timing(self) -> Timing:
        return Timing(trial_s=self.trial_s, isi_s=self.isi_s, lead_in_s=self.lead_in_s,
                      lead_out_s=self.lead_out_s)  # fmt: skip


@dataclass(frozen=True)
class SynthesisSettings:
    strategy: StrategyName = "adaptive"
    candidates: int = 2000
    later_candidates: int = 0
    trust_radius: float = 0.3
    steps: int = 256
    display_size: int = 256
    objective: ObjectiveKind = "voxel-weighted"
    diversity: float = 0.1
    learning_rate: float = 0.1
    # The rate falls along a cosine to this by the last step (0: not at all, the rate stays constant).
    final_learning_rate: float = 0.0
    later_steps: int = 128
    later_learning_rate: float = 0.05
    later_final_learning_rate: float = 0.0
    # Each step the model sees the image moved, zoomed and turned at random, within these (what the
    # model sees at one position only, it cannot count on: images whose drive survives transfer better).
    jitter: float = 0.06
    zoom: float = 0.1
    rotate_deg: float = 10.0
    later_jitter: float = 0.06
    later_zoom: float = 0.1
    later_rotate_deg: float = 10.0

    def synthesis(
        self, *, images_per_target: int, seed: int, image_size: int | None = None, later: bool = False
    ) -> SynthesisConfig:
        """The library's settings for one round's gradient ascent (a strategy gives the start images).

        ``image_size``: the side of the images optimized (None: the model's). ``later``:
        a round after the first that synthesized, which refines images already refined,
        with ``later_steps`` at ``later_learning_rate`` (falling to ``later_final_learning_rate``)
        and the ``later_`` transforms.
        """
        steps = self.later_steps if later else self.steps
        jitter, zoom, turn = (
            (self.later_jitter, self.later_zoom, self.later_rotate_deg)
            if later
            else (self.jitter, self.zoom, self.rotate_deg)
        )
        from stimulus.synthesis import SynthesisConfig
        from stimulus.synthesis.transforms import TransformConfig

        return SynthesisConfig(
            objective=self.objective,
            images_per_target=images_per_target,
            steps=steps,
            lr=self.later_learning_rate if later else self.learning_rate,
            final_lr=(self.later_final_learning_rate if later else self.final_learning_rate) or None,
            diversity=self.diversity,
            seed=seed,
            image_size=image_size,
            patience=steps + 1,  # "no better than the start yet" is no reason to stop
            transforms=TransformConfig(jitter=jitter, scale=(1 - zoom, 1 + zoom), rotate_deg=turn),
        )


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneName = "efficientnet-lite0"
    image_size: int = 96
    budget: int = 1000
    reduction: ReductionMethod = "pool"
    cv: CvKind = "loo"
    folds: int = 5
    # Where the session's model starts (stimulus.transfer): one model file, or an earlier session of this
    # database as "SUBJECT/SESSION" (its last model); several are averaged by ROI (other subjects').
    start: tuple[str, ...] = ()

    def encoding(self) -> EncodingConfig:
        """The library's settings for fitting the session's encoding model."""
        from stimulus.encoding import EncodingConfig
        from stimulus.features import ReductionConfig

        return EncodingConfig(
            backbone=self.backbone,
            image_size=self.image_size,
            reduction=ReductionConfig(method=self.reduction, budget=self.budget),
            cv=self.cv,
            n_splits=self.folds,
            layerwise=False,
            n_permutations=1,
        )


@dataclass(frozen=True)
class FixationConfig:
    """The fixation point, and the attention task that keeps the subject looking at it."""

    size_deg: float = 0.3
    task: bool = False
    changes_per_minute: float = 6.0
    change_duration_s: float = 0.5
    response_keys: tuple[str, ...] = ("1", "2")

    def settings(self) -> FixationSettings:
        """What every run plan carries to the presenter (these keys; its colours and window as they are)."""
        return FixationSettings(**dataclasses.asdict(self))


@dataclass(frozen=True)
class SimulationConfig:
    subject: str = "default"
    speed: float = 20.0
    format: VolumeFormat = "nifti"
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
    fixation: FixationConfig = field(default_factory=FixationConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    source: str = "<defaults>"

    @property
    def database_target(self) -> str | Path:
        """The database: an SQLAlchemy URL as written, else a path relative to the file's folder."""
        database = self.session.database
        return database if "://" in database else self.resolve(database)

    def scanner_runs(self) -> list[tuple[str, int, int]]:
        """Each run the session acquires: (name, trials, volumes), the training run first.

        The volumes are what the scanner's sequence must be set to acquire (a round's run is
        planned when the round begins, but its length is known now).
        """
        t, r = self.training, self.rounds
        runs = [("training", t.images + t.repeated * (t.repeats - 1), t.timing)] if t.images else []
        per_round = r.targets_per_round * (r.images_per_target + len(r.controls)) * r.repeats
        runs += [(f"round {k}", per_round, r.timing) for k in range(1, r.count + 1)]
        return [
            (name, n, planned_volumes(n, tr_s=self.scanner.tr_s, timing=timing)) for name, n, timing in runs
        ]

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        base = Path(self.source).parent if self.source != "<defaults>" else Path(".")
        return (base / path) if path and not Path(path).is_absolute() else Path(path)


Check = Callable[["SessionConfig"], list[str]]


def load_config(path: Path | str, *, checks: Sequence[Check] = ()) -> SessionConfig:
    """Read and check a session file; :class:`ConfigError` says what is wrong and where.

    ``checks`` add problems of their own (a caller's knowledge, such as the
    virtual subject's ROIs), reported with the others.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"session file {path} does not exist; write an example with `cortexloop session init`"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"session file {path} is not valid TOML: {exc}") from None
    return parse_config(data, source=str(path), checks=checks)


def parse_config(
    data: dict[str, Any], *, source: str = "<text>", checks: Sequence[Check] = ()
) -> SessionConfig:
    unknown = sorted(set(data) - set(SESSION_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) [{'], ['.join(unknown)}]; sections: {', '.join(SESSION_SECTIONS)}"
        )
    sections, problems = {}, []
    for name, kind in SESSION_SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"[{name}] must be a table of keys")
            table = {}
        sections[name] = _section(kind, table, name, problems)
    config = SessionConfig(**sections, source=source)
    problems += _problems(config)  # a key of the wrong type stands at its default for these
    for check in checks:
        problems += check(config)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems), problems=problems)
    return config


SESSION_SECTIONS: dict[str, type[Any]] = {
    "session": SessionSection,
    "atlas": AtlasConfig,
    "scanner": ScannerConfig,
    "training": TrainingConfig,
    "rounds": RoundsConfig,
    "synthesis": SynthesisSettings,
    "model": ModelConfig,
    "fixation": FixationConfig,
    "simulation": SimulationConfig,
}


def _section(kind: type[Any], table: dict[str, Any], name: str, problems: list[str]) -> Any:
    """The section's dataclass from its table; each key that is unknown or of the wrong type is a problem."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        problems.append(f"[{name}] has unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(kind)
    values = {}
    for key, value in table.items():
        if key in fields:
            try:
                values[key] = _value(hints[key], value, f"[{name}] {key}")
            except ConfigError as exc:
                problems.append(str(exc))
    return kind(**values)


def _value(expected: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``expected`` (str, int, float, bool, a Literal, or a tuple of them)."""
    if typing.get_origin(expected) is tuple:  # a list of strings, or of a Literal's choices
        item = typing.get_args(expected)[0]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        choices = typing.get_args(item) if typing.get_origin(item) is Literal else None
        unknown = [v for v in value if choices is not None and v not in choices]
        if choices is not None and unknown:
            raise ConfigError(f"{where} has unknown value(s) {', '.join(unknown)}; use {_either(choices)}")
        return tuple(value)
    if typing.get_origin(expected) is Literal:
        choices = typing.get_args(expected)
        if value not in choices:
            raise ConfigError(f"{where} is {value!r}; use {_either(choices)}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"{where} must be {expected.__name__}, got {value!r}")
    return value


def _either(choices: tuple[Any, ...]) -> str:
    """``a, b or c``."""
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


ENDPOINT = re.compile(r"^(tcp://(\*|[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})|ipc://.+|inproc://.+)$")
TR_RANGE_S = (0.1, 20.0)  # the TRs of BOLD sequences, multiband to sparse, with room on both sides


def _problems(c: SessionConfig) -> list[str]:
    """What the types cannot say: ranges, keys checked against each other, and the files named."""
    problems = [f"[fixation] {p.removeprefix('fixation ')}" for p in c.fixation.settings().problems()]
    if not c.fixation.response_keys and c.fixation.task:
        problems.append("[fixation] response_keys is empty; the attention task needs at least one key")
    low, high = TR_RANGE_S
    if not low <= c.scanner.tr_s <= high:
        problems.append(f"[scanner] tr_s must be between {low:g} and {high:g} s, got {c.scanner.tr_s:g}")
    for key in ("bridge", "presenter"):
        endpoint = getattr(c.scanner, key)
        match = ENDPOINT.match(endpoint)
        if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
            problems.append(
                f"[scanner] {key} {endpoint!r} is not a ZeroMQ endpoint; write tcp://HOST:PORT "
                "(e.g. tcp://127.0.0.1:5555) or ipc:///path"
            )
    if not (c.scanner.volume_timeout_s > 0 and c.scanner.trigger_timeout_s > 0):
        problems.append("[scanner] volume_timeout_s and trigger_timeout_s must be positive")
    t = c.training
    if t.image_set and not c.resolve(t.image_set).exists():
        problems.append(
            f"[training] image_set {c.resolve(t.image_set)} does not exist; give a folder of images or a TSV "
            "with a path column"
        )
    if t.repeated > t.images:
        problems.append(f"[training] repeated ({t.repeated}) cannot exceed images ({t.images})")
    if t.repeats < 1 or (t.images < 10 and not (t.images == 0 and c.model.start)):
        problems.append(
            "[training] needs at least 10 images and repeats >= 1 (0 images, no training run, "
            "only with a [model] start)"
        )
    r = c.rounds
    for section, timing in (("training", t.timing), ("rounds", r.timing)):
        if not 0 < timing.trial_s < timing.isi_s:
            problems.append(
                f"[{section}] trial_s ({timing.trial_s}) must be positive and shorter than "
                f"isi_s ({timing.isi_s})"
            )
        if timing.lead_in_s < 0 or timing.lead_out_s < 0:
            problems.append(f"[{section}] lead_in_s and lead_out_s must be >= 0")
    if not 1 <= r.targets_per_round <= len(r.targets):
        problems.append(
            f"[rounds] targets_per_round ({r.targets_per_round}) must be between 1 and the "
            f"{len(r.targets)} targets listed"
        )
    if r.count < 0 or r.images_per_target < 1 or r.repeats < 1:
        problems.append("[rounds] count must be >= 0, images_per_target and repeats >= 1")
    if c.synthesis.candidates < 1 or c.synthesis.steps < 1 or c.synthesis.later_steps < 1:
        problems.append("[synthesis] candidates, steps and later_steps must be at least 1")
    if c.synthesis.later_candidates < 0:
        problems.append(f"[synthesis] later_candidates must be 0 or more, got {c.synthesis.later_candidates}")
    if not (c.synthesis.learning_rate > 0 and c.synthesis.later_learning_rate > 0):
        problems.append("[synthesis] learning_rate and later_learning_rate must be positive")
    for prefix in ("", "later_"):
        final, rate = (getattr(c.synthesis, f"{prefix}{n}") for n in ("final_learning_rate", "learning_rate"))
        if not 0 <= final <= rate:
            problems.append(
                f"[synthesis] {prefix}final_learning_rate must be between 0 (a constant rate) and "
                f"{prefix}learning_rate ({rate}), got {final}"
            )
        jitter, zoom, turn = (getattr(c.synthesis, prefix + key) for key in ("jitter", "zoom", "rotate_deg"))
        if not (0 <= jitter < 0.5 and 0 <= zoom < 1 and turn >= 0):
            problems.append(
                f"[synthesis] {prefix}jitter must be in [0, 0.5) (of the image side), {prefix}zoom in [0, 1) "
                f"and {prefix}rotate_deg >= 0"
            )
    if not 0 < c.synthesis.trust_radius <= 1:
        problems.append(f"[synthesis] trust_radius must be in (0, 1], got {c.synthesis.trust_radius}")
    if c.model.cv == "kfold" and c.model.folds < 2:
        problems.append(f'[model] folds must be at least 2 with cv = "kfold", got {c.model.folds}')
    if not c.simulation.speed > 0:
        problems.append(f"[simulation] speed must be positive, got {c.simulation.speed}")
    if c.atlas.reference:
        problems += _reference_problems(c.resolve(c.atlas.reference))
    problems += _start_problems(c)
    if c.session.kind == "scanner":
        problems += _scanner_problems(c)
    return problems


SESSION_NAME = re.compile(r"^(sub-)?[A-Za-z0-9]+/(ses-)?[A-Za-z0-9]+$")  # BIDS labels: letters and digits


def start_source(c: SessionConfig, entry: str) -> Path | str:
    """A ``[model] start`` entry: a model file's path, or an earlier session's "SUBJECT/SESSION"."""
    path = c.resolve(entry)
    if path.is_file() or not SESSION_NAME.match(entry):
        return path
    return entry


def _start_problems(c: SessionConfig) -> list[str]:
    """The model files that ``[model] start`` names exist (sessions are looked up when the session starts)."""
    problems = []
    for entry in c.model.start:
        where = start_source(c, entry)
        if isinstance(where, Path) and not where.is_file():
            problems.append(
                f"[model] start {where} is not a model file; give a model file, or an earlier session "
                'of this database as "SUBJECT/SESSION"'
            )
    if len(set(c.model.start)) != len(c.model.start):
        problems.append("[model] start names a model twice; name each once")
    return problems


def _reference_problems(path: Path) -> list[str]:
    """An earlier session's reference volume, as ``[atlas] reference`` names it."""
    import numpy as np

    try:
        with path.open("rb") as handle, np.load(handle) as saved:
            if saved["volume"].ndim != 3 or saved["affine"].shape != (4, 4):
                raise ValueError("not a volume and its affine")
    except FileNotFoundError:
        return [f"[atlas] reference {path} does not exist; give an earlier session's reference.npz"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        return [f"[atlas] reference {path} is not a session's reference.npz ({exc})"]
    return []


def _scanner_problems(c: SessionConfig) -> list[str]:
    """A scanner session's files: the atlas (whose names must hold every target) and the key."""
    if not (c.atlas.labels and c.atlas.names):
        return ["[atlas] labels and names are required in a scanner session"]
    from loop.analysis.roi import RoiAtlas

    problems = []
    labels, names = c.resolve(c.atlas.labels), c.resolve(c.atlas.names)
    if not labels.is_file():
        problems.append(f"[atlas] labels {labels} does not exist; give the atlas's NIfTI label image")
    if not names.is_file():
        problems.append(f"[atlas] names {names} does not exist; give a TSV with columns index and name")
    if not problems:
        try:
            known = set(RoiAtlas.load(labels, names).names.values())
        except ConfigError as exc:
            problems.append(f"[atlas] {exc}")
        else:
            missing = [roi for roi in c.rounds.targets if roi not in known]
            if missing:
                problems.append(
                    f"[rounds] targets {', '.join(missing)} are not in the atlas {names} "
                    f"(it names {', '.join(sorted(known))})"
                )
    key = c.resolve(c.scanner.key_file)
    if not key.is_file():
        problems.append(
            f"[scanner] key_file {key} does not exist; make it with `cortexloop bridge keygen {key}` "
            "and copy it to the bridge and presenter computers"
        )
    return problems


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
# A later day of the same subject: the first session's reference.npz, the head position the atlas is
# drawn for. Every run is placed against it (empty: against this session's first volume).
reference = ""

[scanner]
tr_s = 2.0
bridge = "tcp://127.0.0.1:5555"     # where `cortexloop bridge watch` serves volumes
presenter = "tcp://127.0.0.1:5560"  # where `cortexloop present` serves
key_file = "cortexloop.key"         # `cortexloop bridge keygen`; the same file on every computer
stimulus_dir = ""                   # the presenter's stimulus folder (default: <output>/stimuli)
volume_timeout_s = 30.0             # real seconds without a volume, once the run has begun
trigger_timeout_s = 60.0            # real seconds from the plan to the scanner's first trigger

[training]
images = 100        # natural images in the training run
image_set = ""      # a folder of the lab's images, or a TSV (path, category, split); "": the built-in set
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
controls = ["best_natural", "median_natural"]  # natural images shown beside each target's own
                    # (the images made for the other targets are always its non-target images)
trial_s = 1.0
isi_s = 4.0
lead_in_s = 6.0
lead_out_s = 16.0

[synthesis]
strategy = "adaptive"  # how a round's images are made (docs/synthesis.md):
                       #   adaptive: a natural pool ranked by the model and every image shown ranked
                       #             by the model and its measurements together; the best refined up the
                       #             gradient within a trust region per target that grows after rounds
                       #             its images beat its best natural control and shrinks after rounds
                       #             they lost
                       #   screened: the same ranked by the model alone, one fixed trust region
                       #   best-measured: the images measured best so far, refined (the first closed loop)
                       #   from-noise: paper 000, from noise every round
candidates = 2000    # natural images screened in the first round that synthesizes
later_candidates = 0 # fresh natural images screened in each later round (0: rank the shown only)
trust_radius = 0.3   # how far (RMS pixels, 0..1) an image may move from the natural image it came from
steps = 256          # gradient steps in the first round that synthesizes (from natural images)
display_size = 256   # pixels written for the presenter (adaptive and screened optimize at this size)
objective = "voxel-weighted"
diversity = 0.1
learning_rate = 0.1  # its step size (Adam, on the Fourier parametrization)
final_learning_rate = 0.0  # the step size falls along a cosine to this by the last step (0: constant)
later_steps = 128    # gradient steps in each later round (refining images refined before)
later_learning_rate = 0.05
later_final_learning_rate = 0.0
jitter = 0.06        # every step the model sees the image shifted by up to this much of its side,
zoom = 0.1           #   zoomed by up to this much either way,
rotate_deg = 10.0    #   and turned by up to this many degrees: its gradient then rewards what survives
later_jitter = 0.06  # the same in each later round
later_zoom = 0.1
later_rotate_deg = 10.0

[model]
backbone = "efficientnet-lite0"
image_size = 96
budget = 1000        # features per layer
reduction = "pool"   # pool or smooth
cv = "loo"           # each voxel's ridge penalty by exact leave-one-out, or "kfold"
folds = 5            # with cv = "kfold": folds of images in the order they were first shown
start = []           # a model from before: ["models/sub-01.pt"] (a model file), ["sub-01/ses-01"] (an earlier
                     # session's last model); several (other subjects') are averaged by ROI. The training
                     # run then validates it and the session refits towards it ([training] images may be 0)

[fixation]
size_deg = 0.3            # the fixation point (degrees with a calibrated monitor)
task = false              # the attention task: the point changes colour at random times and the
                          # subject presses a response key; hits and reaction times are recorded per run
changes_per_minute = 6.0
change_duration_s = 0.5
response_keys = ["1", "2"]

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
