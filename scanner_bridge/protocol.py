"""The wire protocol: signed multipart messages (see docs/protocol.md for the annotated format).

One message is one ZeroMQ multipart message::

    frame 0  b"cortexloop/1"               protocol tag
    frame 1  HMAC-SHA256, hex (ASCII)       signature; empty = unsigned (always dropped)
    frame 2  header, JSON (UTF-8)           {"id", "type", "session", "seq", "sent", "to", "version"}
    frame 3  content, JSON (UTF-8)          depends on the type
    frame 4+ raw buffers                    e.g. the volume's voxels

The signature covers the tag, header and content and the SHA-256 of every
buffer, each as an 8-byte big-endian length followed by its bytes, so no
bytes can move between frames without breaking it. It is checked with
``hmac.compare_digest``. Replays are refused by the receiver: every message
is addressed (``to``) to the nonce of one receiver's connection and carries a
sequence number that must grow for each sender session.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import os
import secrets
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scanner_bridge.errors import KeyFileError, ProtocolError, RejectReason
from scanner_bridge.volume import Volume

__all__ = [
    "PROTOCOL_TAG",
    "PROTOCOL_VERSION",
    "Message",
    "MessageType",
    "Signer",
    "buffer_digests",
    "decode",
    "encode",
    "generate_key_file",
    "load_key",
    "volume_from_wire",
    "volume_to_wire",
]

PROTOCOL_TAG = b"cortexloop/1"
PROTOCOL_VERSION = 1
KEY_BYTES = 32
MAX_JSON_BYTES = 1 << 20  # header and content each; volumes put their voxels in buffers
HEADER_FIELDS = ("id", "type", "session", "seq", "sent", "to", "version")
Frame = bytes | memoryview


class MessageType(enum.StrEnum):
    HELLO = "hello"  # receiver -> bridge: subscribe, heartbeat, ask for missed volumes
    STATUS = "status"  # bridge -> receiver: the bridge is alive; what it holds
    VOLUME = "volume"  # bridge -> receiver: one volume
    EVENT = "event"  # bridge -> receiver: something the operator should know (a bad file, a gap)
    # The presenter's channel (stimulus.present.channel) speaks the same protocol:
    PLAN = "plan"  # controller -> presenter: a run plan to arm
    COMMAND = "command"  # controller -> presenter: abort, quit, or send a run's log again
    TRIGGER = "trigger"  # simulated scanner -> presenter: one volume's sync pulse
    PRESENTATION = "presentation"  # presenter -> its peers: what happened on screen, as it happened


@dataclass(frozen=True)
class Message:
    """A verified message."""

    type: MessageType
    header: dict[str, Any]
    content: dict[str, Any]
    buffers: list[memoryview]


class Signer:
    """HMAC-SHA256 over the frames of a message, with a shared key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise KeyFileError(f"a signing key needs at least 16 bytes, got {len(key)}")
        self._key = key

    def signature(self, header: bytes, content: bytes, digests: Sequence[bytes]) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (PROTOCOL_TAG, header, content, *digests):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest().encode("ascii")

    def verify(self, signature: bytes, header: bytes, content: bytes, digests: Sequence[bytes]) -> bool:
        return hmac.compare_digest(signature, self.signature(header, content, digests))


def buffer_digests(buffers: Sequence[Frame]) -> list[bytes]:
    """SHA-256 of each buffer (the costly part of signing; compute once per volume)."""
    return [hashlib.sha256(b).digest() for b in buffers]


def _utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode(
    signer: Signer,
    msg_type: MessageType,
    content: dict[str, Any],
    buffers: Sequence[Frame] = (),
    *,
    session: str,
    seq: int,
    to: str = "",
    digests: Sequence[bytes] | None = None,
) -> list[Frame]:
    """The frames of one signed message (pass ``digests`` when the buffers' are known)."""
    header = {
        "id": uuid.uuid4().hex,
        "type": msg_type.value,
        "session": session,
        "seq": seq,
        "sent": _utc_now_iso(),
        "to": to,
        "version": PROTOCOL_VERSION,
    }
    header_b = json.dumps(header, separators=(",", ":")).encode()
    content_b = json.dumps(content, separators=(",", ":"), allow_nan=False).encode()
    if digests is None:
        digests = buffer_digests(buffers)
    return [PROTOCOL_TAG, signer.signature(header_b, content_b, digests), header_b, content_b, *buffers]


def decode(signer: Signer, frames: Sequence[Frame], *, max_bytes: int) -> Message:
    """Verify and parse one message; raise :class:`ProtocolError` naming the reason to drop it.

    Replays are not judged here (that needs the receiver's state); everything else is.
    """
    total = sum(len(f) for f in frames)
    if total > max_bytes:
        raise ProtocolError(RejectReason.OVERSIZED, f"{total} bytes; the limit is {max_bytes}")
    if len(frames) < 4:
        raise ProtocolError(RejectReason.TRUNCATED, f"{len(frames)} frames; a message has at least 4")
    tag, signature, header_b, content_b = (bytes(f) for f in frames[:4])
    if tag != PROTOCOL_TAG:
        raise ProtocolError(RejectReason.MALFORMED, f"protocol tag {tag[:32]!r}; expected {PROTOCOL_TAG!r}")
    if not signature:
        raise ProtocolError(RejectReason.UNSIGNED, "no signature")
    if len(header_b) > MAX_JSON_BYTES or len(content_b) > MAX_JSON_BYTES:
        raise ProtocolError(RejectReason.OVERSIZED, "JSON header or content over 1 MiB")
    views = [memoryview(b) for b in frames[4:]]
    if not signer.verify(signature, header_b, content_b, buffer_digests(views)):
        raise ProtocolError(RejectReason.FORGED, "signature does not match (wrong key, or altered)")
    try:
        header = json.loads(header_b)
        content = json.loads(content_b)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(RejectReason.MALFORMED, f"JSON does not parse ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(content, dict):
        raise ProtocolError(RejectReason.MALFORMED, "header and content must be JSON objects")
    if missing := [f for f in HEADER_FIELDS if f not in header]:
        raise ProtocolError(RejectReason.MALFORMED, f"header lacks {', '.join(missing)}")
    if header["version"] != PROTOCOL_VERSION:
        raise ProtocolError(
            RejectReason.UNSUPPORTED,
            f"protocol version {header['version']!r}; this side speaks {PROTOCOL_VERSION}",
        )
    try:
        msg_type = MessageType(header["type"])
    except ValueError:
        raise ProtocolError(RejectReason.UNSUPPORTED, f"message type {header['type']!r}") from None
    if not isinstance(header["seq"], int) or isinstance(header["seq"], bool):
        raise ProtocolError(RejectReason.MALFORMED, f"sequence number {header['seq']!r} is not an integer")
    return Message(msg_type, header, content, views)


# --- key files -------------------------------------------------------------------------------------

KEY_FILE_HEADER = "# cortexloop shared key: keep it secret, mode 0600, same file on both computers\n"


def generate_key_file(path: Path | str) -> Path:
    """Write a new random key to ``path`` with mode 0600; never overwrite an existing file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists; a new key would lock out everything using the old one. "
            "Delete it first if that is what you want."
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(KEY_FILE_HEADER + secrets.token_hex(KEY_BYTES) + "\n")
    os.chmod(path, 0o600)  # in case the umask interfered
    return path


def load_key(path: Path | str) -> bytes:
    """Read a key file, refusing one that others can read."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} does not exist; make one with `cortexloop bridge keygen {path}`"
        ) from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        key = bytes.fromhex(lines[0]) if len(lines) == 1 else b""
    except ValueError:
        key = b""
    if len(key) < 16:
        raise KeyFileError(
            f"key file {path} does not hold one hex key of at least 16 bytes; "
            f"make a new one with `cortexloop bridge keygen`"
        )
    return key


# --- volumes on the wire ---------------------------------------------------------------------------

# Numeric dtypes a volume may have on the wire (numpy ``dtype.str``: byte order, kind, item size).
WIRE_DTYPES = frozenset(
    np.dtype(t).newbyteorder(o).str
    for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")
    for o in ("<", ">")
) | {"|u1", "|i1"}


def volume_to_wire(volume: Volume) -> tuple[dict[str, Any], list[Frame]]:
    """The content and buffer of a volume message (no copy: Fortran-ordered data go as they are)."""
    data = volume.data
    order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
    if not (data.flags.c_contiguous or data.flags.f_contiguous):
        data = np.ascontiguousarray(data)
    content = {
        "index": volume.index,
        "series": volume.series,
        "shape": list(volume.shape),
        "dtype": data.dtype.str,
        "order": order,
        "affine": volume.affine.tolist(),
        "tr_s": volume.tr_s,
        "acquisition_time": volume.acquisition_time,
        "source": volume.source,
        "stamps": volume.stamps,
    }
    return content, [data.reshape(-1, order="A").data.cast("B")]


def volume_from_wire(message: Message) -> Volume:
    """The volume in a verified volume message; :class:`ProtocolError` if the content is inconsistent."""
    c = message.content
    try:
        index, shape, dtype = c["index"], c["shape"], np.dtype(c["dtype"])
        affine = np.array(c["affine"], dtype=np.float64)
        order, stamps = c["order"], {str(k): float(v) for k, v in c["stamps"].items()}
        tr_s = None if c["tr_s"] is None else float(c["tr_s"])
        series, source, acquisition_time = str(c["series"]), str(c["source"]), c["acquisition_time"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(RejectReason.MALFORMED, f"volume content is incomplete ({exc!r})") from exc
    if not (isinstance(index, int) and index >= 0):
        raise ProtocolError(RejectReason.MALFORMED, f"volume index {index!r} is not a non-negative integer")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise ProtocolError(RejectReason.MALFORMED, f"volume {index} shape {shape!r} is not 3 positive sizes")
    if dtype.str not in WIRE_DTYPES or order not in ("C", "F"):
        raise ProtocolError(RejectReason.MALFORMED, f"volume {index} dtype {dtype.str!r} / order {order!r}")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ProtocolError(RejectReason.MALFORMED, f"volume {index} affine is not a finite 4x4 matrix")
    if len(message.buffers) != 1:
        raise ProtocolError(RejectReason.TRUNCATED, f"volume {index} has {len(message.buffers)} buffers; 1")
    expected = int(np.prod(shape)) * dtype.itemsize
    got = message.buffers[0].nbytes
    if got != expected:
        reason = RejectReason.TRUNCATED if got < expected else RejectReason.MALFORMED
        raise ProtocolError(reason, f"volume {index} buffer has {got} bytes; shape and dtype need {expected}")
    data = np.frombuffer(message.buffers[0], dtype=dtype).reshape(shape, order=order)
    return Volume(
        index=index,
        data=data,
        affine=affine,
        series=series,
        tr_s=tr_s,
        source=source,
        acquisition_time=None if acquisition_time is None else str(acquisition_time),
        stamps=stamps,
    )
