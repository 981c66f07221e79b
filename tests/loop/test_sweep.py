"""``cortexloop sweep`` as a lab runs it: a LocalCluster of two Dask workers, tiny simulated sessions.

One small sweep (two settings x two seeds) serves most tests; a second one
has a worker killed mid-session and a setting whose session file is wrong.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

import db
from db.sweeps import sweep_sessions
from tests.loop.conftest import CORTEXLOOP, Cli

pytestmark = pytest.mark.timeout(600)

TINY = """
[training]
images = 12
repeated = 4
repeats = 2
lead_out_s = 12.0

[rounds]
count = 1
targets = ["FFA", "PPA"]
targets_per_round = 2
images_per_target = 1

[synthesis]
steps = 4
later_steps = 4
candidates = 20

[model]
budget = 100
"""

PAIR = """
[sweep]
name = "pair"
base = "base.toml"
seeds = [1, 2]
pool = 50

[grid]
"synthesis.strategy" = ["adaptive", "best-measured"]
"""


def _sweep_folder(folder: Path, sweep: str) -> Path:
    (folder / "base.toml").write_text(TINY)
    (folder / "sweep.toml").write_text(sweep)
    return folder / "sweep.toml"


@pytest.fixture(scope="module")
def swept(
    tmp_path_factory: pytest.TempPathFactory, cortexloop: Cli
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("sweep")
    sweep = _sweep_folder(folder, PAIR)
    result = cortexloop("sweep", sweep, "--out", folder / "out", "--workers", "2", timeout=400)
    return folder, result


def _scores(database: Path | str, ref: str) -> list[tuple[object, ...]]:
    with db.open(database) as study:
        frame = study.session(ref).scores()
    rows = frame[["metric", "round", "run", "roi", "value"]].astype(str).itertuples(index=False)
    return sorted(tuple(r) for r in rows)


def test_a_sweep_on_two_workers_gives_what_its_sessions_give_run_one_by_one(
    swept: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    folder, result = swept
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "running on 2 Dask worker(s)" in result.stdout
    assert "4 session(s) run and stored" in result.stdout
    assert "4 of 4 complete" in result.stdout
    out = folder / "out"
    with db.open(out / "cortexloop.sqlite") as study:
        sessions = study.sessions()
    assert len(sessions) == 4
    # Two of them again, each alone, as a user reruns one: `simulate` with the setting's file and seed.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a Dask worker's one thread
    alone = {
        key: folder / f"alone-{key[0]}-{key[1]}"
        for key in (("strategy=adaptive", 1), ("strategy=best-measured", 2))
    }
    processes = [
        subprocess.Popen(
            [
                str(CORTEXLOOP), "--log-level", "warning", "simulate", "--in-process",
                "--config", str(out / "settings" / f"{setting}.toml"), "--seed", str(seed),
                "--out", str(there),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        for (setting, seed), there in alone.items()
    ]  # fmt: skip
    for process in processes:  # two at once: two cores
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    listed = _listed(out / "cortexloop.sqlite")
    for (setting, seed), folder_alone in alone.items():
        in_sweep = _scores(out / "cortexloop.sqlite", listed[setting, seed])
        assert in_sweep == _scores(folder_alone / "cortexloop.sqlite", "sub-01/ses-01"), (setting, seed)
        assert len(in_sweep) > 20


def _listed(database: Path) -> dict[tuple[str, int], str]:
    result = subprocess.run(
        [str(CORTEXLOOP), "db", "sweep", "pair", "--db", str(database), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    return {(r["setting"], r["seed"]): r["session"] for r in json.loads(result.stdout)}


def test_running_the_same_sweep_again_does_no_work_and_says_it_is_complete(
    swept: tuple[Path, subprocess.CompletedProcess[str]], cortexloop: Cli
) -> None:
    folder, first = swept
    assert first.returncode == 0
    database = folder / "out" / "cortexloop.sqlite"
    with sqlite3.connect(database) as connection:
        before = connection.execute("SELECT count(*) FROM volumes").fetchone()
    again = cortexloop("sweep", folder / "sweep.toml", "--out", folder / "out", "--workers", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sweep pair is complete: all 4 sessions were in" in again.stdout
    assert "nothing ran" in again.stdout
    assert "running on" not in again.stdout  # no cluster was even started
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM volumes").fetchone() == before


def test_the_sweep_is_listed_with_its_sessions_and_reported_with_its_settings_ranked(
    swept: tuple[Path, subprocess.CompletedProcess[str]], cortexloop: Cli
) -> None:
    folder, first = swept
    assert first.returncode == 0
    out = folder / "out"
    listing = cortexloop("db", "sweeps", "--db", out / "cortexloop.sqlite")
    assert listing.returncode == 0
    assert "pair" in listing.stdout
    row = next(line for line in listing.stdout.splitlines() if " pair " in line)
    assert row.split()[-2:] == ["4", "0"]  # completed, failed
    with db.open_database(out / "cortexloop.sqlite") as database, database.reader() as s:
        rows = sweep_sessions(s, "pair")
    for row in rows:  # judged against the unseen pool of its seed, as the control benchmark judges
        assert row.figures is not None
        assert [(f["round"], f["roi"]) for f in row.figures["rounds"]] == [(1, "FFA"), (1, "PPA")]
        assert 0 < row.figures["summary"]["mean_vs_pool_best"] < 3
    sessions = _listed(out / "cortexloop.sqlite")
    assert sorted(sessions) == [
        (s, k) for s in ("strategy=adaptive", "strategy=best-measured") for k in (1, 2)
    ]
    assert len(set(sessions.values())) == 4
    report = (out / "report.html").read_text()
    assert "ROIs above the pool's best" in report
    mean = {  # ranked by the mean over seeds of each session's mean over targets, against the pool's best
        setting: np.mean([r.figures["summary"]["mean_vs_pool_best"] for r in rows if r.setting == setting])
        for setting in ("strategy=adaptive", "strategy=best-measured")
    }
    first_ranked = max(mean, key=lambda setting: mean[setting])
    ranking = report[: report.index("By round")]
    assert ranking.index(f"<td>1</td><td>{first_ranked}</td>") < ranking.index("<td>2</td>")
    for (setting, seed), _ in sessions.items():
        assert (out / "sessions" / setting / f"seed{seed}" / "report.html").is_file()
        assert f"sessions/{setting}/seed{seed}/report.html" in report
    assert "<h2>Failed sessions</h2><p>None.</p>" in report


KILLED = """
[sweep]
name = "killed"
base = "base.toml"
seeds = [1, 2]
pool = 20

[settings.slow]
rounds.images_per_target = 2

[settings.wrong]
synthesis.steps = 0

[settings.few-images]
training.image_set = "three-images"
"""


def test_a_worker_killed_mid_session_loses_only_that_session_and_a_wrong_setting_is_reported_once(
    tmp_path: Path,
) -> None:
    sweep = _sweep_folder(tmp_path, KILLED)
    (tmp_path / "three-images").mkdir()  # the training run needs 12: found only when a session starts
    for k in range(3):
        Image.fromarray(np.full((64, 64, 3), 60 * k, dtype=np.uint8)).save(
            tmp_path / "three-images" / f"{k}.png"
        )
    out = tmp_path / "out"
    process = subprocess.Popen(
        [str(CORTEXLOOP), "--log-level", "warning", "sweep", str(sweep), "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        victim = _worker_in_a_session(process.pid, deadline=time.monotonic() + 240)
        victim.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=400)
    finally:
        process.kill()
    assert process.returncode == 1, stdout[-3000:] + stderr[-3000:]
    assert stdout.count("'wrong'") == 1, stdout
    assert stdout.count("'few-images'") == 1, stdout  # found by a worker, reported once
    assert "has 3 usable image(s)" in stdout
    assert "steps and later_steps must be at least 1" in stdout
    assert "2 session(s) run and stored" in stdout
    with sqlite3.connect(out / "cortexloop.sqlite") as connection:
        rows = connection.execute(
            "SELECT setting, seed, status FROM sweep_sessions WHERE setting = 'slow' ORDER BY seed"
        ).fetchall()
        failed = connection.execute(
            "SELECT DISTINCT setting, status FROM sweep_sessions WHERE setting != 'slow'"
        )
        assert failed.fetchall() == [("few-images", "aborted")]
        sessions = connection.execute("SELECT count(*), count(DISTINCT label) FROM sessions").fetchone()
        volumes = connection.execute(
            "SELECT count(*), count(DISTINCT run_id || '-' || \"index\") FROM volumes"
        ).fetchone()
        runs = connection.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
    assert rows == [("slow", 1, "completed"), ("slow", 2, "completed")]
    assert sessions == (2, 1)  # one label (the setting's), one subject per seed
    assert volumes[0] == volumes[1]  # no volume twice
    assert runs == [("completed", 4)]  # 2 sessions x (training + 1 round), all complete


def _worker_in_a_session(sweep_pid: int, *, deadline: float) -> psutil.Process:
    """A Dask worker under the sweep's process that has a session's database open, once it has volumes."""
    while time.monotonic() < deadline:
        for child in psutil.Process(sweep_pid).children(recursive=True):
            try:
                files = [f.path for f in child.open_files()]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for path in files:
                if path.endswith("cortexloop.sqlite") and "cortexloop-killed-seed" in path:
                    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                        try:
                            (n,) = connection.execute("SELECT count(*) FROM volumes").fetchone()
                        except sqlite3.Error:
                            n = 0
                    if n > 20:
                        return child
        time.sleep(0.2)
    raise AssertionError("no worker was ever seen in a session")


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="finds the worker's open files as Linux shows them")


@pytest.mark.postgres
@pytest.mark.skipif(
    "CORTEXLOOP_TEST_POSTGRES_URL" not in os.environ,
    reason="set CORTEXLOOP_TEST_POSTGRES_URL to a scratch PostgreSQL database",
)
def test_a_lab_s_postgresql_receives_a_sweep_s_sessions_whole(
    swept: tuple[Path, subprocess.CompletedProcess[str]], pg_url: str
) -> None:
    from db.sweeps import record_sweep, store_session

    folder, first = swept
    assert first.returncode == 0
    source = folder / "out" / "cortexloop.sqlite"
    listed = _listed(source)
    with db.open_database(source) as origin, origin.reader() as s:
        rows = {(r.setting, r.seed): r for r in sweep_sessions(s, "pair")}
    with db.open_database(pg_url, create=True) as lab:
        sweep_id = record_sweep(lab, "pair", (folder / "sweep.toml").read_text(), None)
        for (setting, seed), ref in listed.items():
            row = rows[setting, seed]
            store_session(
                lab, sweep_id, setting=setting, seed=seed, overrides=row.overrides, source=source, ref=ref,
                worker="here", seconds=1.0, figures=row.figures,
            )  # fmt: skip
        with lab.reader() as s:
            stored = sweep_sessions(s, "pair")
    assert [(r.setting, r.seed, r.session) for r in stored] == [
        (s, k, listed[s, k]) for s, k in sorted(listed)
    ]
    assert [r.figures for r in stored] == [rows[s, k].figures for s, k in sorted(listed)]
    for ref in listed.values():
        assert _scores(pg_url, ref) == _scores(source, ref)
