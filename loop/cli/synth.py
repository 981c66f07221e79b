"""``cortexloop synth`` and ``cortexloop decode``: images from an encoding model.

``synth`` writes one PNG per image as soon as its batch is done (metadata in
the PNG and a line in ``synthesis.jsonl``), so an interrupted or failed run
keeps what it finished. ``decode`` inverts the model: responses in, images out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich import box
from rich.table import Table

from loop.cli._common import JsonOption, choice, console, print_json, progress_bars
from stimulus.names import ObjectiveKind, Parametrization

if TYPE_CHECKING:
    from stimulus.synthesis import SynthesizedImage

ModelArg = Annotated[Path, typer.Argument(help="Model file (cortexloop model fit).", show_default=False)]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for the images.", show_default=False)]
DeviceOption = Annotated[str | None, typer.Option(help="cpu or cuda. Default: the GPU when there is one.")]


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed to disk before the next image starts."""
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def synth(
    model_path: ModelArg,
    out: OutOption,
    roi: Annotated[list[str] | None, typer.Option(help="Target ROI; repeat for several.")] = None,
    voxel: Annotated[
        list[int] | None, typer.Option(help="Target voxel (column in the model); repeat.")
    ] = None,
    images: Annotated[int, typer.Option(help="Images per target.")] = 4,
    steps: Annotated[int, typer.Option(help="Optimization steps (fewer if it stops improving).")] = 256,
    objective: Annotated[
        str, typer.Option(help="roi-mean, voxel-weighted, voxel, contrast or contrast-baseline.")
    ] = "roi-mean",
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.05,
    parametrization: Annotated[str, typer.Option(help="fourier or pixel.")] = "fourier",
    init: Annotated[
        str, typer.Option(help="grey, noise, or an image file to start every image from.")
    ] = "noise",
    diversity: Annotated[float, typer.Option(help="Weight pushing one target's images apart.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    display_size: Annotated[int | None, typer.Option(help="Side of the written PNGs in pixels.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images optimized together.")] = 32,
    also: Annotated[
        list[Path] | None,
        typer.Option(
            help="Another model to average with: another subject's, or one on another backbone; repeat."
        ),
    ] = None,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Synthesize images that the model predicts will drive the target ROIs or voxels."""
    from stimulus import EncodingModel
    from stimulus._torch import reuse_freed_memory
    from stimulus.images import file_sha256, load_image
    from stimulus.synthesis import SynthesisConfig, Target, check_models, synthesize, write_png

    reuse_freed_memory()

    targets = [Target(roi=name) for name in roi or []] + [Target(voxel=v) for v in voxel or []]
    if not targets:
        raise typer.BadParameter("name at least one target: --roi NAME or --voxel INDEX")
    config = SynthesisConfig(
        objective=choice(ObjectiveKind, objective, "--objective"),
        images_per_target=images,
        steps=steps,
        lr=lr,
        parametrization=choice(Parametrization, parametrization, "--parametrization"),
        init="grey" if init == "grey" else "noise",  # an image file is the start of every image
        diversity=diversity,
        batch_size=batch_size,
        seed=seed,
    )
    models = [EncodingModel.load(model_path, device=device)]
    models += [EncodingModel.load(path, device=device) for path in also or []]
    check_models(models, targets, config.objective)  # refuses unknown ROIs and voxels before any work
    start = None
    if init not in ("grey", "noise"):
        start = load_image(init, models[0].config.image_size)[None]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "synthesis.jsonl"
    extra = {
        "model": str(model_path),
        "model_sha256": models[0].file_sha256_,
        "averaged_with": [str(p) for p in also or []],
        "config": config.to_dict(),
        "init_image": None if start is None else init,
    }
    finished: list[dict[str, Any]] = []

    def keep(item: SynthesizedImage) -> None:
        path = write_png(item, out, display_size=display_size, extra=extra)
        record = {
            "file": path.name, "sha256": file_sha256(path), "target": item.target.label,
            "target_roi": item.target.roi, "target_voxel": item.target.voxel, "index": item.index,
            "objective": item.objective, "predicted": item.predicted, "steps": item.steps, "seed": item.seed,
        }  # fmt: skip
        _append_line(manifest, record)
        finished.append(record)

    with progress_bars(transient=json, label_width=12) as progress:
        task = progress.add_task("synthesis", total=len(targets) * images * steps)
        synthesize(
            models,
            targets,
            config,
            init_images=start,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            on_image=keep,
        )
    if json:
        print_json({"out": str(out), "images": finished})
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"{len(finished)} images in {out}")
    for column in ("file", "target", "objective", "predicted (target ROI)", "steps"):
        table.add_column(column, justify="left" if column in ("file", "target") else "right")
    for record in finished:
        own = record["predicted"].get(record["target_roi"]) if record["target_roi"] else None
        table.add_row(
            record["file"], record["target"], f"{record['objective']:.3g}",
            "-" if own is None else f"{own:.3g}", str(record["steps"]),
        )  # fmt: skip
    console.print(table)


def decode(
    model_path: ModelArg,
    responses: Annotated[
        Path, typer.Argument(help="Responses to decode: .npy (rows x voxels) or .npz with 'responses'.")
    ],
    out: OutOption,
    shown: Annotated[
        Path | None,
        typer.Option(help="Stimulus table of the images shown, one per row, to score the result."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Gradient steps.")] = 300,
    blur: Annotated[float, typer.Option(help="Sigma (pixels) of the Gaussian blur of the gradient.")] = 1.5,
    all_voxels: Annotated[
        bool, typer.Option(help="Use every voxel, not only those predicted above chance.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise.")] = 0,
    device: DeviceOption = None,
    json: JsonOption = False,
) -> None:
    """Decode images from voxel responses by inverting the encoding model."""
    from db.base import write_atomic, write_json
    from loop.cli._inputs import read_responses, read_stimulus_table
    from stimulus import EncodingModel, load_images
    from stimulus._torch import reuse_freed_memory
    from stimulus.decoding import DecodingConfig
    from stimulus.decoding import decode as decode_images
    from stimulus.synthesis import png_bytes

    reuse_freed_memory()

    model = EncodingModel.load(model_path, device=device)
    table = read_stimulus_table(shown) if shown is not None else None
    measured = read_responses(responses, None if table is None else len(table.paths))
    pictures = load_images(table.paths, model.config.image_size) if table is not None else None
    config = DecodingConfig(
        steps=steps, blur_sigma=blur, voxels="all" if all_voxels else "selected", seed=seed
    )
    with progress_bars(transient=json, label_width=12) as progress:
        task = progress.add_task("decoding", total=steps)
        result = decode_images(
            model, measured.values, config, shown=pictures,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )  # fmt: skip
    files = []
    for k, pixels in enumerate(result.images):
        path = out / f"decoded_{k:03d}.png"
        write_atomic(path, png_bytes(pixels))
        files.append(path.name)
    summary = {
        "model": str(model_path),
        "files": files,
        "final_loss": float(result.loss[-1]),
        "ssim": None if result.ssim is None else result.ssim.tolist(),
        "mse": None if result.mse is None else result.mse.tolist(),
        "identification": None if (found := result.identification) is None else {
            "ways": found.ways, "accuracy": found.accuracy, "chance": found.chance,
            "pairwise": found.pairwise, "p_value": found.p_value,
        },
    }  # fmt: skip
    write_json(out / "decoding.json", summary)
    if json:
        print_json(summary)
        return
    console.print(f"wrote {len(files)} decoded image(s) to {out} (final loss {summary['final_loss']:.3g})")
    if result.ssim is not None and result.mse is not None:
        console.print(f"against the shown images: median SSIM {np.median(result.ssim):.3f}, median MSE "
                      f"{np.median(result.mse):.4f}")  # fmt: skip
    if (found := result.identification) is not None:
        console.print(
            f"{found.ways}-way identification among the shown images: {found.accuracy:.0%} (chance "
            f"{found.chance:.0%}, permutation p {found.p_value:.3g}); pairwise {found.pairwise:.0%} "
            "(chance 50%)"
        )
