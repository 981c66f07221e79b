"""Settings of the bridge's parts: one frozen, keyword-only dataclass per concern."""

from __future__ import annotations

import dataclasses
import math

from db.base import ConfigError

__all__ = ["DEFAULT_AE_TITLE", "DEFAULT_PORT", "PublisherConfig", "ReceiverConfig", "WatchConfig"]

DEFAULT_PORT = 11112  # the DICOM node's: the port DICOM assigns to DICOM over TCP without TLS
DEFAULT_AE_TITLE = "CORTEXLOOP"


def _positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{type(owner).__name__}.{name} must be a positive number, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """How the export directory is watched and its files read.

    Parameters
    ----------
    polling : bool
        Scan the directory every ``poll_interval_s`` instead of waiting for
        inotify events (network shares deliver none).
    poll_interval_s : float
        Scan period in polling mode.
    rescan_interval_s : float
        In event mode, a full scan this often catches anything an event missed.
    incomplete_timeout_s : float
        How long a file that does not parse is retried before it is reported.
    retry_interval_s : float
        How often an incomplete file is retried.
    series : str or None
        Follow this series only; None: the first series that appears after start.
    nifti_first_number, dicom_first_number : int
        The number the run's first volume has: NIfTI file names usually count
        from 0 (``vol_00000.nii``), DICOM acquisitions from 1.
    slices_per_volume : int or None
        For single-slice DICOM without ``ImagesInAcquisition``.
    max_file_bytes : int
        A larger file is not read (a volume of 128 x 128 x 64 float64 is 8 MiB).
    """

    polling: bool = False
    poll_interval_s: float = 0.05
    rescan_interval_s: float = 1.0
    incomplete_timeout_s: float = 5.0
    retry_interval_s: float = 0.02
    series: str | None = None
    nifti_first_number: int = 0
    dicom_first_number: int = 1
    slices_per_volume: int | None = None
    max_file_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        _positive(self, "poll_interval_s", "rescan_interval_s", "incomplete_timeout_s", "retry_interval_s")
        _positive(self, "max_file_bytes")
        if self.slices_per_volume is not None and self.slices_per_volume < 1:
            raise ConfigError(f"WatchConfig.slices_per_volume must be >= 1, got {self.slices_per_volume}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """How the bridge serves its subscribers.

    Parameters
    ----------
    subscriber_timeout_s : float
        A subscriber not heard from for this long is forgotten (it re-joins
        with its next heartbeat and asks for what it missed).
    max_subscribers : int
        More are refused (a misconfigured client in a loop must not exhaust the bridge).
    resend_interval_s : float
        A volume asked for again within this time is not sent twice.
    """

    subscriber_timeout_s: float = 10.0
    max_subscribers: int = 16
    resend_interval_s: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "subscriber_timeout_s", "max_subscribers", "resend_interval_s")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """How the consumer orders volumes and decides one is missing.

    Parameters
    ----------
    missing_after_trs : float
        A volume is declared missing this many TRs after it was due, once a
        later volume shows that the run went on. It is still delivered (as
        late) if it comes afterwards.
    default_tr_s : float
        The TR until a volume states one.
    heartbeat_s : float
        How often the receiver tells the bridge it is there and what it lacks.
    bridge_silent_s : float
        Warn when the bridge has not answered for this long.
    max_message_bytes : int
        Larger messages are dropped (``oversized``).
    """

    missing_after_trs: float = 2.0
    default_tr_s: float = 2.0
    heartbeat_s: float = 0.5
    bridge_silent_s: float = 5.0
    max_message_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        _positive(self, "missing_after_trs", "default_tr_s", "heartbeat_s", "bridge_silent_s")
        _positive(self, "max_message_bytes")
