"""Presentation timing: actual minus planned onsets over a 60-trial run in a PsychoPy window.

Usage: python benchmarks/presentation_timing.py [--trials 60] [--soa 0.75] [--duration 0.5]

Runs a plan of natural images through ``present_run`` and ``PsychoPyDisplay``
and prints the measured refresh rate, the median, 99th percentile and maximum
of actual minus planned onset, and the dropped frames. Side by side, a bare
PsychoPy loop (draw the image and flip when its time comes, nothing else)
gives the reference for the same window, and the ratio of the two p99s.

Without a display it starts a virtual one (Xvfb, depth 24). Xvfb has no
vsync: these figures guard against regressions of the run loop; they say
nothing about a real display's timing. Measure on the stimulus computer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from stimulus import natural_crops
from stimulus.present import PlannedTrial, RunPlan, VirtualTriggers, present_run


def _summary(errors_ms: list[float]) -> str:
    values = np.asarray(errors_ms)
    return (
        f"median {np.median(values):+.2f} ms, p99 |error| {np.percentile(np.abs(values), 99):.2f} ms, "
        f"max |error| {np.abs(values).max():.2f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--soa", type=float, default=0.75, help="seconds between onsets")
    parser.add_argument("--duration", type=float, default=0.5, help="seconds on screen")
    args = parser.parse_args(argv)
    out = sys.stdout
    virtual = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display as VirtualScreen

        virtual = VirtualScreen(visible=False, size=(1024, 768), color_depth=24)
        virtual.start()
    from stimulus.present.window import PsychoPyDisplay

    try:
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            pictures = (natural_crops(args.trials, size=128, seed=1).transpose(0, 2, 3, 1) * 255).astype(
                np.uint8
            )
            trials = []
            for k, picture in enumerate(pictures):
                path = root / f"{k:03d}.png"
                Image.fromarray(picture).save(path)
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                trials.append(PlannedTrial(stimulus=path.name, sha256=sha, onset_s=1.0 + args.soa * k,
                                           duration_s=args.duration))  # fmt: skip
            n_volumes = int(np.ceil((trials[-1].onset_s + args.duration + 1.0) / 2.0))
            plan = RunPlan(run_id="timing", tr_s=2.0, n_volumes=n_volumes, trials=tuple(trials))
            display = PsychoPyDisplay(size=(800, 600), image_size=256)
            try:
                clock = display.clock
                triggers = VirtualTriggers(clock, plan.tr_s, plan.n_volumes, first_at=clock.now() + 0.5)
                log = present_run(plan, display, triggers, clock, images=plan.load_images(root))
                # The reference: draw each image and flip once its time has come, nothing else.
                first = clock.now() + 0.5
                bare = []
                for trial in plan.trials:
                    clock.sleep_until(first + trial.onset_s - 0.5 / display.refresh_hz)
                    display.draw_stimulus(trial.stimulus)
                    bare.append(1e3 * (display.flip() - first - trial.onset_s))
                    display.draw_fixation(plan.fixation.colour)
                    display.flip()
            finally:
                display.close()
    finally:
        if virtual is not None:
            virtual.stop()
    errors = [r.onset_error_ms for r in log.trials if r.onset_error_ms is not None]
    print(f"presentation timing: {len(errors)} of {args.trials} trials shown, {args.soa} s apart", file=out)
    print(f"measured refresh rate: {log.refresh_hz:.1f} Hz", file=out)
    print(f"cortexloop run loop: {_summary(errors)}; dropped frames {log.dropped_frames}", file=out)
    print(f"bare PsychoPy loop:  {_summary(bare)}", file=out)
    ratio = np.percentile(np.abs(errors), 99) / max(np.percentile(np.abs(bare), 99), 1e-9)
    print(f"p99 |error| ratio (run loop / bare): {ratio:.2f}", file=out)
    where = "a virtual display (Xvfb) started here" if virtual else f"display {os.environ.get('DISPLAY')}"
    print(
        f"note: measured on {where}. Xvfb has no vsync, so its refresh rate and dropped frames are "
        "artefacts and these figures only guard against regressions of the run loop; on the stimulus "
        "computer's real display they are the figures to check.",
        file=out,
    )


if __name__ == "__main__":
    main()
