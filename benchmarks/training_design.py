"""Which natural images should the training run show? Random ones, or a set spread over feature space.

The first round's images start from the natural candidates that the model fitted on
the training run ranks best, so that model's screening sets how far the loop can get.
This asks, offline and in minutes, whether choosing the training run's images from a
larger pool would give a model that screens better, for the same scanner time.

For each seed, 1000 candidate natural images are described by the controller's own
backbone (Lite0 at the model's 96 px, reduced to 50 principal components). Three ways
choose 100 of them:

- ``random``: 100 at random (what a session does: its natural set is a random draw);
- ``kmeans``: the image nearest each centre of 100 k-means clusters (spread over the
  set, in proportion to where the images are);
- ``farthest``: greedy farthest-point sampling (spread to the edges of the set).

The virtual subject's true voxel responses to each chosen image, plus Gaussian noise of
``--noise`` times each voxel's spread across images, stand for the training run's
measurements (40 voxels per target ROI). A model fitted on them ranks 1000 unseen natural
images. Printed per way and ROI (mean over seeds and two noise draws): the correlation of
the model's ROI prediction with the truth, and the truth of its top 4 over the unseen
pool's best: what screening hands to the first round. The truth is used for scoring only.

    .venv/bin/python benchmarks/training_design.py [--seeds 0 1 2 8] [--noise 1.5]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import numpy.typing as npt
from PIL import Image

from loop.config import ModelConfig
from loop.simulation.subject import SubjectConfig, VirtualSubject
from loop.sweep.efficacy import POOL_SEED
from stimulus.encoding import EncodingModel
from stimulus.features import extract_features
from stimulus.images import resize_pixels
from stimulus.natural import natural_image_set

ROIS = ("V1", "V4", "LO", "FFA", "PPA")
VOXELS_PER_ROI = 40
CANDIDATES, CHOSEN, UNSEEN, TOP = 1000, 100, 1000, 4


def _resized(pixels: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    return np.stack([resize_pixels(p, size, resample=Image.Resampling.BILINEAR) for p in pixels])


def choices(z: npt.NDArray[np.float64], seed: int) -> dict[str, npt.NDArray[np.intp]]:
    """The three ways' ``CHOSEN`` indices into the rows of ``z`` (images x components)."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    km = KMeans(CHOSEN, n_init=3, random_state=seed).fit(z)
    nearest = [
        int(np.flatnonzero(km.labels_ == k)[np.argmin(((z[km.labels_ == k] - c) ** 2).sum(1))])
        for k, c in enumerate(km.cluster_centers_)
    ]
    farthest = [int(np.argmin(((z - z.mean(0)) ** 2).sum(1)))]
    distance = ((z - z[farthest[0]]) ** 2).sum(1)
    while len(farthest) < CHOSEN:
        k = int(np.argmax(distance))
        farthest.append(k)
        distance = np.minimum(distance, ((z - z[k]) ** 2).sum(1))
    return {
        "random": rng.choice(len(z), CHOSEN, replace=False),
        "kmeans": np.array(nearest),
        "farthest": np.array(farthest),
    }


def one_seed(seed: int, noise: float) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{way: {roi: [(r, top-4 truth over the unseen best) per noise draw]}}."""
    subject = VirtualSubject(SubjectConfig.from_spec("default", seed=seed))
    voxels = np.concatenate([subject.roi_voxels(r)[:VOXELS_PER_ROI] for r in ROIS])
    labels = np.repeat(ROIS, VOXELS_PER_ROI)
    candidates = natural_image_set(CANDIDATES, size=256, seed=seed).pixels
    unseen = natural_image_set(UNSEEN, size=256, seed=POOL_SEED + seed).pixels
    size = subject.config.image_size
    truth = subject.voxel_responses(_resized(candidates, size))[:, voxels]
    truth_unseen = subject.voxel_responses(_resized(unseen, size))[:, voxels]
    config = ModelConfig().encoding()
    small, small_unseen = _resized(candidates, config.image_size), _resized(unseen, config.image_size)
    raw = np.concatenate(extract_features(EncodingModel(config).extractor, small, standardized=False), axis=1)
    raw = (raw - raw.mean(0)) / (raw.std(0) + 1e-6)
    u, s, _ = np.linalg.svd(raw, full_matrices=False)
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for way, chosen in choices(u[:, :50] * s[:50], seed).items():
        for draw in range(2):
            measured = truth[chosen] + noise * truth.std(0) * np.random.default_rng([seed, draw]).normal(
                size=(CHOSEN, len(voxels))
            )
            model = EncodingModel(config).fit(small[chosen], measured, roi_labels=list(labels))
            predicted = model.predict(small_unseen)
            for roi in ROIS:
                p, t = predicted[:, labels == roi].mean(1), truth_unseen[:, labels == roi].mean(1)
                top = np.argsort(-p)[:TOP]
                pair = (float(np.corrcoef(p, t)[0, 1]), float(t[top].mean() / t.max()))
                out.setdefault(way, {}).setdefault(roi, []).append(pair)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 8])
    parser.add_argument("--noise", type=float, default=1.5, help="noise sd over each voxel's spread")
    args = parser.parse_args()
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for seed in args.seeds:
        start = time.perf_counter()
        for way, by_roi in one_seed(seed, args.noise).items():
            for roi, pairs in by_roi.items():
                results.setdefault(way, {}).setdefault(roi, []).extend(pairs)
        sys.stdout.write(f"seed {seed}: {time.perf_counter() - start:.0f} s\n")
        sys.stdout.flush()
    sys.stdout.write(
        f"\n{CHOSEN} of {CANDIDATES} training images, noise {args.noise:g}, seeds {args.seeds}: "
        f"r with the truth / truth of the top {TOP} over the unseen pool's best\n"
    )
    for way, by_roi in results.items():
        cells = "  ".join(
            f"{roi} {np.mean([p[0] for p in by_roi[roi]]):.3f}/{np.mean([p[1] for p in by_roi[roi]]):.3f}"
            for roi in ROIS
        )
        r, top = np.mean([[p[0], p[1]] for roi in ROIS for p in by_roi[roi]], axis=0)
        sys.stdout.write(f"{way:9} {cells}  mean {r:.3f}/{top:.3f}\n")


if __name__ == "__main__":
    main()
