"""A session writer run as a separate process by the durability tests.

Usage: python writer.py DB_PATH N_VOLUMES

Records one run of N_VOLUMES volumes with 20 ROI signals each, one commit
per volume, and prints each volume's index on stdout once its commit returned.
"""

from __future__ import annotations

import sys

from db import RoiSpec, RunKind, SessionKind, SessionRecorder, open_database

ROI_NAMES = [f"roi{i:02d}" for i in range(20)]


def main(path: str, n_volumes: int) -> None:
    with open_database(path, create=True) as database:
        recorder = SessionRecorder.start(
            database,
            subject="01",
            session="01",
            kind=SessionKind.SIMULATION,
            rois=[RoiSpec(name=name) for name in ROI_NAMES],
        )
        run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=1.0)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        for index in range(n_volumes):
            signals = {name: float(index * 100 + j) for j, name in enumerate(ROI_NAMES)}
            recorder.record_volume(run_id, index, roi_signals=signals)
            sys.stdout.write(f"{index}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
