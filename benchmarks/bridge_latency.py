"""Latency of the scanner bridge: from a volume file's close to the volume in the consumer's hands.

A writer process closes NIfTI volume files at a steady rate, one into each of
two watched directories in turn. Two pipelines run side by side, at the same
time, each on its own directory, so that whatever else the machine does touches
both alike:

- cortexloop: ``cortexloop bridge watch`` in its own process (inotify read by the watcher,
  complete-file check, NIfTI parse, run consistency, SHA-256 + HMAC signing,
  spool) -> ZeroMQ -> :class:`scanner_bridge.VolumeReceiver` in this process
  (verification, replay check, index ordering).
- floor: a bare inotify watch (ctypes, IN_CLOSE_WRITE) in its own process that
  reads the file and sends its bytes on a ZeroMQ PUSH socket -> PULL in a
  process of its own. No parsing, no signing, no ordering: what any bridge has
  to pay at least.

Latency is the receiving process's time minus the writer's time just after
``close()``, both ``time.time()`` on one machine. Prints median, p99 and max per
pipeline and size, and the ratio cortexloop / floor.

    .venv/bin/python benchmarks/bridge_latency.py [--count 500] [--interval-ms 50]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import zmq

from scanner_bridge import ReceiverConfig, VolumeReceiver, generate_key_file, load_key
from scanner_bridge.writers import nifti_bytes

SIZES = {"64x64x36 int16": (64, 64, 36), "104x104x72 int16 (multiband)": (104, 104, 72)}
IN_CLOSE_WRITE = 0x00000008
WARMUP = 10


def writer(
    directories: list[str], shape: tuple[int, int, int], count: int, interval_s: float, out: Connection
) -> None:
    """Close ``count`` volume files into each of ``directories`` in turn; send back their close times."""
    rng = np.random.default_rng(0)
    payloads = [
        nifti_bytes(rng.integers(0, 2000, size=shape, dtype=np.int16), np.eye(4), tr_s=interval_s)
        for _ in range(8)
    ]
    out.recv()  # go
    closed: list[list[float]] = [[] for _ in directories]
    next_t = time.monotonic()
    for i in range(count):
        for directory, times in zip(directories, closed, strict=True):
            next_t += interval_s / len(directories)  # each directory gets one every interval_s
            time.sleep(max(0.0, next_t - time.monotonic()))
            with open(os.path.join(directory, f"vol_{i:05d}.nii"), "wb") as f:
                f.write(payloads[i % len(payloads)])
            times.append(time.time())
    out.send(closed)


def bare_forwarder(directory: str, endpoint: str, ready: Connection) -> None:
    """The floor: inotify IN_CLOSE_WRITE -> read the file -> ZeroMQ PUSH, nothing else."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init()
    libc.inotify_add_watch(fd, directory.encode(), IN_CLOSE_WRITE)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(endpoint)
    ready.send(True)
    while True:
        buffer = os.read(fd, 65536)
        offset = 0
        while offset < len(buffer):
            _wd, _mask, _cookie, length = struct.unpack_from("iIII", buffer, offset)
            name = buffer[offset + 16 : offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            with open(os.path.join(directory, name.decode()), "rb") as f:
                data = f.read()
            push.send_multipart([name, data], copy=False)


def floor_receiver(endpoint: str, count: int, out: Connection) -> None:
    """The floor's consumer: the arrival time of each of ``count`` volumes, by index."""
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(endpoint)
    out.send(True)  # bound
    received: dict[int, float] = {}
    while len(received) < count:
        name, data = pull.recv_multipart()
        received[int(name[4:9])] = time.time()
        assert len(data) > 0
    out.send(received)


def run_side_by_side(
    work: Path, shape: tuple[int, int, int], count: int, interval_s: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Both pipelines at once, fed in turn: cortexloop's latencies and stages, and the floor's latencies."""
    export, floor_export = work / f"export-cortexloop-{shape[2]}", work / f"export-floor-{shape[2]}"
    export.mkdir()
    floor_export.mkdir()
    key_file = generate_key_file(work / f"key-{shape[2]}")
    endpoint = f"ipc://{work}/bridge-{shape[2]}.sock"
    cli = str(Path(sys.executable).with_name("cortexloop"))
    bridge = subprocess.Popen(
        [
            cli,
            "--log-level",
            "warning",
            "bridge",
            "watch",
            str(export),
            "--endpoint",
            endpoint,
            "--key-file",
            str(key_file),
            "--spool",
            str(work / f"spool-{shape[2]}"),
        ],
    )
    floor_endpoint = f"ipc://{work}/floor-{shape[2]}.sock"
    floor_results, floor_results_theirs = mp.Pipe()
    consumer = mp.Process(
        target=floor_receiver, args=(floor_endpoint, count, floor_results_theirs), daemon=True
    )
    consumer.start()
    floor_results.recv()  # bound
    ready_mine, ready_theirs = mp.Pipe()
    forwarder = mp.Process(
        target=bare_forwarder, args=(str(floor_export), floor_endpoint, ready_theirs), daemon=True
    )
    forwarder.start()
    ready_mine.recv()
    receiver = VolumeReceiver(endpoint, load_key(key_file), config=ReceiverConfig(default_tr_s=interval_s))
    try:
        time.sleep(1.5)  # the bridge starts and the receiver joins
        mine, theirs = mp.Pipe()
        process = mp.Process(
            target=writer,
            args=([str(export), str(floor_export)], shape, count, interval_s, theirs),
            daemon=True,
        )
        process.start()
        mine.send(True)
        received: dict[int, float] = {}
        stages: dict[str, list[float]] = {
            "seen-written": [],
            "read-seen": [],
            "sent-read": [],
            "received-sent": [],
        }
        while len(received) < count:
            arrival = receiver.get(timeout_s=30)
            volume = arrival.volume
            if volume is None:
                raise RuntimeError(f"volume {arrival.index} missing in the benchmark")
            received[volume.index] = volume.stamps["received"]
            for name in stages:
                end, start = name.split("-")
                stages[name].append((volume.stamps[end] - volume.stamps[start]) * 1000)
        closed, floor_closed = mine.recv()
        floor_received = floor_results.recv()
        process.join()
    finally:
        receiver.close()
        forwarder.terminate()
        consumer.terminate()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=20)
    latency = np.array([(received[i] - closed[i]) * 1000 for i in range(count)])[WARMUP:]
    floor = np.array([(floor_received[i] - floor_closed[i]) * 1000 for i in range(count)])[WARMUP:]
    return {"total": latency, **{k: np.array(v[WARMUP:]) for k, v in stages.items()}}, floor


def _fmt(ms: np.ndarray) -> str:
    return f"median {np.median(ms):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms   max {ms.max():6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500, help="volumes per size and pipeline (default 500)")
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=50.0,
        help="time between volumes to each pipeline (default 50)",
    )
    args = parser.parse_args()
    interval_s = args.interval_ms / 1000
    sys.stdout.write(
        f"bridge latency, file close -> consumer, {args.count} volumes each, both pipelines at once, "
        f"one volume every {args.interval_ms:g} ms to each (files to each in turn), first {WARMUP} dropped "
        f"({os.cpu_count()} CPUs)\n"
    )
    with tempfile.TemporaryDirectory(prefix="cortexloop-bench-") as tmp:
        work = Path(tmp)
        for label, shape in SIZES.items():
            ours, floor = run_side_by_side(work, shape, args.count, interval_s)
            sys.stdout.write(f"\n{label}, {np.prod(shape) * 2 / 1e6:.2f} MB per volume\n")
            sys.stdout.write(f"  cortexloop  {_fmt(ours['total'])}\n")
            sys.stdout.write(f"  floor       {_fmt(floor)}\n")
            sys.stdout.write(
                f"  ratio       median {np.median(ours['total']) / np.median(floor):.2f}x   "
                f"p99 {np.percentile(ours['total'], 99) / np.percentile(floor, 99):.2f}x\n"
            )
            stages = "   ".join(
                f"{k} {np.median(v):.2f}/{np.percentile(v, 99):.2f}" for k, v in ours.items() if k != "total"
            )
            sys.stdout.write(f"  cortexloop stages (median/p99 ms): {stages}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
