"""``cortexloop model timeseries``: encoding models of block and movie runs (paper 001's movies).

The input is a run table (:func:`loop.cli._inputs.read_run_table`): one row
per run, naming its events file (what was on screen, and when) and its
response file (one row per TR). Frame features are averaged per TR and
lagged (``--lags``), so that the ridge learns the haemodynamic delay; the fit
is cross-validated over whole training runs, and the held-out (``test``) runs
are scored TR by TR, repeats of one stimulus averaged first, with their noise
ceiling. ``--min-ceiling`` keeps only the voxels whose responses repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import numpy.typing as npt
import typer

from db.base import write_atomic
from loop.cli._common import JsonOption, console, print_json, progress_bars, save_figure
from loop.cli._inputs import RunRow, read_run_table
from loop.cli.model import (
    AlphasOption,
    BackboneOption,
    BudgetOption,
    DeviceOption,
    FactoryOption,
    FdrOption,
    ImageSizeOption,
    LayerOption,
    LayerwiseOption,
    LogOption,
    ModelArg,
    OutModelOption,
    PermutationsOption,
    ReductionOption,
    WeightsOption,
    _Bar,
    _print_rois,
    _read_ceiling,
    _summary,
    encoding_config,
    print_scores,
    scores_json,
)

if TYPE_CHECKING:
    from stimulus import EncodingModel, TimeSeriesRun, TimeSeriesScores

__all__ = ["app"]

app = typer.Typer(
    help="Time-series models of block and movie runs: fit and score TR by TR.", no_args_is_help=True
)

RunsArg = Annotated[
    Path,
    typer.Argument(
        help="Run table: a TSV with run, events and responses columns (optional stimulus and split).",
        show_default=False,
    ),
]
TrOption = Annotated[float, typer.Option("--tr", help="Repetition time in seconds.", show_default=False)]


def _parse_lags(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--lags {text!r}: give comma-separated seconds, e.g. 4,6,8") from None
    return values


@app.command()
def fit(
    runs: RunsArg,
    out: OutModelOption,
    tr: TrOption,
    lags: Annotated[
        str, typer.Option(help="Delays of the features, in seconds (whole TRs), comma-separated.")
    ] = "4,6,8",
    min_ceiling: Annotated[
        float | None,
        typer.Option(
            help="Keep only voxels whose noise ceiling, from the runs that repeat a stimulus (averaged as "
            "they are scored), is at least this (percent).",
            min=0.0,
            max=100.0,
        ),
    ] = None,
    backbone: BackboneOption = "efficientnet-lite0",
    backbone_factory: FactoryOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    image_size: ImageSizeOption = 128,
    budget: BudgetOption = 1000,
    reduction: ReductionOption = "pool",
    log_features: LogOption = False,
    folds: Annotated[int, typer.Option(help="Folds over the training runs (at most one per run).")] = 5,
    alphas: AlphasOption = None,
    permutations: PermutationsOption = 1000,
    fdr_q: FdrOption = 0.05,
    layerwise: LayerwiseOption = True,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Fit a time-series model on the training runs, save it, and score it on the test runs.

    Runs with split 'train' (all runs, when the table has no split column) are
    fitted, cross-validated over whole runs; runs with split 'test' are scored
    TR by TR, as `model timeseries score` scores them.
    """
    from stimulus import EncodingInputError, EncodingModel
    from stimulus._torch import reuse_freed_memory
    from stimulus.images import file_sha256
    from stimulus.temporal import repeated_run_ceiling

    reuse_freed_memory()
    table = read_run_table(runs, tr_s=tr)
    train = [run for run in table if run.split != "test"]
    test = [run for run in table if run.split == "test"]
    if len(train) < 2:
        raise EncodingInputError(
            f"{runs} has {len(train)} training run(s); a time-series model is cross-validated over runs, "
            "so give at least two (split 'train', or no split column)"
        )
    n_voxels = table[0].responses.values.shape[1]
    keep = np.arange(n_voxels)
    if min_ceiling is not None:
        stimuli = [run.stimulus for run in table]
        repeated = [run for run in table if stimuli.count(run.stimulus) > 1]
        ceiling = repeated_run_ceiling(
            [run.responses.values for run in repeated], [run.stimulus for run in repeated]
        )
        keep = np.flatnonzero(ceiling.percent >= min_ceiling)
        if len(keep) == 0:
            raise EncodingInputError(
                f"no voxel's noise ceiling reaches {min_ceiling} % (the highest is "
                f"{np.nanmax(ceiling.percent):.1f} %); lower --min-ceiling"
            )
        if not json:
            console.print(
                f"{len(keep)} of {n_voxels} voxels have a noise ceiling of at least {min_ceiling} % "
                f"(median {np.median(ceiling.percent):.1f} %, from {ceiling.n_repeated_stimuli} repeated TRs)"
            )
    config, spec = encoding_config(
        backbone=backbone, backbone_factory=backbone_factory, weights=weights, layer=layer,
        image_size=image_size, budget=budget, reduction=reduction, log_features=log_features, cv="kfold",
        folds=min(folds, len(train)), alphas=alphas, permutations=permutations, fdr_q=fdr_q,
        layerwise=layerwise,
    )  # fmt: skip
    first = table[0].responses
    labels = None if first.roi_labels is None else [first.roi_labels[k] for k in keep]
    indices = keep if first.voxel_indices is None else first.voxel_indices[keep]
    model = EncodingModel(config, device=device, backbone=spec)
    with progress_bars(transient=json) as progress:
        model.fit_timeseries(
            [_run(run, keep) for run in train],
            tr_s=tr,
            lags_s=_parse_lags(lags),
            roi_labels=labels,
            voxel_indices=indices,
            progress=_Bar(progress),
        )
    digest = model.save(out)
    summary = _summary(model, out, digest)
    summary["run_table_sha256"] = file_sha256(runs)
    summary["n_training_runs"] = len(train)
    scored = _score(model, test) if test else None
    if json:
        print_json({**summary, "test": _scores_json(scored) if scored else None})
        return
    console.print(
        f"fitted {summary['n_voxels']} voxels on {len(train)} runs ({summary['n_training_images']} frames) "
        f"in {summary['fit_seconds']} s; {summary['n_selected']} predicted above chance (FDR {config.fdr_q})"
    )
    _print_rois(model)
    console.print(f"wrote {out} (sha256 {digest})")
    if scored is not None:
        _print_scores(scored, f"{out.name} on the {len(test)} test run(s)")


@app.command()
def score(
    model_path: ModelArg,
    runs: RunsArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="A folder for timeseries.tsv (each ROI's measured and predicted mean, TR by TR), "
            "voxels.tsv (each voxel's scores) and timeseries.png.",
        ),
    ] = None,
    noise_ceiling: Annotated[
        Path | None,
        typer.Option(help="The noise ceiling a dataset provides: .npy, one percentage per model voxel."),
    ] = None,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Score a time-series model TR by TR on held-out runs (split 'test'; all runs when there is no split).

    Runs that show the same stimulus are averaged TR by TR first (paper 001 averaged
    ten repeats of its test blocks) and give the noise ceiling; r and R^2 are over TRs.
    """
    from stimulus import EncodingInputError, EncodingModel

    model = EncodingModel.load(model_path, device=device)
    if model.tr_s_ is None:
        raise EncodingInputError(f"{model_path} was fitted on one response per image; use `model score`")
    table = read_run_table(runs, tr_s=model.tr_s_)
    chosen = [run for run in table if run.split == "test"] if any(run.split for run in table) else table
    if not chosen:
        raise EncodingInputError(f"{runs} has no run with split 'test' to score")
    given = _read_ceiling(noise_ceiling) if noise_ceiling is not None else None
    scored = _score(model, chosen, given_ceiling=given)
    if out is not None:
        _write_scores(model, scored, out)
    if json:
        print_json({"model": str(model_path), **_scores_json(scored), "out": str(out) if out else None})
        return
    _print_scores(scored, f"{model_path.name} on {len(chosen)} run(s)")
    if out is not None:
        console.print(f"wrote {out}/timeseries.tsv, voxels.tsv and timeseries.png")


def _run(run: RunRow, columns: npt.NDArray[np.int64]) -> TimeSeriesRun:
    from stimulus import TimeSeriesRun

    return TimeSeriesRun(run.frames, run.onsets_s, run.responses.values[:, columns])


def _model_columns(model: EncodingModel, run: RunRow) -> npt.NDArray[np.int64]:
    """The columns of a run's responses that hold the model's voxels, found by voxel index."""
    from stimulus import EncodingInputError

    given = run.responses.voxel_indices
    n_columns = run.responses.values.shape[1]
    indices = np.arange(n_columns) if given is None else given
    where = {int(v): k for k, v in enumerate(indices)}
    missing = [int(v) for v in model.voxel_indices_ if int(v) not in where]
    if missing:
        raise EncodingInputError(
            f"the responses of run {run.label} lack {len(missing)} of the model's {model.n_voxels} voxels "
            f"(first: voxel index {missing[0]}); score on responses of the voxels the model was fitted on"
        )
    return np.array([where[int(v)] for v in model.voxel_indices_], dtype=np.int64)


def _score(
    model: EncodingModel, runs: list[RunRow], *, given_ceiling: npt.ArrayLike | None = None
) -> TimeSeriesScores:
    return model.score_timeseries(
        [_run(run, _model_columns(model, run)) for run in runs],
        stimuli=[run.stimulus for run in runs],
        given_ceiling=given_ceiling,
    )


def _scores_json(scored: TimeSeriesScores) -> dict[str, Any]:
    return {
        "n_trs": scored.scores.n_stimuli,
        "stimuli": list(dict.fromkeys(scored.stimuli)),
        **scores_json(scored.scores),
    }


def _print_scores(scored: TimeSeriesScores, title: str) -> None:
    n_stimuli = len(set(scored.stimuli))
    stimuli = "1 stimulus" if n_stimuli == 1 else f"{n_stimuli} stimuli"
    print_scores(scored.scores, f"{title}: {scored.scores.n_stimuli} TRs of {stimuli}")


def _write_scores(model: EncodingModel, scored: TimeSeriesScores, folder: Path) -> None:
    result = scored.scores
    labels = np.asarray(model.roi_labels_)
    rois = list(dict.fromkeys(labels.tolist()))
    means = {
        roi: (scored.measured[:, labels == roi].mean(axis=1), scored.predicted[:, labels == roi].mean(axis=1))
        for roi in rois
    }
    header = ["stimulus", "tr", "onset_s", "runs"] + [
        f"{roi}_{kind}" for roi in rois for kind in ("measured", "predicted")
    ]
    lines = ["\t".join(header)]
    assert model.tr_s_ is not None
    for k, (stimulus, tr) in enumerate(zip(scored.stimuli, scored.trs, strict=True)):
        cells = [stimulus, str(int(tr)), f"{tr * model.tr_s_:g}", str(int(scored.n_runs[k]))]
        cells += [f"{means[roi][j][k]:.6g}" for roi in rois for j in (0, 1)]
        lines.append("\t".join(cells))
    ceiling = result.ceiling.percent if result.ceiling is not None else None
    voxel_lines = [
        "\t".join(["voxel_index", "roi", "r", "r2", "noise_ceiling_percent", "normalized_accuracy"])
    ]
    for k, index in enumerate(model.voxel_indices_):
        nc = f"{ceiling[k]:.6g}" if ceiling is not None else "n/a"
        normalized = f"{result.normalized[k]:.6g}" if result.normalized is not None else "n/a"
        cells = [str(int(index)), str(labels[k]), f"{result.r[k]:.6g}", f"{result.r2[k]:.6g}", nc, normalized]
        voxel_lines.append("\t".join(cells))
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "timeseries.tsv", ("\n".join(lines) + "\n").encode())
    write_atomic(folder / "voxels.tsv", ("\n".join(voxel_lines) + "\n").encode())
    _plot(means, result.by_roi, folder / "timeseries.png")


def _plot(
    means: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
    by_roi: dict[str, dict[str, float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(means), 1, figsize=(8, 1.6 * len(means) + 0.4), sharex=True, squeeze=False)
    for ax, (roi, (measured, predicted)) in zip(axes[:, 0], means.items(), strict=True):
        ax.plot(measured, color="0.3", lw=1, label="measured")
        ax.plot(predicted, color="tab:orange", lw=1, label="predicted")
        ax.set_ylabel(roi)
        ax.set_title(f"median voxel r {by_roi[roi]['median_r']:.2f}", fontsize="small", loc="right")
    axes[0, 0].legend(fontsize="small", frameon=False, loc="upper left")
    axes[-1, 0].set_xlabel("TR (scored runs one after another)")
    fig.tight_layout()
    save_figure(fig, path)
