"""``cortexloop model``: fit, score, inspect encoding models, and predict with them.

Inputs are a stimulus table and a response file:

- the table is a TSV with a header and an ``image`` column (paths relative to
  the table), optionally ``group`` (the run or session, for cross-validation)
  and ``stimulus`` (an id; rows that share it are repeats, averaged for the
  fit and used for the noise ceiling when scoring);
- the responses are a ``.npy`` array (rows x voxels, one row per table row),
  or a ``.npz`` with ``responses`` and optionally ``roi_labels`` and
  ``voxel_indices`` (one per voxel).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich import box
from rich.progress import Progress, TaskID
from rich.table import Table

from db.base import write_atomic
from loop.cli._common import JsonOption, choice, console, print_json, progress_bars, save_figure
from loop.cli._inputs import read_images_for_model, read_responses, read_stimulus_table
from stimulus.names import CvKind, ReductionMethod

# `stimulus` brings torch, about two seconds to import: the model commands import it when they run, so
# that every other `cortexloop` command starts quickly.
if TYPE_CHECKING:
    from stimulus import BackboneSpec, EncodingConfig, EncodingModel, EncodingScores

BACKBONE_NAMES = "efficientnet-lite0, efficientnet-lite1, efficientnet-lite2 (docs/encoding.md for others)"

app = typer.Typer(help="Encoding models: fit, score, inspect, predict.", no_args_is_help=True)

TableArg = Annotated[
    Path, typer.Argument(help="Stimulus table (TSV with an 'image' column).", show_default=False)
]
ResponsesArg = Annotated[
    Path, typer.Argument(help="Responses: .npy (rows x voxels) or .npz with 'responses'.", show_default=False)
]
ModelArg = Annotated[Path, typer.Argument(help="Model file.", show_default=False)]

# The options of a fit, shared with `model timeseries fit`.
OutModelOption = Annotated[Path, typer.Option("--out", "-o", help="Where to write the model file.")]
BackboneOption = Annotated[str, typer.Option(help=f"One of: {BACKBONE_NAMES}.")]
FactoryOption = Annotated[
    str | None, typer.Option(help="Your own network: 'module:function' returning a torch module.")
]
WeightsOption = Annotated[
    Path | None, typer.Option(help="Weights file (a state dict) for --backbone-factory.")
]
LayerOption = Annotated[
    list[str] | None, typer.Option(help="A layer to read; repeat. Default: the backbone's.")
]
ImageSizeOption = Annotated[int, typer.Option(help="Images are cropped square and resized to this.")]
BudgetOption = Annotated[int, typer.Option(help="Features per layer, about.")]
ReductionOption = Annotated[
    str, typer.Option(help="pool (adaptive pooling) or smooth (Gaussian + subsampling).")
]
LogOption = Annotated[bool, typer.Option("--log", help="Compress features with log(1 + x).")]
FoldsOption = Annotated[int, typer.Option(help="Folds for kfold.")]
AlphasOption = Annotated[str | None, typer.Option(help="Penalty grid, comma-separated. Default 1e-2..1e7.")]
PermutationsOption = Annotated[int, typer.Option(help="Permutations for the voxel selection test.")]
FdrOption = Annotated[
    float, typer.Option(help="False discovery rate of the voxel selection (Benjamini-Hochberg).")
]
LayerwiseOption = Annotated[bool, typer.Option(help="Also fit one model per layer (fingerprints).")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu or cuda. Default: the GPU when there is one.")]


class _Bar:
    """Drives one rich progress bar per stage of a fit."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _parse_alphas(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--alphas {text!r}: give comma-separated numbers, e.g. 1,10,100") from None
    return values


def encoding_config(
    *,
    backbone: str,
    backbone_factory: str | None,
    weights: Path | None,
    layer: list[str] | None,
    image_size: int,
    budget: int,
    reduction: str,
    log_features: bool,
    cv: str,
    folds: int,
    alphas: str | None,
    permutations: int,
    fdr_q: float,
    layerwise: bool,
) -> tuple[EncodingConfig, BackboneSpec | None]:
    """The configuration of a fit from its command-line options, and a lab's own backbone if given."""
    from stimulus import EncodingConfig, ReductionConfig, backbone_from_factory

    spec = None
    if backbone_factory is not None:
        if weights is None:
            raise typer.BadParameter("--backbone-factory needs --weights FILE")
        spec = backbone_from_factory(backbone_factory, weights)
    elif weights is not None:
        raise typer.BadParameter("--weights goes with --backbone-factory")
    config = EncodingConfig(
        alphas=_parse_alphas(alphas) or EncodingConfig().alphas,
        backbone=spec.name if spec else backbone,
        layers=tuple(layer or ()),
        image_size=image_size,
        reduction=ReductionConfig(
            method=choice(ReductionMethod, reduction, "--reduction"), budget=budget, log=log_features
        ),
        cv=choice(CvKind, cv, "--cv"),
        n_splits=folds,
        n_permutations=permutations,
        fdr_q=fdr_q,
        layerwise=layerwise,
    )
    return config, spec


@app.command()
def fit(
    table: TableArg,
    responses: ResponsesArg,
    out: OutModelOption,
    backbone: BackboneOption = "efficientnet-lite0",
    backbone_factory: FactoryOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    image_size: ImageSizeOption = 128,
    budget: BudgetOption = 1000,
    reduction: ReductionOption = "pool",
    log_features: LogOption = False,
    cv: Annotated[
        str, typer.Option(help="kfold (over the 'group' column) or loo (leave-one-out).")
    ] = "kfold",
    folds: FoldsOption = 5,
    alphas: AlphasOption = None,
    permutations: PermutationsOption = 1000,
    fdr_q: FdrOption = 0.05,
    layerwise: LayerwiseOption = True,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Fit an encoding model on images and their measured responses, and save it."""
    from stimulus import EncodingModel
    from stimulus._torch import reuse_freed_memory
    from stimulus.images import file_sha256
    from stimulus.scores import average_repeats

    reuse_freed_memory()

    stimuli = read_stimulus_table(table)
    measured = read_responses(responses, len(stimuli.paths))
    # One row per stimulus: repeats averaged, the first showing's image and group kept.
    repeats = average_repeats(measured.values, stimuli.ids)
    paths = [stimuli.paths[row] for row in repeats.first]
    groups = [stimuli.groups[row] for row in repeats.first] if stimuli.groups else None
    if cv == "kfold" and groups is None:
        console.print(
            f"[yellow]{table} has no 'group' column: folds are contiguous blocks of rows. "
            "Add the run of each row so that no run is split.[/]"
        )
    config, spec = encoding_config(
        backbone=backbone, backbone_factory=backbone_factory, weights=weights, layer=layer,
        image_size=image_size, budget=budget, reduction=reduction, log_features=log_features, cv=cv,
        folds=folds, alphas=alphas, permutations=permutations, fdr_q=fdr_q, layerwise=layerwise,
    )  # fmt: skip
    model = EncodingModel(config, device=device, backbone=spec)
    with progress_bars(transient=json) as progress:
        model.fit(
            paths,
            repeats.averaged,
            groups=groups,
            roi_labels=measured.roi_labels,
            voxel_indices=measured.voxel_indices,
            progress=_Bar(progress),
        )
    digest = model.save(out)
    summary = _summary(model, out, digest)
    summary["training_table_sha256"] = file_sha256(table)
    if json:
        print_json(summary)
        return
    console.print(
        f"fitted {summary['n_voxels']} voxels on {summary['n_training_images']} images in "
        f"{summary['fit_seconds']} s; {summary['n_selected']} predicted above chance (FDR {config.fdr_q})"
    )
    _print_rois(model)
    console.print(f"wrote {out} (sha256 {digest})")


def _summary(model: EncodingModel, path: Path, digest: str) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": digest,
        "backbone": model.backbone.name,
        "weights_sha256": model.backbone.weights_sha256,
        "layers": list(model.layers),
        "features_per_layer": list(model.extractor.out_features),
        "image_size": model.config.image_size,
        "lags_s": list(model.lags_s_),
        "n_voxels": model.n_voxels,
        "n_selected": int(model.selected_.sum()),
        "median_cv_r": float(np.median(model.cv_r_)),
        "rois": _roi_rows(model),
        **model.fit_info_,
    }


def _roi_rows(model: EncodingModel) -> list[dict[str, Any]]:
    rows = []
    for roi in dict.fromkeys(model.roi_labels_.tolist()):
        members = model.roi_labels_ == roi
        row: dict[str, Any] = {
            "roi": roi,
            "n_voxels": int(members.sum()),
            "n_selected": int(model.selected_[members].sum()),
            "median_cv_r": float(np.median(model.cv_r_[members])),
            "median_alpha": float(np.median(model.alpha_[members])),
        }
        if len(model.layer_scores_):
            chosen = members & model.selected_
            best = (
                np.bincount(model.best_layer_[chosen], minlength=len(model.layers)) if chosen.any() else None
            )
            row["best_layer"] = model.layers[int(best.argmax())] if best is not None else None
        rows.append(row)
    return rows


def _print_rois(model: EncodingModel) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("ROI", "voxels", "selected", "median CV r", "median alpha", "most common best layer"):
        table.add_column(column, justify="left" if column in {"ROI", "most common best layer"} else "right")
    for row in _roi_rows(model):
        table.add_row(
            row["roi"], str(row["n_voxels"]), str(row["n_selected"]), f"{row['median_cv_r']:.3f}",
            f"{row['median_alpha']:.3g}", row.get("best_layer") or "-",
        )  # fmt: skip
    console.print(table)


@app.command()
def score(
    model_path: ModelArg,
    table: TableArg,
    responses: ResponsesArg,
    noise_ceiling: Annotated[
        Path | None,
        typer.Option(
            help="The noise ceiling a dataset provides: .npy, one percentage per voxel (instead of the "
            "one from repeated stimuli)."
        ),
    ] = None,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Score a model on held-out images: r and R^2 per ROI; with a noise ceiling, the normalized accuracy.

    The noise ceiling comes from repeated stimuli, or from --noise-ceiling. The
    overall accuracy is paper 003's: the median over all voxels of 100 r^2 / NC.
    """
    from stimulus import EncodingModel

    given = _read_ceiling(noise_ceiling) if noise_ceiling is not None else None
    model = EncodingModel.load(model_path, device=device)
    stimuli = read_stimulus_table(table)
    measured = read_responses(responses, len(stimuli.paths))
    result = model.score(stimuli.paths, measured.values, stimulus_ids=stimuli.ids, given_ceiling=given)
    if json:
        print_json({"model": str(model_path), "n_stimuli": result.n_stimuli, **scores_json(result)})
        return
    print_scores(result, f"{model_path.name} on {result.n_stimuli} stimuli")
    if result.overall_normalized is None:
        console.print(
            "no stimulus repeats, so no noise ceiling: repeat some stimuli, or give the dataset's with "
            "--noise-ceiling"
        )


def scores_json(result: EncodingScores) -> dict[str, Any]:
    """A model's scores for scripts: medians over voxels, the noise ceiling's, and each ROI's."""
    return {
        "median_r": float(np.median(result.r)),
        "median_r2": float(np.median(result.r2)),
        "noise_ceiling_percent_median": (
            float(np.median(result.ceiling.percent)) if result.ceiling is not None else None
        ),
        "normalized_accuracy_all_voxels": result.overall_normalized,
        "rois": result.by_roi,
    }


def print_scores(result: EncodingScores, title: str) -> None:
    """A model's scores per ROI as a table; with a noise ceiling, r2/NC and paper 003's overall accuracy."""
    table = Table(box=box.SIMPLE_HEAD, title=title)
    columns = ["ROI", "voxels", "median r", "median R2"]
    if result.normalized is not None:
        columns.append("median r2/NC (%)")
    for column in columns:
        table.add_column(column, justify="left" if column == "ROI" else "right")
    for roi, values in result.by_roi.items():
        cells = [roi, str(int(values["n_voxels"])), f"{values['median_r']:.3f}", f"{values['median_r2']:.3f}"]
        if result.normalized is not None:
            cells.append(f"{values['median_normalized_accuracy']:.1f}")
        table.add_row(*cells)
    console.print(table)
    if result.overall_normalized is not None:
        console.print(
            f"normalized accuracy over all {len(result.r)} voxels (median of 100 r2/NC): "
            f"{result.overall_normalized:.1f} %"
        )


@app.command()
def predict(
    model_path: ModelArg,
    images: Annotated[
        Path,
        typer.Argument(
            help="The images: a folder (its subfolders are categories) or a TSV with a path column.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Where to write: OUT.tsv (one row per image, the predicted mean of each ROI) and OUT.npz "
            "(images x voxels, with each voxel's ROI and index).",
            show_default=False,
        ),
    ],
    top: Annotated[int, typer.Option(help="Images printed per ROI, the highest predicted.", min=0)] = 3,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Predict a model's responses to new images: per ROI (a table) and per voxel (an array).

    Every image is checked first (stimulus.image_sets: unreadable, duplicate or
    too small files are named, all at once) and seen as the model's training
    images were: its largest centred square, at the model's input size.
    """
    from stimulus import EncodingModel

    image_set = read_images_for_model(model_path, images)
    model = EncodingModel.load(model_path, device=device)
    voxels = np.asarray(model.predict(list(image_set.paths)), dtype=np.float32)
    labels = np.asarray(model.roi_labels_)
    rois = list(dict.fromkeys(labels.tolist()))
    by_roi = {roi: voxels[:, labels == roi].mean(axis=1) for roi in rois}
    names = image_set.names()
    rows = ["\t".join(["image", "category", "sha256", *rois])]
    for k, name in enumerate(names):
        values = [f"{by_roi[roi][k]:.6g}" for roi in rois]
        rows.append("\t".join([name, image_set.categories[k] or "n/a", image_set.sha256[k], *values]))
    table_path, array_path = out.with_name(out.name + ".tsv"), out.with_name(out.name + ".npz")
    buffer = io.BytesIO()
    np.savez(
        buffer, predicted=voxels, roi_labels=labels, voxel_indices=np.asarray(model.voxel_indices_),
        images=np.asarray(names), sha256=np.asarray(image_set.sha256),
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(table_path, ("\n".join(rows) + "\n").encode())
    write_atomic(array_path, buffer.getvalue())
    ranked = {roi: [names[k] for k in np.argsort(-by_roi[roi], kind="stable")[:top]] for roi in rois}
    if json:
        print_json({"model": str(model_path), "n_images": len(names), "table": str(table_path),
                    "array": str(array_path), "highest": ranked})  # fmt: skip
        return
    table_out = Table(box=box.SIMPLE_HEAD, title=f"{model_path.name} on {len(names)} images")
    for column in ("ROI", "voxels", "mean predicted", f"highest predicted (of {len(names)})"):
        table_out.add_column(column, justify="right" if column in ("voxels", "mean predicted") else "left")
    for roi in rois:
        table_out.add_row(
            roi, str(int((labels == roi).sum())), f"{by_roi[roi].mean():.3f}", ", ".join(ranked[roi])
        )
    console.print(table_out)
    console.print(f"predictions in {table_path} (per ROI) and {array_path} (per voxel)")


@app.command()
def fingerprints(
    model_path: ModelArg,
    top: Annotated[
        float,
        typer.Option(
            help="The fraction of each ROI's voxels, best predicted first (cross-validated r), that count; "
            "paper 001 took 0.25. 0: the voxels selected above chance instead.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.25,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the fingerprints, one line per ROI, into this PNG.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Layer fingerprints per ROI (paper 001): how well each layer alone predicts the ROI's voxels.

    Each ROI's mean score over layers is divided by its maximum, so its peak is 1;
    the summary projects each voxel's scores onto a trend from -1 (first layer) to
    1 (last) and averages them: negative for an ROI explained by early layers,
    positive for one explained by late ones.
    """
    from stimulus import EncodingModel
    from stimulus.scores import fingerprint_summary

    model = EncodingModel.load(model_path, device="cpu")
    prints = model.fingerprints(top=top or None)
    voxels = model.fingerprint_voxels(top=top or None)
    rows: list[dict[str, Any]] = [
        {"roi": roi, "n_voxels": len(voxels[roi]), "fingerprint": [float(v) for v in values],
         "peak_layer": model.layers[int(np.argmax(values))],
         "summary": float(fingerprint_summary(model.layer_scores_[:, voxels[roi]]).mean())}
        for roi, values in prints.items()
    ]  # fmt: skip
    if plot is not None:
        _plot_fingerprints(rows, model.layers, plot, title=f"{model_path.name}: layer fingerprints")
    if json:
        print_json({"model": str(model_path), "layers": list(model.layers), "top": top or None, "rois": rows})
        return
    chosen = f"the best {top:.0%} of each ROI's voxels" if top else "the voxels selected above chance"
    table_out = Table(box=box.SIMPLE_HEAD, title=f"{model_path.name}: layer fingerprints ({chosen})")
    for column in ("ROI", "voxels", *model.layers, "peak", "summary"):
        table_out.add_column(column, justify="left" if column in ("ROI", "peak") else "right")
    for row in rows:
        cells = [f"{v:.2f}" for v in row["fingerprint"]]
        table_out.add_row(
            row["roi"], str(row["n_voxels"]), *cells, row["peak_layer"], f"{row['summary']:+.2f}"
        )
    console.print(table_out)
    if plot is not None:
        console.print(f"drawn in {plot}")


def _plot_fingerprints(
    rows: list[dict[str, Any]], layers: tuple[str, ...], path: Path, *, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for row in rows:
        ax.plot(
            range(len(layers)), row["fingerprint"], marker="o", label=f"{row['roi']} ({row['summary']:+.2f})"
        )
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel("score / its maximum")
    ax.set_title(title)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


@app.command()
def maps(
    model_path: ModelArg,
    reference: Annotated[
        Path,
        typer.Option(
            help="A NIfTI volume on the session's grid (its atlas, or a mean EPI): the maps take its shape "
            "and affine, and the model's voxel indices are flat (C-order) indices into it.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The folder the maps are written into.", show_default=False)
    ],
    json: JsonOption = False,
) -> None:
    """The model's per-voxel scores as brain volumes, viewable in any NIfTI viewer.

    Written into OUT: cv_r, cv_r2 (out-of-fold accuracy), p_value (its permutation
    p), selected (1: above chance after FDR), roi (each model voxel's ROI, numbered
    as in roi.tsv), and for a model fitted layer-wise best_layer (1 for the first
    layer) and fingerprint_summary (-1 early to 1 late, paper 001). Voxels the
    model does not hold are 0 in every map.
    """
    from loop.cli._volumes import read_grid, write_volumes
    from stimulus import EncodingModel
    from stimulus.scores import fingerprint_summary

    model = EncodingModel.load(model_path, device="cpu")
    indices = np.asarray(model.voxel_indices_, dtype=np.int64)
    grid = read_grid(reference, indices, owner=model_path.name)
    rois = list(dict.fromkeys(model.roi_labels_.tolist()))
    values: dict[str, tuple[npt.ArrayLike, type]] = {
        "cv_r": (model.cv_r_, np.float32),
        "cv_r2": (model.cv_r2_, np.float32),
        "p_value": (model.p_values_, np.float32),
        "selected": (model.selected_.astype(np.uint8), np.uint8),
        "roi": (np.array([rois.index(label) + 1 for label in model.roi_labels_]), np.int16),
    }
    if len(model.layer_scores_):
        values["best_layer"] = (model.best_layer_ + 1, np.int16)
        values["fingerprint_summary"] = (fingerprint_summary(model.layer_scores_), np.float32)
    written = write_volumes(values, indices, grid, out)
    rows = [f"{k + 1}\t{roi}\t{int((model.roi_labels_ == roi).sum())}" for k, roi in enumerate(rois)]
    write_atomic(out / "roi.tsv", ("index\tname\tn_voxels\n" + "\n".join(rows) + "\n").encode())
    if json:
        print_json(
            {"model": str(model_path), "reference": str(reference), "shape": grid.shape, "maps": written}
        )
        return
    console.print(
        f"wrote {len(written)} maps of {len(indices)} voxels on {reference.name}'s grid "
        f"({grid.describe()}) to {out}: {', '.join(written)}"
    )
    if "best_layer" not in written:
        console.print(
            "no best_layer or fingerprint_summary map: the model was fitted without layer-wise models"
        )


def _read_ceiling(path: Path) -> npt.NDArray[np.float64]:
    """A dataset's noise ceiling: a .npy of one percentage per voxel."""
    from stimulus import EncodingInputError

    try:
        values = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise EncodingInputError(f"noise ceiling file {path} is not a readable .npy ({exc})") from None
    if values.ndim != 1:
        raise EncodingInputError(
            f"noise ceiling file {path} has shape {values.shape}; give one value per voxel"
        )
    return values


@app.command()
def saliency(
    model_path: ModelArg,
    images: Annotated[
        Path,
        typer.Argument(help="The images: a folder or a TSV with a path column.", show_default=False),
    ],
    roi: Annotated[
        list[str],
        typer.Option("--roi", help="An ROI of the model; repeat to compare several.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", help="The folder the maps go into.", show_default=False)],
    method: Annotated[
        str,
        typer.Option(
            help="smoothgrad (the gradient over noisy copies) or scorecam (the image masked by each channel "
            "of a layer, weighed by the ROI's predicted response to it)."
        ),
    ] = "smoothgrad",
    samples: Annotated[int, typer.Option(help="Noisy copies per image (SmoothGrad).", min=1)] = 16,
    layer: Annotated[
        str | None,
        typer.Option(help="The layer whose channels mask the image (Score-CAM); default the last."),
    ] = None,
    figures: Annotated[int, typer.Option(help="Images drawn as PNG figures (the first ones).", min=0)] = 12,
    json: JsonOption = False,
) -> None:
    """Per-ROI saliency maps: which parts of each image drive each ROI, through the model.

    Each map is the SmoothGrad magnitude of the ROI's predicted mean response
    over the pixels or, with --method scorecam, the Score-CAM map (no gradient),
    normalized to sum to 1 (stimulus.saliency). Writes
    OUT/saliency.npz (maps: ROIs x images x size x size), OUT/overlap.tsv (the
    symmetric KL divergence between each pair of ROIs' maps, per image: 0 when
    they attend to the same places) and a PNG per image for the first --figures.
    """
    from stimulus import EncodingModel, load_images
    from stimulus.saliency import SaliencyConfig, ScoreCamConfig, roi_saliency, roi_scorecam, symmetric_kl

    if method not in ("smoothgrad", "scorecam"):
        raise typer.BadParameter(f"--method {method!r}: use smoothgrad or scorecam")
    image_set = read_images_for_model(model_path, images)
    model = EncodingModel.load(model_path, device="cpu")
    pixels = load_images(list(image_set.paths), model.config.image_size)
    rois = list(dict.fromkeys(roi))
    if method == "scorecam":
        maps = roi_scorecam(model, pixels, rois, ScoreCamConfig(layer=layer))
    else:
        maps = roi_saliency(model, pixels, rois, SaliencyConfig(samples=samples))
    names = image_set.names()
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, images=np.asarray(names), rois=np.asarray(rois), maps=np.stack([maps[r] for r in rois]))
    write_atomic(out / "saliency.npz", buffer.getvalue())
    pairs = [(a, b) for i, a in enumerate(rois) for b in rois[i + 1 :]]
    divergence = {(a, b): symmetric_kl(maps[a], maps[b]) for a, b in pairs}
    rows = ["image\troi_a\troi_b\tsymmetric_kl"]
    rows += [f"{names[k]}\t{a}\t{b}\t{divergence[a, b][k]:.5f}" for k in range(len(names)) for a, b in pairs]
    write_atomic(out / "overlap.tsv", ("\n".join(rows) + "\n").encode())
    for k in range(min(figures, len(names))):
        _plot_saliency(
            pixels[k], {r: maps[r][k] for r in rois}, out / f"saliency_{k:03d}.png", title=names[k]
        )
    summary = {f"{a}-{b}": float(np.median(divergence[a, b])) for a, b in pairs}
    if json:
        print_json({"model": str(model_path), "method": method, "n_images": len(names), "rois": rois,
                    "median_symmetric_kl": summary, "out": str(out)})  # fmt: skip
        return
    console.print(f"saliency of {', '.join(rois)} on {len(names)} images in {out}")
    for pair, value in summary.items():
        console.print(f"  {pair}: median symmetric KL {value:.3f} (0: the same places)")


def _plot_saliency(
    image: npt.NDArray[np.float32], maps: dict[str, npt.NDArray[np.float64]], path: Path, *, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from loop.report import saliency_figure

    fig = saliency_figure([(title, image, maps)])
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


@app.command()
def info(model_path: ModelArg, json: JsonOption = False) -> None:
    """What a model file holds, checked against its hash (the backbone is not loaded)."""
    from stimulus.encoding import read_model_file

    meta, tensors, digest = read_model_file(model_path)
    coef = tensors["coef"]
    selected = tensors["selected"].numpy()
    summary = {
        "path": str(model_path),
        "sha256": digest,
        "backbone": meta["backbone"]["name"],
        "weights_sha256": meta["backbone"]["weights_sha256"],
        "layers": {name: shape for name, shape in meta["layers"]},
        "features_per_layer": meta["out_features"],
        "n_features": int(coef.shape[0]),
        "n_voxels": int(coef.shape[1]),
        "n_selected": int(selected.sum()),
        "rois": meta["roi_names"],
        "lags_s": meta["lags_s"],
        "config": meta["config"],
        "fit": meta["fit"],
        "versions": meta["versions"],
    }
    if json:
        print_json(summary)
        return
    console.print(f"[bold]{model_path}[/]  sha256 {digest}")
    console.print(f"backbone {summary['backbone']} (weights sha256 {summary['weights_sha256'][:16]}...)")
    for (name, shape), width in zip(meta["layers"], meta["out_features"], strict=True):
        console.print(f"  {name:<16} {tuple(shape)} -> {width} features")
    rois = ", ".join(meta["roi_names"])
    console.print(
        f"{summary['n_voxels']} voxels ({summary['n_selected']} selected) in ROIs {rois}; "
        f"fitted {meta['fit'].get('fitted_at', '?')} on {meta['fit'].get('n_training_images', '?')} images"
    )
    if meta["lags_s"]:
        console.print(f"time-series model, lags {meta['lags_s']} s at TR {meta['tr_s']} s")


@app.command()
def layers(
    backbone: Annotated[str, typer.Option(help=f"One of: {BACKBONE_NAMES}.")] = "efficientnet-lite0",
    image_size: Annotated[int, typer.Option(help="Input size the shapes are given for.")] = 128,
    json: JsonOption = False,
) -> None:
    """The layers of a backbone that a model can read, with their output shapes."""
    from stimulus import BackboneError, FeatureExtractor, ReductionConfig, load_backbone

    loaded = load_backbone(backbone)
    candidates = [n for n in loaded.layer_names if n.count(".") <= 1]
    shapes: dict[str, Any] = {}
    for name in candidates:
        try:
            extractor = FeatureExtractor(loaded, [name], image_size, ReductionConfig())
        except BackboneError:  # modules that run twice or return no tensor are not offered
            continue
        shapes[name] = list(extractor.layer_shapes[name])
    if json:
        print_json(
            {"backbone": backbone, "default_layers": list(loaded.spec.default_layers), "layers": shapes}
        )
        return
    for name, shape in shapes.items():
        mark = "*" if name in loaded.spec.default_layers else " "
        console.print(f"{mark} {name:<24} {tuple(shape)}")
    console.print("* read by default")
