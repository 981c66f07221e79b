"""A lab's own images: every bad file named before the session, then a session trained on the rest."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from db import open_database
from db.queries import session_events, session_id, session_stimuli
from stimulus.image_sets import ImageSetError, read_image_set
from stimulus.images import load_image

Cli = Callable[..., subprocess.CompletedProcess[str]]

N_GOOD = 240


def _lab_folder(root: Path) -> dict[str, Path]:
    """Hundreds of good images in category folders, and one of each kind of bad file; returns the bad ones."""
    rng = np.random.default_rng(0)
    for k in range(N_GOOD):
        folder = root / ("faces", "places", "objects")[k % 3]
        folder.mkdir(parents=True, exist_ok=True)
        side = (160, 120)[k % 2]  # some not square: shown as their centred square
        pixels = (rng.random((side, 200, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{k:03d}.{('png', 'jpg')[k % 2]}")
    grey = (rng.random((100, 100)) * 255).astype(np.uint8)
    Image.fromarray(grey).save(root / "objects" / "grey.png")
    Image.fromarray((rng.random((100, 100, 4)) * 255).astype(np.uint8)).save(root / "faces" / "alpha.png")
    bad = {
        "truncated": root / "places" / "truncated.png",
        "not an image": root / "places" / "notes.jpg",
        "duplicate": root / "faces" / "copy.png",
        "too small": root / "objects" / "tiny.png",
    }
    Image.fromarray((rng.random((90, 90, 3)) * 255).astype(np.uint8)).save(bad["truncated"])
    bad["truncated"].write_bytes(bad["truncated"].read_bytes()[:200])
    bad["not an image"].write_text("meeting notes, not a picture")
    bad["duplicate"].write_bytes((root / "faces" / "img_000.png").read_bytes())
    Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(bad["too small"])
    return bad


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("lab") / "images"
    return root, _lab_folder(root)


def test_every_bad_file_is_named_and_converted_ones_are_said(lab: tuple[Path, dict[str, Path]]) -> None:
    root, bad = lab
    with pytest.raises(ImageSetError) as caught:
        read_image_set(root)
    problems = caught.value.problems
    assert len(problems) == 4, problems
    said = " ".join(problems)
    assert f"{bad['truncated']} cannot be read as an image" in said
    assert f"{bad['not an image']} cannot be read as an image" in said
    (same,) = [p for p in problems if "is the same image as" in p]  # the later one by path is named
    assert f"{root / 'faces' / 'img_000.png'} is the same image as {bad['duplicate']}" == same
    assert f"{bad['too small']} is 20x20 pixels, under 64 on a side" in said


def test_a_session_trains_on_the_lab_images(
    lab: tuple[Path, dict[str, Path]], tmp_path: Path, cortexloop: Cli
) -> None:
    root, bad = lab
    clean = tmp_path / "clean"
    clean.mkdir()
    for path in root.rglob("*"):
        if path.is_file() and path not in bad.values():
            target = clean / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    found = read_image_set(clean)
    assert len(found) == N_GOOD + 2
    assert sorted(found.converted) == sorted(
        [f"{clean / 'faces' / 'alpha.png'} (RGBA)", f"{clean / 'objects' / 'grey.png'} (L)"]
    )
    assert set(found.categories) == {"faces", "places", "objects"}
    config = tmp_path / "lab.toml"
    config.write_text(
        f'[training]\nimages = 30\nimage_set = "{clean}"\nrepeated = 6\nrepeats = 2\nlead_out_s = 12.0\n'
        '[rounds]\ncount = 1\ntargets = ["FFA", "PPA"]\ntargets_per_round = 2\nimages_per_target = 2\n'
        "[synthesis]\nsteps = 4\ncandidates = 50\n[model]\nbudget = 200\n"
    )
    checked = cortexloop("session", "check", config)
    assert checked.returncode == 0, checked.stderr
    assert (
        f"image set {clean}: {N_GOOD + 2} images, each readable and distinct (2 used as RGB" in checked.stdout
    )
    out = tmp_path / "session"
    result = subprocess.run(
        [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--in-process", "--config",
         str(config), "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open_database(out / "cortexloop.sqlite") as database, database.reader() as s:
        sid = session_id(s, "sub-01/ses-01")
        shown = [r for r in session_stimuli(s, sid) if r.kind == "natural"]
        (said,) = [e.message for e in session_events(s, sid) if e.code == "training.images"]
    assert f"training images: 30 of the {N_GOOD + 2} in {clean}" in said
    assert len(shown) == 30
    lab_pixels = np.stack([load_image(p, 64) for p in found.paths])
    for stimulus in shown:  # each image trained on is one of the lab's, as its centred square
        pixels = load_image(out / "stimuli" / stimulus.path, 64)
        nearest, second = np.sort(np.abs(lab_pixels - pixels).mean(axis=(1, 2, 3)))[:2]
        assert nearest < 0.03, (stimulus.path, nearest)  # resized twice (256 px, then 64) against once
        assert nearest < second / 5, (stimulus.path, nearest, second)
    # The round's candidates came from the lab too: the images it has that training did not show.
    with open_database(out / "cortexloop.sqlite") as database, database.reader() as s:
        made = [r.synthesis or {} for r in session_stimuli(s, sid) if r.kind == "synthesized"]
    starts = [m.get("start", "") for m in made]
    assert starts
    assert not [start for start in starts if start.startswith("natural candidate")]  # the built-in pool
    lab = {str(path) for path in found.paths}
    assert all(start.removeprefix("lab image ") in lab or start.startswith("natural/") for start in starts), (
        starts
    )
