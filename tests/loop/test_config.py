"""Session files: the example loads to the defaults; every mistake is named before anything starts."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from db.base import ConfigError
from loop.config import EXAMPLE, SessionConfig, load_config

from .conftest import free_port

Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_the_example_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "session.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config == SessionConfig(source=str(path))
    assert config.resolve("stim") == tmp_path / "stim"


def test_the_synthesis_transforms_and_rates_of_a_session_file_reach_the_synthesis(tmp_path: Path) -> None:
    from stimulus.synthesis.transforms import TransformConfig

    path = tmp_path / "session.toml"
    path.write_text(
        "[synthesis]\njitter = 0.2\nzoom = 0.25\nrotate_deg = 5\nlater_zoom = 0.05\n"
        "final_learning_rate = 0.01\n"
    )
    settings = load_config(path).synthesis
    first = settings.synthesis(images_per_target=2, seed=0)
    later = settings.synthesis(images_per_target=2, seed=0, later=True)
    assert first.transforms == TransformConfig(jitter=0.2, scale=(0.75, 1.25), rotate_deg=5.0)
    assert later.transforms == TransformConfig(jitter=0.06, scale=(0.95, 1.05), rotate_deg=10.0)
    # A falling learning rate is the first round's alone; later rounds keep theirs constant, as by default.
    assert (first.lr, first.final_lr, later.lr, later.final_lr) == (0.1, 0.01, 0.05, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[round]\ncount = 2\n", r"unknown section\(s\) \[round\]; sections: session, atlas"),
        ("[rounds]\ncuont = 2\n", r"\[rounds\] has unknown key\(s\) cuont; known: count, targets"),
        ('[rounds]\ncount = "three"\n', r"\[rounds\] count must be int, got 'three'"),
        ("[scanner]\ntr_s = true\n", r"\[scanner\] tr_s must be a number, got True"),
        ('[rounds]\ntargets = ["V1", 2]\n', r"\[rounds\] targets must be a list of strings"),
        ("[rounds]\ntargets_per_round = 9\n", r"targets_per_round \(9\) must be between 1 and the 5 targets"),
        (
            "[training]\ntrial_s = 5.0\n",
            r"\[training\] trial_s \(5.0\) must be positive and shorter than isi_s",
        ),
        (
            '[rounds]\ncontrols = ["best"]\n',
            r"controls has unknown value\(s\) best; use best_natural or median_natural",
        ),
        ('[rounds]\npolicy = "best"\n', r"\[rounds\] policy is 'best'; use all or worst"),
        ('[model]\ncv = "kfold"\nfolds = 1\n', r"\[model\] folds must be at least 2 with cv = \"kfold\""),
        ("[synthesis]\nimage_size = 96\n", r"\[synthesis\] has unknown key\(s\) image_size"),
        (
            "[synthesis]\nlater_learning_rate = 0\n",
            r"\[synthesis\] learning_rate and later_learning_rate must be positive",
        ),
        ("[synthesis]\nzoom = 1.5\n", r"\[synthesis\] jitter must be in \[0, 0.5\) .*, zoom in \[0, 1\)"),
        ("[synthesis]\nlater_jitter = -0.1\n", r"\[synthesis\] later_jitter must be in \[0, 0.5\)"),
        (
            "[synthesis]\nlater_final_learning_rate = 0.5\n",
            r"later_final_learning_rate must be between 0 \(a constant rate\) and later_learning_rate \(0.05",
        ),
        ('[session]\nkind = "scanner"\n', r"\[atlas\] labels and names are required in a scanner session"),
        ("[session\n", r"is not valid TOML"),
        ("[fixation]\nchanges_per_minute = -1\n", r"\[fixation\] changes_per_minute -1.0 must be in"),
        ("[fixation]\ntask = true\nresponse_keys = []\n", r"\[fixation\] response_keys is empty"),
        ("[training]\nimages = 0\nrepeated = 0\n", r"0 images, no training run, only with a \[model\] start"),
        (
            '[model]\nstart = ["models/sub-02.pt"]\n',
            r"\[model\] start .*models/sub-02.pt is not a model file; give a model file, or an earlier",
        ),
        ('[model]\nstart = ["sub-01/ses-01", "sub-01/ses-01"]\n', r"\[model\] start names a model twice"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_session_init_writes_the_example_once_and_check_reads_it(cortexloop: Cli, tmp_path: Path) -> None:
    path = tmp_path / "session.toml"
    result = cortexloop("session", "init", path)
    assert result.returncode == 0, result.stderr
    assert path.read_text() == EXAMPLE
    again = cortexloop("session", "init", path)
    assert again.returncode == 1
    assert "exists; choose another name" in again.stderr
    checked = cortexloop("session", "check", path)
    assert checked.returncode == 0, checked.stderr
    assert "training: 100 natural images (20 shown 3 times), 140 trials" in checked.stdout
    # What the operator types into the scanner's sequence: volumes per run, and the scanner time.
    assert re.search(r"training\s+140\s+290\s+9 min 40.0 s", checked.stdout)
    assert re.search(r"round 3\s+60\s+130\s+4 min 20.0 s", checked.stdout)
    assert re.search(r"all\s+22 min 40.0 s", checked.stdout)
    path.write_text('[rounds]\npolicy = "best"\n')
    bad = cortexloop("session", "check", path)
    assert bad.returncode == 1
    assert "[rounds] policy is 'best'; use all or worst" in bad.stderr


def test_check_names_every_problem_of_a_file_at_once(cortexloop: Cli, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[session]\nkind = "scanner"\n[atlas]\nlabels = "atlas.nii.gz"\nnames = "atlas.tsv"\n'
        'reference = "../ses-01/reference.npz"\n'
        '[scanner]\ntr_s = 0.001\nbridge = "foo"\n[model]\nbackbone = "resnet50"\n'
        '[synthesis]\nsteps = 0\n[rounds]\ntargets = ["V9", "FFA"]\ntargets_per_round = 2\n'
    )
    result = cortexloop("session", "check", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}: 8 problem(s); nothing was started" in result.stderr
    for said in (
        "[model] backbone is 'resnet50'; use efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2",
        "[scanner] tr_s must be between 0.1 and 20 s, got 0.001",
        "[scanner] bridge 'foo' is not a ZeroMQ endpoint",
        "[synthesis] candidates, steps and later_steps must be at least 1",
        f"[atlas] labels {tmp_path}/atlas.nii.gz does not exist",
        f"[atlas] names {tmp_path}/atlas.tsv does not exist",
        f"[atlas] reference {tmp_path}/../ses-01/reference.npz does not exist; give an earlier session's",
        f"[scanner] key_file {tmp_path}/cortexloop.key does not exist; make it with `cortexloop bridge",
    ):
        assert said in result.stderr


def test_check_holds_targets_to_the_atlas(cortexloop: Cli, tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    labels = np.zeros((4, 4, 4), dtype=np.int16)
    labels[0, 0, :2] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "atlas.nii.gz")
    (tmp_path / "atlas.tsv").write_text("index\tname\n1\tFFA\n")
    (tmp_path / "cortexloop.key").write_bytes(b"k" * 32)
    path = tmp_path / "s.toml"
    path.write_text(
        '[session]\nkind = "scanner"\n[atlas]\nlabels = "atlas.nii.gz"\nnames = "atlas.tsv"\n'
        'reference = "../ses-01/reference.npz"\n'
        '[rounds]\ntargets = ["V9", "FFA"]\ntargets_per_round = 2\n'
    )
    result = cortexloop("session", "check", path)
    assert result.returncode == 1
    assert f"[rounds] targets V9 are not in the atlas {tmp_path}/atlas.tsv (it names FFA)" in result.stderr
    path.write_text('[rounds]\ntargets = ["V9", "FFA"]\ntargets_per_round = 2\n')  # a simulation
    result = cortexloop("session", "check", path)
    assert "[rounds] targets V9 are not ROIs of the virtual subject (it has V1, V2, V4, LO, FFA, PPA)" in (
        result.stderr
    )


def test_the_backbones_a_session_file_may_name_are_the_built_in_ones() -> None:
    import typing

    from stimulus.backbones import BACKBONES
    from stimulus.names import BackboneName

    assert set(typing.get_args(BackboneName)) <= set(BACKBONES)
    assert {name for name in BACKBONES if name.startswith("efficientnet")} == set(
        typing.get_args(BackboneName)
    )


def test_every_strategy_a_session_file_may_name_exists_and_says_what_it_follows() -> None:
    import typing

    from loop.config import StrategyName
    from loop.strategies import STRATEGIES

    assert set(typing.get_args(StrategyName)) == set(STRATEGIES)
    assert all(strategy.follows for strategy in STRATEGIES.values())
    assert SessionConfig().synthesis.strategy in STRATEGIES


def test_check_live_asks_the_bridge_the_presenter_and_the_database(cortexloop: Cli, tmp_path: Path) -> None:
    import numpy as np

    from db.base import ScaledClock
    from scanner_bridge import Spool, Volume, VolumePublisher, generate_key_file, load_key
    from stimulus.present.channel import PresenterChannel

    key = load_key(generate_key_file(tmp_path / "cortexloop.key"))
    path = tmp_path / "s.toml"
    nobody = f"tcp://127.0.0.1:{free_port()}"
    data = np.zeros((4, 5, 3), np.int16)
    with VolumePublisher("tcp://127.0.0.1:*", key, Spool(tmp_path / "spool")) as bridge:
        bridge.publish(Volume(index=0, data=data, affine=np.eye(4), series="localizer_#####.nii", tr_s=2.0))
        path.write_text(f'[scanner]\nbridge = "{bridge.endpoint}"\npresenter = "{nobody}"\n')
        result = cortexloop("session", "check", path, "--live", "--wait", "1")
        assert result.returncode == 1
        assert f"bridge at {bridge.endpoint}: answers, 1 series so far" in result.stdout
        assert "localizer_#####.nii: 4x5x3 int16, TR 2 s, up to volume 0" in result.stdout
        assert f"{path}: 1 problem(s) with the computers of the session" in result.stderr
        assert f"presenter: no presenter answered at {nobody} within 1 s" in result.stderr
        assert f"database {tmp_path}/cortexloop.sqlite: made when the session starts" in result.stdout
        assert not (tmp_path / "cortexloop.sqlite").exists()  # a check makes nothing
        presenter = PresenterChannel("tcp://127.0.0.1:0", key, ScaledClock(1.0))
        try:
            presenter.set_status(state="idle", run_id=None, refresh_hz=60.0, refresh_warning=None)
            path.write_text(f'[scanner]\nbridge = "{bridge.endpoint}"\npresenter = "{presenter.endpoint}"\n')
            result = cortexloop("session", "check", path, "--live", "--wait", "5")
        finally:
            presenter.close()
    assert result.returncode == 0, result.stderr
    assert f"presenter at {presenter.endpoint}: answers, idle, 60.0 Hz" in result.stdout


def test_a_session_recorded_by_another_version_still_says_where_its_folder_is(tmp_path: Path) -> None:
    """The report and the replay find a session's images from [session] alone (a newer section is no bar)."""
    from loop.folder import Relocation

    folder = tmp_path / "session"
    folder.mkdir()
    recorded = (
        f'[session]\noutput = "{folder}"\ndatabase = "{folder}/cortexloop.sqlite"\n'
        "[from_a_later_version]\nx = 1\n"
    )
    assert Relocation.find(recorded, database_file=None, folder=None).actual == folder
    moved = tmp_path / "moved"
    folder.rename(moved)
    (moved / "stimuli").mkdir()
    found = Relocation.find(recorded, database_file=moved / "cortexloop.sqlite", folder=None)
    assert found.path(folder / "stimuli") == moved / "stimuli"
