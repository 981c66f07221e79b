"""Latency of the scanner bridge: from a volume file's close to the volume in the consumer's hands.

A writer process closes NIfTI volume files into a watched directory at a steady
rate. Two pipelines run side by side on the same files, one after the other for
each volume size:

- cortexloop: ``cortexloop bridge watch`` in its own process (watchdog inotify,
  complete-file check, NIfTI parse, run consistency, SHA-256 + HMAC signing,
  spool) -> ZeroMQ -> :class:`scanner_bridge.VolumeReceiver` in this process
  (verification, replay check, index ordering).
- floor: a bare inotify watch (ctypes, IN_CLOSE_WRITE) in its own process that
  reads the file and sends its bytes on a ZeroMQ PUSH socket -> PULL here. No
  parsing, no signing, no ordering: what any bridge has to pay at least.

Latency is this process's receive time minus the writer's time just after
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
    directory: str, shape: tuple[int, int, int], count: int, interval_s: float, out: Connection
) -> None:
    """Close ``count`` volume files into ``directory``; send back the time after each close."""
    rng = np.random.default_rng(0)
    payloads = [
        nifti_bytes(rng.integers(0, 2000, size=shape, dtype=np.int16), np.eye(4), tr_s=interval_s)
        for _ in range(8)
    ]
    out.recv()  # go
    closed = []
    next_t = time.monotonic()
    for i in range(count):
        next_t += interval_s
        time.sleep(max(0.0, next_t - time.monotonic()))
        with open(os.path.join(directory, f"vol_{i:05d}.nii"), "wb") as f:
            f.write(payloads[i % len(payloads)])
        closed.append(time.time())
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


def _start_writer(directory: Path, shape: tuple[int, int, int], count: int, interval_s: float):
    mine, theirs = mp.Pipe()
    process = mp.Process(target=writer, args=(str(directory), shape, count, interval_s, theirs), daemon=True)
    process.start()
    return process, mine


def run_cortexloop(
    work: Path, shape: tuple[int, int, int], count: int, interval_s: float
) -> dict[str, np.ndarray]:
    export = work / f"export-cortexloop-{shape[2]}"
    export.mkdir()
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
    receiver = VolumeReceiver(endpoint, load_key(key_file), config=ReceiverConfig(default_tr_s=interval_s))
    try:
        time.sleep(1.5)  # the bridge starts and the receiver joins
        process, pipe = _start_writer(export, shape, count, interval_s)
        pipe.send(True)
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
        closed = pipe.recv()
        process.join()
    finally:
        receiver.close()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=20)
    latency = np.array([(received[i] - closed[i]) * 1000 for i in range(count)])[WARMUP:]
    return {"total": latency, **{k: np.array(v[WARMUP:]) for k, v in stages.items()}}


def run_floor(work: Path, shape: tuple[int, int, int], count: int, interval_s: float) -> np.ndarray:
    export = work / f"export-floor-{shape[2]}"
    export.mkdir()
    pull = zmq.Context.instance().socket(zmq.PULL)
    endpoint = f"ipc://{work}/floor-{shape[2]}.sock"
    pull.bind(endpoint)
    ready_mine, ready_theirs = mp.Pipe()
    forwarder = mp.Process(target=bare_forwarder, args=(str(export), endpoint, ready_theirs), daemon=True)
    forwarder.start()
    ready_mine.recv()
    try:
        process, pipe = _start_writer(export, shape, count, interval_s)
        pipe.send(True)
        received: dict[int, float] = {}
        while len(received) < count:
            name, data = pull.recv_multipart()
            received[int(name[4:9])] = time.time()
            assert len(data) > 0
        closed = pipe.recv()
        process.join()
    finally:
        forwarder.terminate()
        pull.close(linger=0)
    return np.array([(received[i] - closed[i]) * 1000 for i in range(count)])[WARMUP:]


def _fmt(ms: np.ndarray) -> str:
    return f"median {np.median(ms):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms   max {ms.max():6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500, help="volumes per size and pipeline (default 500)")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="time between volumes (default 50)")
    args = parser.parse_args()
    interval_s = args.interval_ms / 1000
    sys.stdout.write(
        f"bridge latency, file close -> consumer, {args.count} volumes each, one every "
        f"{args.interval_ms:g} ms, first {WARMUP} dropped ({os.cpu_count()} CPUs)\n"
    )
    with tempfile.TemporaryDirectory(prefix="cortexloop-bench-") as tmp:
        work = Path(tmp)
        for label, shape in SIZES.items():
            ours = run_cortexloop(work, shape, args.count, interval_s)
            floor = run_floor(work, shape, args.count, interval_s)
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
