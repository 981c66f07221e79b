"""Synthesis speed: optimization steps per second against a bare forward/backward loop.

Usage: python benchmarks/synthesis.py [--steps N] [--sizes 128,224] [--batches 1,8,32]
                                      [--round-steps 256] [--skip-round]

For each image size and batch size, in one process on the same model:

- synthesis: ``stimulus.synthesis.synthesize`` with the defaults (Fourier
  parametrization, random affine transforms, Adam, early stopping off); the
  median time between two steps, from its progress callback, so set-up and
  the final evaluation do not count;
- the floor: a bare loop of forward and backward passes through the same
  backbone, feature reductions and readout, on a pixel tensor of the same
  batch, with nothing else (median step time).

Each is measured ``--repeats`` times, alternating, and the medians are
compared. The ratio is the overhead of everything synthesis adds (parametrization,
transforms, objective, optimizer, bookkeeping). Target: under 15 %. Then a
session's step (20 images optimized at display size, the model at 96 px)
with the backbone's convolutions channels-last, as loaded, and contiguous,
alternating, as a ratio. Then the time of a full round, 5 ROIs x 4 images x
256 steps at 224 pixels.

The process keeps freed memory for reuse (``reuse_freed_memory``), as the
``synth`` command does; without it, large CPU batches spend much of each step
in page faults, and vary from run to run.

The models are fitted here on 48 natural crops and random responses (speed
does not depend on what the voxels mean).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from loop.software import describe
from stimulus import EncodingConfig, EncodingModel, natural_crops
from stimulus._torch import reuse_freed_memory
from stimulus.synthesis import SynthesisConfig, Target, build_readout, synthesize

ROIS = ("V1", "V2", "V4", "FFA", "PPA")


def _model(size: int, device: str) -> EncodingModel:
    rng = np.random.default_rng(0)
    responses = rng.standard_normal((48, len(ROIS) * 20))
    labels = [roi for roi in ROIS for _ in range(20)]
    config = EncodingConfig(image_size=size, layerwise=False, n_permutations=10)
    return EncodingModel(config, device=device).fit(
        natural_crops(48, size=size), responses, roi_labels=labels
    )


def _synthesis_step_s(
    model: EncodingModel, batch: int, warm: int, steps: int, image_size: int | None = None
) -> float:
    """Median time of one synthesis step, from the progress callback's timestamps."""
    stamps: list[float] = []
    config = SynthesisConfig(
        images_per_target=batch, steps=warm + steps, batch_size=batch, patience=10**6, image_size=image_size
    )
    synthesize(
        model, [Target(roi="V1")], config, progress=lambda done, total: stamps.append(time.perf_counter())
    )
    return float(np.median(np.diff(stamps[warm - 1 : warm + steps])))


def _bare_step_s(model: EncodingModel, batch: int, warm: int, steps: int, device: str) -> float:
    """Median time of one forward and backward pass through the same backbone and readout."""
    readout = build_readout([model], [Target(roi="V1")], "roi-mean").to(torch.device(device))
    extractor = model.extractor
    size = model.config.image_size
    pixels = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    times = []
    for _ in range(warm + steps):
        start = time.perf_counter()
        outputs = torch.cat(extractor.raw(pixels), dim=1) @ readout.coef + readout.intercept
        torch.autograd.grad(outputs[:, -1].sum(), pixels)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[warm:]))


def _memory_formats(device: str, args: argparse.Namespace) -> None:
    """A session's step (20 images at 256 px, the model at 96 px): channels-last, as loaded, and contiguous.

    The backbone loads channels-last (``load_backbone``): the same values to float rounding, and a
    session's later rounds follow rounding, so the default's sessions were measured again when it was
    adopted (README, "Does the closed loop control?").
    """
    model = _model(96, device)
    module = model.extractor.backbone.module
    times: dict[str, list[float]] = {"channels-last": [], "contiguous": []}
    for _ in range(args.repeats):
        for name, memory_format in (
            ("channels-last", torch.channels_last),
            ("contiguous", torch.contiguous_format),
        ):
            module.to(memory_format=memory_format)  # type: ignore[call-overload]
            times[name].append(_synthesis_step_s(model, 20, args.warm, args.steps, image_size=256))
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as loaded
    last, plain = (float(np.median(times[k])) for k in ("channels-last", "contiguous"))
    print(
        f"a session's step (20 images at 256 px, model at 96 px): channels-last {1000 * last:.0f} ms, "
        f"contiguous {1000 * plain:.0f} ms; channels-last / contiguous {last / plain:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per measurement (48 / batch at least)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each, median")
    parser.add_argument("--warm", type=int, default=2, help="untimed steps first")
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--round-steps", type=int, default=256)
    parser.add_argument("--skip-round", action="store_true")
    args = parser.parse_args(argv)
    out = sys.stdout
    print(f"machine: {describe()}", file=out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kept = reuse_freed_memory()  # as the synth command does
    print(
        f"synthesis on efficientnet-lite0, device {device}, {torch.get_num_threads()} threads, "
        f"glibc keeps freed memory: {kept}",
        file=out,
    )
    print(
        f"{'size':>5} {'batch':>5} {'synthesis steps/s':>18} {'bare steps/s':>13} {'overhead':>9}  images/s",
        file=out,
    )
    models = {}
    for size in (int(s) for s in args.sizes.split(",")):
        models[size] = model = _model(size, device)
        for batch in (int(b) for b in args.batches.split(",")):
            # Alternate the two, several times: large batches on a CPU vary with the allocator's mood.
            synthesis_s, bare_s = [], []
            steps = max(args.steps, 48 // batch)  # small batches: more steps, the timings are short
            for _ in range(args.repeats):
                synthesis_s.append(_synthesis_step_s(model, batch, args.warm, steps))
                bare_s.append(_bare_step_s(model, batch, args.warm, steps, device))
            rate, floor = 1 / float(np.median(synthesis_s)), 1 / float(np.median(bare_s))
            print(
                f"{size:>5} {batch:>5} {rate:>18.2f} {floor:>13.2f} {100 * (floor / rate - 1):>8.1f}%  "
                f"{rate * batch:.1f}",
                file=out,
            )
    _memory_formats(device, args)
    if args.skip_round:
        return
    model = models.get(224) or _model(224, device)
    config = SynthesisConfig(images_per_target=4, steps=args.round_steps, patience=10**6)
    start = time.perf_counter()
    synthesize(model, [Target(roi=roi) for roi in ROIS], config)
    elapsed = time.perf_counter() - start
    print(
        f"full round: {len(ROIS)} ROIs x 4 images x {args.round_steps} steps at 224 px: {elapsed:.1f} s "
        f"({elapsed / 60:.1f} min; early stopping off)",
        file=out,
    )


if __name__ == "__main__":
    main()
