"""A whole session on the default settings: does the closed loop do what it is for?

One seed (one virtual subject): a whole default session run in one process
(``cortexloop simulate --in-process``: same plans, analysis, models,
synthesis and records as the networked session, without waiting on a
clock). Then the recorded session is replayed and reported. The science
over many seeds and strategies, judged against the virtual subject's
truth, is ``benchmarks/efficacy.py``'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from db import open_database
from db.queries import session_id, session_scores, session_stimuli
from loop.config import SessionConfig
from loop.replay import replay_session
from loop.report import write_report
from loop.scoring import Metric
from loop.summary import SessionOutcome, session_outcome
from stimulus.images import load_image
from tests.loop.conftest import SESSION_TIMEOUT_S, StudySessions


@pytest.fixture(scope="module")
def sessions(study_sessions: StudySessions) -> dict[int, Path]:
    """Each seed's session folder, after ``cortexloop simulate --in-process --seed N`` ran in it."""
    return {0: study_sessions.wait_day_one()}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loop.cli", "--log-level", "warning", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def outcome(folder: Path) -> SessionOutcome:
    with open_database(folder / "cortexloop.sqlite") as database, database.reader() as s:
        return session_outcome(s, "sub-01/ses-01")


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_synthesized_images_drive_their_targets_above_others(sessions: dict[int, Path]) -> None:
    # Paper 000, Experiment 2: 4 of 5 target ROIs in people.
    for seed, folder in sessions.items():
        result = outcome(folder)
        assert len(result.contrasts) == 5, (seed, result)
        table = [(c.roi, round(c.t, 2), round(c.p, 4)) for c in result.contrasts]
        assert len(result.driven) >= 4, (seed, table)


def true_drive(folder: Path) -> dict[int, float]:
    """Round -> the virtual subject's true response of the targets to their images, averaged over targets."""
    with open_database(folder / "cortexloop.sqlite") as database, database.reader() as s:
        scores = session_scores(s, session_id(s, "sub-01/ses-01"))
    by_round: dict[int, list[float]] = {}
    for score in scores:
        if score.metric == Metric.TARGET_TRUE and score.round_index is not None:
            by_round.setdefault(score.round_index, []).append(score.value)
    return {index: float(np.mean(values)) for index, values in sorted(by_round.items())}


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_the_loop_drives_its_targets_harder_after_its_first_round_in_truth(sessions: dict[int, Path]) -> None:
    for seed, folder in sessions.items():
        truth = true_drive(folder)
        assert list(truth) == [1, 2, 3], (seed, truth)
        assert truth[1] < truth[2], (seed, truth)
        assert truth[1] < truth[3], (seed, truth)
        # Round 3 keeps round 2's gain. It need not add to it: the default's drive rose in round 3 in 4 of
        # the benchmark's 5 seeds, and on seed 0 it holds level (2.650 then 2.648; README).
        assert truth[3] >= 0.99 * truth[2], (seed, truth)
        assert len(outcome(folder).round_drive) == 3  # and the measured drive of every round is recorded


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_each_image_says_where_it_started_and_stays_near_the_natural_image_it_came_from(
    sessions: dict[int, Path],
) -> None:
    folder = sessions[0]
    with open_database(folder / "cortexloop.sqlite") as database, database.reader() as s:
        made = [r for r in session_stimuli(s, session_id(s, "sub-01/ses-01")) if r.kind == "synthesized"]
    assert len(made) >= 5 * 3  # every target, every round (an image made again keeps its first record)
    base = SessionConfig().synthesis.trust_radius
    for stimulus in made:
        recorded = stimulus.synthesis or {}
        assert recorded["strategy"] == "adaptive"
        radius = recorded["trust_radius"]  # its target's, as the rounds before it set it
        assert 0.25 * base <= radius <= 2 * base, (stimulus.path, radius)
        image = load_image(folder / "stimuli" / stimulus.path, 256)
        origin = load_image(folder / "stimuli" / recorded["origin_file"], 256)
        assert (folder / "stimuli" / recorded["start_file"]).is_file()
        moved = float(np.sqrt(np.mean((image - origin) ** 2)))
        assert moved <= radius + 0.01, (stimulus.path, moved)  # 8-bit PNGs round a little


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_every_volume_is_recorded_once_and_every_trial_measured(sessions: dict[int, Path]) -> None:
    with sqlite3.connect(sessions[0] / "cortexloop.sqlite") as db:
        runs = db.execute('SELECT id, n_volumes_planned, status FROM runs ORDER BY "index"').fetchall()
        assert [r[2] for r in runs] == ["completed"] * 4
        for run_id, planned, _ in runs:
            rows = db.execute('SELECT "index" FROM volumes WHERE run_id = ? ORDER BY "index"', (run_id,))
            indices = [i for (i,) in rows]
            assert indices == list(range(planned))
            unmeasured = db.execute(
                "SELECT COUNT(*) FROM presentations p WHERE p.run_id = ? AND (p.actual_onset_s IS NULL OR "
                "(SELECT COUNT(*) FROM measured_responses m WHERE m.presentation_id = p.id) != 6)",
                (run_id,),
            ).fetchone()[0]
            assert unmeasured == 0
        versions = db.execute("SELECT COUNT(*) FROM encoding_models").fetchone()[0]
        assert versions == 4  # fitted after the training run and after each round


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_replaying_a_recorded_session_reproduces_what_was_recorded(sessions: dict[int, Path]) -> None:
    shown = cli("replay", "sub-01/ses-01", "--db", sessions[0] / "cortexloop.sqlite")
    assert shown.returncode == 0, shown.stdout + shown.stderr  # every run faithful, by the command's contract
    rows = [line for line in shown.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 4  # the training run and three rounds
    assert all(row.rstrip(" │").endswith("yes") for row in rows)


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_replay_notices_a_volume_file_that_changed(sessions: dict[int, Path]) -> None:
    folder = sessions[0]
    victim = folder / "export" / "run03_vol_00010.nii"
    original = victim.read_bytes()
    data = bytearray(original)
    middle = len(data) // 2
    data[middle : middle + 4000] = bytes(4000)  # 2000 voxels in the middle of the brain read as zero
    victim.write_bytes(bytes(data))
    try:
        with open_database(folder / "cortexloop.sqlite") as database:
            (run,) = replay_session(database, "sub-01/ses-01", runs=[3])
    finally:
        victim.write_bytes(original)  # the other tests read this session too
    assert not run.faithful
    assert run.max_signal_diff > 0.01
    assert run.volumes == run.recorded  # the file still parses: its values differ from the record


@pytest.fixture(scope="module")
def report(sessions: dict[int, Path]) -> Path:
    """The session's report, written once where it was recorded."""
    with open_database(sessions[0] / "cortexloop.sqlite") as database:
        return write_report(database, "sub-01/ses-01", sessions[0].parent / "report.html")


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_the_report_shows_outcome_scores_images_and_runs(sessions: dict[int, Path], report: Path) -> None:
    folder = sessions[0]
    text = report.read_text()
    result = outcome(folder)
    assert f"{len(result.driven)} of 5 target ROIs" in text
    sections = (
        "Outcome", "Rounds", "Control", "Predicted against measured", "Runs", "Design", "Model by version",
        "Attention", "Image quality", "Warnings and errors", "Session file and software",
    )  # fmt: skip
    for section in sections:
        assert f"<h2>{section}</h2>" in text
    nav = text[text.index("<nav>") : text.index("</nav>")]
    assert [section in nav for section in sections] == [True] * len(sections)  # each section a link away
    assert '<a href="#predicted-against-measured">' in nav
    assert '<a id="predicted-against-measured"></a>' in text
    assert "[synthesis]" in text  # the session file it ran with
    # ... and the machine: the processor and the versions that set its rounding
    ran_on = text[text.index("It ran on") : text.index("[synthesis]")]
    assert f"torch {version('torch')}" in ran_on
    assert f"numpy {np.__version__}" in ran_on
    assert f"torch kernels {torch.backends.cpu.get_cpu_capability()}" in ran_on
    assert text.count("<h3>round ") == 15  # 3 rounds x 5 targets, each with its images beside their starts
    assert text.count("&rarr;") >= 15 * 3  # start -> image pairs (an image made twice is shown once)
    # drive by round, scatter, a time course and a design per run, the models' accuracy by version
    assert text.count('class=figure src="data:image/png') == 1 + 1 + 4 + 4 + 1
    config = SessionConfig()
    design = text[text.index("<h2>Design</h2>") : text.index("<h2>Model by version</h2>")]
    rows = re.findall(r"<tr><td>(\d)</td><td>\w+</td><td>(\d+)</td><td>(\d+)</td><td>([\d.]+)</td>", design)
    assert [(int(t), int(n)) for _, t, n, _ in rows] == [(t, n) for _, t, n in config.scanner_runs()]
    assert all(0 < float(r) < 1 for *_, r in rows)  # neighbouring trials overlap, none twice over
    models = text[text.index("<h2>Model by version</h2>") : text.index("<h2>Attention</h2>")]
    trained = [int(n) for n in re.findall(r"<tr><td>\d</td><td>[\w ]+</td><td>(\d+)</td>", models)]
    assert len(trained) == 1 + config.rounds.count  # fitted on the training run, refitted after each round
    assert "<td>refitted after round 3</td>" in models
    assert trained == sorted(set(trained))  # each refit on more images
    # Attention: each target's best image of round 3 with every target's map; their overlaps, pair by pair.
    attention = text[text.index("<h2>Attention</h2>") : text.index("<h2>Image quality</h2>")]
    assert "(round 3)" in attention
    assert attention.count('class=figure src="data:image/jpeg') == 1
    overlaps = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td><td>([\d.]+)</td></tr>", attention)
    assert len(overlaps) == 10  # 5 targets, each pair once
    assert any(float(kl) > 0.02 for *_, kl in overlaps)  # the ROIs do not all look at the same places
    # Image quality: the atlas, tSNR and the last model's r over the mean image, then a carpet per run.
    quality = text[text.index("<h2>Image quality</h2>") : text.index("<h2>Warnings and errors</h2>")]
    assert quality.count('class=figure src="data:image/jpeg') == 1 + 4
    assert "the last model's r is drawn" in quality
    rows = re.findall(
        r"<tr><td>(\d)</td><td>\w+</td><td>(\d+)</td><td>(\d+)</td>((?:<td>[\d.]+</td>)+)</tr>", quality
    )
    planned = [n for _, _, n in config.scanner_runs()]
    assert [(int(run), int(n), int(out)) for run, n, out, _ in rows] == [
        (k + 1, n, 0) for k, n in enumerate(planned)
    ]  # every run, every volume read from its file
    for *_, cells in rows:  # six ROIs' median tSNR, the largest translation and rotation, the start's
        values = [float(v) for v in re.findall(r"<td>([\d.]+)</td>", cells)]
        assert len(values) == 6 + 2 + 2
        assert all(20 < v < 1000 for v in values[:6]), values
        assert values[-2] < 0.2  # the default subject keeps its head where the session began


def _bids_validator() -> str | None:
    """The BIDS reference validator (npm's bids-validator): $CORTEXLOOP_BIDS_VALIDATOR, make's, or PATH's."""
    installed = Path(sys.executable).parent.parent / "node" / "node_modules" / ".bin" / "bids-validator"
    for candidate in (os.environ.get("CORTEXLOOP_BIDS_VALIDATOR"), installed, shutil.which("bids-validator")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_the_exported_session_is_a_bids_dataset_the_reference_validator_accepts(
    sessions: dict[int, Path], tmp_path: Path
) -> None:
    validator = _bids_validator()
    if validator is None:
        if os.environ.get("CORTEXLOOP_REQUIRE_BIDS_VALIDATOR"):  # CI: this must hold there
            pytest.fail("no BIDS validator, though CI installs one (make test: npm install bids-validator)")
        pytest.skip("no BIDS validator: `make test` installs it with npm (npm install bids-validator)")
    out = tmp_path / "bids"
    exported = cli("db", "export", "sub-01/ses-01", "--db", sessions[0] / "cortexloop.sqlite", "--out", out)
    assert exported.returncode == 0, exported.stderr
    checked = subprocess.run([validator, str(out), "--json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(checked.stdout)["issues"]
    assert issues["errors"] == [], [e["key"] for e in issues["errors"]]
    func = out / "sub-01" / "ses-01" / "func"
    with open_database(sessions[0] / "cortexloop.sqlite") as database, database.reader() as s:
        config = SessionConfig()
        planned = [n for _, _, n in config.scanner_runs()]
        shown = {r.path for r in session_stimuli(s, session_id(s, "sub-01/ses-01")) if r.n_presentations}
    bold = sorted(func.glob("*_bold.nii.gz"), key=lambda p: p.name.split("_run-")[1])  # in run order
    assert [nib.load(p).shape[3] for p in bold] == planned  # every run, every volume, as the sequence ran
    assert sorted(str(p.relative_to(out / "stimuli")) for p in (out / "stimuli").rglob("*.png")) == sorted(
        shown
    )


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_a_moved_session_replays_and_reports_the_same_and_one_missing_an_image_fails(
    sessions: dict[int, Path], report: Path, tmp_path: Path
) -> None:
    folder = sessions[0]
    before = report  # written where the session was recorded
    moved = tmp_path / "archive" / "sub-01_ses-01"
    shutil.copytree(folder, moved)
    away = folder.with_name(folder.name + "-away")  # the original place is gone, as after an archive
    folder.rename(away)
    try:
        replayed = cli("replay", "sub-01/ses-01", "--db", moved / "cortexloop.sqlite")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        rows = [line for line in replayed.stdout.splitlines() if line.startswith("│")]
        assert len(rows) == 4
        assert all(row.rstrip(" │").endswith("yes") for row in rows)
        after = tmp_path / "after.html"
        reported = cli("report", "sub-01/ses-01", "--db", moved / "cortexloop.sqlite", "--out", after)
        assert reported.returncode == 0, reported.stderr
        assert after.read_bytes() == before.read_bytes()
        gone = moved / "stimuli" / "round02" / "FFA_01.png"
        gone.unlink()
        failed = cli(
            "report", "sub-01/ses-01", "--db", moved / "cortexloop.sqlite", "--out", tmp_path / "x.html"
        )
        assert failed.returncode == 1
        assert f"image {gone} of session sub-01/ses-01 is gone" in failed.stderr
        assert not (tmp_path / "x.html").exists()
    finally:
        away.rename(folder)  # the other tests read this session too


def test_the_subject_s_sessions_show_their_drive_and_their_models_lineage(sessions: dict[int, Path]) -> None:
    folder = sessions[0]
    listed = cli("db", "subject", "sub-01", "--db", folder / "cortexloop.sqlite", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["session"] == "sub-01/ses-01"
    assert row["last_round"] == 3
    assert row["true_drive"] == pytest.approx(true_drive(folder)[3])  # the last round's, as scored
    models = row["models"]
    assert [m["parent"] for m in models] == [
        None,
        *(m["id"] for m in models[:-1]),
    ]  # each from the one before
    assert [m["training_stimuli"] for m in models] == sorted({m["training_stimuli"] for m in models})
    table = cli("db", "subject", "sub-01", "--db", folder / "cortexloop.sqlite")
    assert "the drive by session" in table.stdout
    assert "encoding models, each refitted from its parent" in table.stdout
    nobody = cli("db", "subject", "sub-09", "--db", folder / "cortexloop.sqlite")
    assert nobody.returncode == 1
    assert "no sessions of subject sub-09" in nobody.stdout


def true_by_target(database: Path, ref: str) -> dict[str, float]:
    """The virtual subject's true response of each target to its images in the session's last round."""
    with open_database(database) as db, db.reader() as s:
        scores = session_scores(s, session_id(s, ref))
    last = max(score.round_index or 0 for score in scores)
    return {
        str(score.roi): score.value
        for score in scores
        if score.metric == Metric.TARGET_TRUE and score.round_index == last
    }


@pytest.fixture(scope="module")
def day_two(study_sessions: StudySessions) -> Path:
    """Day 2 of the same subject: the head 4.1 mm and 4.9 degrees from day 1's, no training run, one round.

    It records into a copy of day 1's database and starts from day 1's session (``[model] start``), placed
    against day 1's reference volume so that day 1's atlas means the same voxels.
    """
    return study_sessions.wait_day_two()


@pytest.mark.timeout(SESSION_TIMEOUT_S)
def test_day_two_started_from_day_one_finds_the_head_and_drives_as_day_one_ended(
    sessions: dict[int, Path], day_two: Path
) -> None:
    """Issue 19's day 2: moved 4 mm and 5 degrees, no training run, day 1's model, images and measurements."""
    with sqlite3.connect(day_two / "study.sqlite") as db:
        placed = db.execute(
            "SELECT e.details FROM events e JOIN sessions s ON s.id = e.session_id "
            "WHERE s.label = '02' AND e.code = 'run.position'"
        ).fetchall()
        models = db.execute(
            "SELECT m.id, m.parent_id, s.label FROM encoding_models m JOIN sessions s ON s.id = m.session_id "
            "ORDER BY m.id"
        ).fetchall()
        runs = db.execute(
            'SELECT r."index", r.kind FROM runs r JOIN sessions s ON s.id = r.session_id '
            "WHERE s.label = '02'"
        ).fetchall()
    assert runs == [(1, "closed_loop")]  # no training run
    # The head is found where the simulation put it against day 1, and the ROIs follow it there.
    (details,) = placed[0]
    np.testing.assert_allclose(json.loads(details)["translation_mm"], [2.5, -2.5, 2.0], atol=0.3)
    np.testing.assert_allclose(json.loads(details)["rotation_deg"], [3.0, -3.0, 2.5], atol=0.3)
    # Day 2's first model is day 1's last, continued; its refit has day 1's and day 2's measurements.
    day_one_last = max(m for m, _, label in models if label == "01")
    day_two_models = [(m, parent) for m, parent, label in models if label == "02"]
    assert day_two_models[0][1] == day_one_last
    assert [parent for _, parent in day_two_models[1:]] == [m for m, _ in day_two_models[:-1]]
    # The drive in truth: day 2's one round without training reaches what day 1's three rounds ended with.
    before = true_by_target(day_two / "study.sqlite", "sub-01/ses-01")
    after = true_by_target(day_two / "study.sqlite", "sub-01/ses-02")
    for roi in before:
        print(f"{roi}: day 1's last round {before[roi]:.3f} %, day 2's {after[roi]:.3f} %")
    assert np.mean(list(after.values())) >= np.mean(list(before.values()))
    assert all(after[roi] > before[roi] - 0.1 for roi in before)  # and no target far below
    # Its folder holds every image its report shows (day 1's that it refined were copied there), and the
    # report says where its first model came from.
    report = (day_two / "session" / "report.html").read_text()
    assert "<td>the start model: sub-01/ses-01 model version 4" in report
