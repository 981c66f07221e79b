"""Writing volumes as a scanner's real-time export would: one NIfTI file, or DICOM slice files.

Used by replay and the simulated scanner. Each function returns the bytes of
the file(s), so the caller decides how they reach the disk (all at once, in
slow chunks, renamed into place).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

__all__ = ["dicom_file_name", "dicom_slice_files", "nifti_bytes"]

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def nifti_bytes(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    *,
    tr_s: float | None,
    slope: float | None = None,
    inter: float | None = None,
) -> bytes:
    """One NIfTI-1 file holding a 3D volume (raw ``data`` with optional scaling, as the source had it)."""
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    if tr_s:
        zooms = header.get_zooms()[:3]
        header["pixdim"][4] = tr_s
        header.set_zooms(zooms)
    if slope is not None:
        header.set_slope_inter(slope, inter or 0.0)
    image.set_sform(affine, code="scanner")
    image.set_qform(affine, code="scanner")
    raw: bytes = image.to_bytes()
    return raw


def _ds_text(value: float) -> str:
    """A decimal string that fits DICOM's 16-character DS."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def _as_int16(data: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int16], float, float]:
    """Data DICOM can store (16-bit integers) and the rescale slope and intercept that restore them."""
    if data.dtype.kind in "iu":
        info = np.iinfo(np.int16)
        if data.size == 0 or (data.min() >= info.min and data.max() <= info.max):
            return data.astype(np.int16), 1.0, 0.0
    lo, hi = float(np.min(data)), float(np.max(data))
    slope = (hi - lo) / 65534.0 if hi > lo else 1.0
    inter = lo + 32767.0 * slope
    return np.round((data - inter) / slope).astype(np.int16), slope, inter


def dicom_file_name(series_number: int, acquisition: int, slice_number: int) -> str:
    """The file name of one slice, as the simulated scanner and the replays write it."""
    return f"{series_number:03d}_{acquisition:06d}_{slice_number:03d}.dcm"


def dicom_slice_files(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    *,
    acquisition: int,
    tr_s: float | None,
    series_uid: str,
    series_number: int = 1,
    slope: float | None = None,
    inter: float | None = None,
) -> list[tuple[str, bytes]]:
    """One volume as classic single-slice MR DICOM files: [(file name, bytes), ...].

    Parameters
    ----------
    data : ndarray of shape (nx, ny, nz)
        In cortexloop's (dcm2niix's) voxel layout; raw values if ``slope`` is given.
    affine : ndarray of shape (4, 4)
        Voxel to RAS+ millimetres.
    acquisition : int
        The DICOM AcquisitionNumber (1 for a run's first volume).
    """
    if slope is not None:
        raw, slope_, inter_ = data.astype(np.int16), slope, inter or 0.0
    else:
        raw, slope_, inter_ = _as_int16(data)
    lps = LPS_FROM_RAS @ affine[:3]
    dc, dr = float(np.linalg.norm(lps[:, 0])), float(np.linalg.norm(lps[:, 1]))
    row_cos, col_cos = lps[:, 0] / dc, -lps[:, 1] / dr
    n_rows, n_slices = raw.shape[1], raw.shape[2]
    now = dt.datetime.now()
    files = []
    for k in range(n_slices):
        position = lps[:, 3] + k * lps[:, 2] - (n_rows - 1) * dr * col_cos
        pixels = np.ascontiguousarray(raw[:, ::-1, k].T)
        ds = _slice_dataset(pixels, series_uid=series_uid, series_number=series_number)
        ds.AcquisitionNumber = acquisition
        ds.InstanceNumber = (acquisition - 1) * n_slices + k + 1
        ds.ImagesInAcquisition = n_slices
        ds.ImagePositionPatient = [_ds_text(v) for v in position]
        ds.ImageOrientationPatient = [_ds_text(v) for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [_ds_text(dr), _ds_text(dc)]
        thickness = _ds_text(float(np.linalg.norm(lps[:, 2])))
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = thickness
        ds.RescaleSlope, ds.RescaleIntercept = _ds_text(slope_), _ds_text(inter_)
        if tr_s:
            ds.RepetitionTime = _ds_text(tr_s * 1000.0)
        ds.AcquisitionDate = now.strftime("%Y%m%d")
        ds.AcquisitionTime = now.strftime("%H%M%S.%f")
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        files.append((dicom_file_name(series_number, acquisition, k + 1), buffer.getvalue()))
    return files


def _slice_dataset(pixels: npt.NDArray[np.int16], *, series_uid: str, series_number: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName = "cortexloop^replay"
    ds.PatientID = "cortexloop-replay"
    ds.StudyInstanceUID = series_uid.rsplit(".", 1)[0] + ".1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = series_uid.rsplit(".", 1)[0] + ".2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "FMRI", "NONE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds
