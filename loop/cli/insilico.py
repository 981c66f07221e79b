"""``cortexloop insilico``: classic mapping experiments run on an encoding model instead of a subject."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import typer
from rich import box
from rich.table import Table

from db.base import write_atomic
from loop.cli._common import JsonOption, console, print_json

app = typer.Typer(help="In-silico experiments through an encoding model.", no_args_is_help=True)


@app.command()
def retinotopy(
    model_path: Annotated[Path, typer.Argument(help="Model file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The folder the results go into.", show_default=False)],
    reference: Annotated[
        Path | None,
        typer.Option(help="A NIfTI volume on the session's grid: also write the maps as volumes on it."),
    ] = None,
    wedges: Annotated[int, typer.Option(help="Wedge positions round the circle.", min=4)] = 16,
    rings: Annotated[int, typer.Option(help="Ring positions from the centre out.", min=3)] = 8,
    json: JsonOption = False,
) -> None:
    """Retinotopic mapping through the model: each voxel's preferred polar angle and eccentricity.

    Rotating-wedge and expanding-ring checkerboards are shown to the model; the
    angle comes from a sine/cosine fit to the wedge responses, the eccentricity
    from the ring answered most (stimulus.insilico). Writes OUT/retinotopy.tsv,
    one row per voxel (angle in degrees, 0 right and 90 up; eccentricity in
    image half-widths), and with --reference the polar_angle, eccentricity and
    amplitude maps as NIfTI volumes.
    """
    from loop.cli._volumes import read_grid, write_volumes
    from stimulus import EncodingModel
    from stimulus.insilico import retinotopy as map_retinotopy

    model = EncodingModel.load(model_path, device="cpu")
    indices = np.asarray(model.voxel_indices_, dtype=np.int64)
    grid = read_grid(reference, indices, owner=model_path.name) if reference is not None else None
    found = map_retinotopy(model, n_wedges=wedges, n_rings=rings)
    degrees = np.degrees(found.polar_angle)
    labels = np.asarray(model.roi_labels_)
    rows = ["voxel_index\troi\tpolar_angle_deg\teccentricity\tangle_amplitude\tring_amplitude\tcv_r"]
    rows += [
        f"{indices[k]}\t{labels[k]}\t{degrees[k]:.2f}\t{found.eccentricity[k]:.4f}\t"
        f"{found.angle_amplitude[k]:.5g}\t{found.ring_amplitude[k]:.5g}\t{model.cv_r_[k]:.4f}"
        for k in range(len(indices))
    ]
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "retinotopy.tsv"
    write_atomic(table_path, ("\n".join(rows) + "\n").encode())
    written = {"table": str(table_path)}
    if grid is not None:
        values: dict[str, tuple[npt.ArrayLike, type]] = {
            "polar_angle": (degrees, np.float32),
            "eccentricity": (found.eccentricity, np.float32),
            "angle_amplitude": (found.angle_amplitude, np.float32),
        }
        written |= write_volumes(values, indices, grid, out)
    by_roi = {}
    for roi in dict.fromkeys(labels.tolist()):
        members = labels == roi
        # How much of the visual field the ROI's voxels point to: the resultant length of their angles is
        # near 1 when all prefer one direction, near 0 when they cover the circle.
        resultant = float(np.abs(np.exp(1j * found.polar_angle[members]).mean()))
        by_roi[str(roi)] = {
            "n_voxels": int(members.sum()),
            "median_angle_amplitude": float(np.median(found.angle_amplitude[members])),
            "angle_resultant_length": resultant,
            "median_eccentricity": float(np.median(found.eccentricity[members])),
        }
    if json:
        print_json({"model": str(model_path), "written": written, "rois": by_roi})
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"{model_path.name}: retinotopy through the model")
    for column in ("ROI", "voxels", "median angle amplitude", "angle resultant", "median eccentricity"):
        table.add_column(column, justify="left" if column == "ROI" else "right")
    for roi, row in by_roi.items():
        table.add_row(
            roi, str(row["n_voxels"]), f"{row['median_angle_amplitude']:.3g}",
            f"{row['angle_resultant_length']:.2f}", f"{row['median_eccentricity']:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"per voxel in {table_path}" + (f"; maps in {out}" if grid is not None else ""))


@app.command()
def contrast(
    model_path: Annotated[Path, typer.Argument(help="Model file.", show_default=False)],
    images: Annotated[
        Path,
        typer.Argument(
            help="An image set with categories: a folder of one subfolder per category, or a TSV with path "
            "and category columns.",
            show_default=False,
        ),
    ],
    a: Annotated[str, typer.Option("--a", help="The category tested for.", show_default=False)],
    b: Annotated[
        list[str] | None,
        typer.Option("--b", help="The category it is tested against; repeat for several (a conjunction)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="The folder the results go into.", show_default=False)
    ] = Path("contrast"),
    threshold: Annotated[float, typer.Option(help="The t a voxel must exceed to count as found.")] = 3.0,
    reference: Annotated[
        Path | None, typer.Option(help="A NIfTI volume on the session's grid: also write the t map on it.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """A category contrast through the model (a localizer in silico): each voxel's Welch t, A against B.

    With several --b, a voxel's t is the smallest against each (A above every
    one); with none, B is every other category of the set. Writes OUT/contrast.tsv
    (one row per voxel) and with --reference OUT/t.nii.gz; prints, per ROI, how
    many voxels exceed the threshold for A and for B.
    """
    from loop.cli._inputs import read_images_for_model
    from loop.cli._volumes import read_grid, write_volumes
    from stimulus import EncodingModel
    from stimulus.insilico import contrast as run_contrast

    image_set = read_images_for_model(model_path, images)
    categories = [c or "" for c in image_set.categories]
    against = tuple(b) if b else tuple(c for c in dict.fromkeys(categories) if c != a)
    model = EncodingModel.load(model_path, device="cpu")
    indices = np.asarray(model.voxel_indices_, dtype=np.int64)
    grid = read_grid(reference, indices, owner=model_path.name) if reference is not None else None
    found = run_contrast(model, list(image_set.paths), categories, a, against)
    labels = np.asarray(model.roi_labels_)
    rows = ["voxel_index\troi\tt"] + [
        f"{indices[k]}\t{labels[k]}\t{found.t[k]:.4f}" for k in range(len(indices))
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "contrast.tsv", ("\n".join(rows) + "\n").encode())
    if grid is not None:
        write_volumes({"t": (found.t, np.float32)}, indices, grid, out)
    by_roi = {
        str(roi): {
            "n_voxels": int((labels == roi).sum()),
            "above": int(((labels == roi) & (found.t > threshold)).sum()),
            "below": int(((labels == roi) & (found.t < -threshold)).sum()),
        }
        for roi in dict.fromkeys(labels.tolist())
    }
    name = f"{a} > {' & '.join(against)}"
    if json:
        print_json({"model": str(model_path), "contrast": name, "n_a": found.n_a, "n_b": list(found.n_b),
                    "threshold": threshold, "rois": by_roi})  # fmt: skip
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"{model_path.name}: {name} (t > {threshold:g})")
    for column in ("ROI", "voxels", f"t > {threshold:g}", f"t < -{threshold:g}"):
        table.add_column(column, justify="left" if column == "ROI" else "right")
    for roi, row in by_roi.items():
        table.add_row(roi, str(row["n_voxels"]), str(row["above"]), str(row["below"]))
    console.print(table)
    console.print(
        f"per voxel in {out / 'contrast.tsv'}" + (f"; the t map in {out / 't.nii.gz'}" if grid else "")
    )
