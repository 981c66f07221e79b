"""Reading the files scanners write: NIfTI-1/2, DICOM single slices, Siemens mosaics, enhanced DICOM.

:func:`read_part` reads one file completely or raises. A file that is not all
there yet raises :class:`IncompleteVolumeError`; the watcher retries it until
its deadline. A file holds either a whole volume (NIfTI, a mosaic, an enhanced
multi-frame file) or one slice of one (classic single-slice DICOM); slices are
put together by :class:`SliceAssembler`.

Every reader returns data in the voxel layout dcm2niix writes (first axis along
the image columns, second along the rows from the bottom up, third along the
slices) with an RAS+ affine, so a volume read from DICOM here and the NIfTI
dcm2niix makes of the same file hold the same array.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
from nibabel.volumeutils import apply_read_scaling
from pydicom.dataset import Dataset

from db.base import read_regular
from scanner_bridge.errors import DuplicateSliceError, IncompleteVolumeError, VolumeReadError
from scanner_bridge.volume import Volume

with warnings.catch_warnings():
    # nibabel.nicom warns on import about its DICOM wrappers; only its CSA header parser is used here.
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

__all__ = ["FilePart", "SliceAssembler", "VolumeFiles", "is_volume_file", "read_part"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
ENHANCED_MR_SOP = "1.2.840.10008.5.1.4.1.1.4.1"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _check_stack(parts: list[FilePart]) -> None:
    """Raise :class:`VolumeReadError` unless ``parts`` stack into one volume: one orientation, even steps.

    A tri-plane localizer's three slices, or a radial one's, share an acquisition number but are no volume.
    """
    first = parts[0]
    what = f"the {len(parts)} slices of acquisition {first.number} of series {first.series}"
    for part in parts[1:]:
        if not np.allclose(part.affine[:3, :2], first.affine[:3, :2], atol=1e-3):
            raise VolumeReadError(
                f"{what} do not stack into a volume: {part.path} is oriented otherwise than {first.path} "
                "(a localizer's slices in several planes?); not passed on"
            )
    if len(parts) > 2:
        steps = np.diff([p.affine[:3, 3] for p in parts], axis=0)
        if not np.allclose(steps, steps.mean(axis=0), atol=0.01):
            gaps = ", ".join(f"{float(np.linalg.norm(step)):.3g}" for step in steps)
            raise VolumeReadError(
                f"{what} are not evenly spaced (steps of {gaps} mm); not passed on as a volume"
            )


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class FilePart:
    """What one file holds: a whole volume, or one slice of one.

    Parameters
    ----------
    path : str
        The file.
    series : str
        Series key: DICOM ``SeriesNumber/SeriesInstanceUID``, or the NIfTI file
        name with its volume number replaced by ``#``.
    number : int
        The file's own volume counter: DICOM ``AcquisitionNumber`` (else
        ``InstanceNumber``), or the number in a NIfTI file name.
    data : ndarray of shape (nx, ny, nz)
        Voxel values (one slice: ``nz == 1``).
    affine : ndarray of shape (4, 4)
        Voxel to RAS+ millimetres.
    slices_per_volume : int or None
        For a single-slice DICOM file, how many slices make its volume
        (``ImagesInAcquisition``); None when the file is a whole volume.
    slice_position_mm : float
        A single slice's position along the slice normal (for sorting).
    """

    path: str
    series: str
    number: int
    data: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    tr_s: float | None = None
    acquisition_time: str | None = None
    slices_per_volume: int | None = None
    slice_position_mm: float = 0.0

    @property
    def is_slice(self) -> bool:
        return self.slices_per_volume is not None

    def as_volume(self, index: int, stamps: dict[str, float]) -> Volume:
        """The whole volume this part holds, as volume ``index`` of its run."""
        return Volume(
            index=index,
            data=self.data,
            affine=self.affine,
            series=self.series,
            tr_s=self.tr_s,
            source=self.path,
            acquisition_time=self.acquisition_time,
            stamps=stamps,
        )


def is_volume_file(path: Path | str) -> bool:
    """Whether the name looks like a volume file (hidden and temporary files are not)."""
    name = Path(path).name.lower()
    if name.startswith(".") or name.endswith((".tmp", ".part", "~")):
        return False
    return name.endswith(NIFTI_SUFFIXES + DICOM_SUFFIXES) or "." not in name


def read_part(
    path: Path | str, raw: bytes | None = None, *, slices_per_volume: int | None = None
) -> FilePart:
    """Read one file completely.

    Parameters
    ----------
    path : path
        The file. Its name decides the format: ``.nii``/``.nii.gz`` are NIfTI,
        anything else is read as DICOM.
    raw : bytes, optional
        The file's bytes, if already read.
    slices_per_volume : int, optional
        For single-slice DICOM that does not record ``ImagesInAcquisition``.

    Raises
    ------
    IncompleteVolumeError
        The file is shorter than its header says, or cannot be parsed yet.
    VolumeReadError
        The file can never be a volume (a 4D file, no volume number, no pixels...).
    """
    path = Path(path)
    if raw is None:
        raw = read_regular_file(path)
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            return _read_nifti(path, raw)
        return _read_dicom(path, raw, slices_per_volume)
    except VolumeReadError:
        raise
    except Exception as exc:  # whatever a hostile or damaged file makes a parser raise: this file's error
        raise VolumeReadError(
            f"{path} cannot be read as a volume ({type(exc).__name__}: {exc})"[:500]
        ) from exc


def read_regular_file(path: Path | str, max_bytes: int = 1 << 30) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``; :class:`VolumeReadError` otherwise.

    A symbolic link is not followed, and a FIFO or a device is not read (it
    could block, or never end).
    """
    try:
        return read_regular(path, max_bytes=max_bytes, follow_links=False)
    except FileNotFoundError as exc:
        raise VolumeReadError(f"{path} disappeared before it could be read") from exc
    except OSError as exc:
        raise VolumeReadError(f"cannot read {path}: {exc.strerror or exc}") from exc


# --- NIfTI -----------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def nifti_series_and_number(name: str) -> tuple[str, int]:
    """``vol_00017.nii.gz`` -> (``vol_#####.nii.gz``, 17): the series is the name without its number."""
    match = _NUMBER.search(name)
    if match is None:
        raise VolumeReadError(
            f"NIfTI file name {name!r} has no volume number; name volume files like vol_00000.nii"
        )
    digits = match.group(1)
    return name[: match.start()] + "#" * len(digits) + name[match.end() :], int(digits)


def _read_nifti(path: Path, raw: bytes) -> FilePart:
    series, number = nifti_series_and_number(path.name)
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise IncompleteVolumeError(f"{path} is not a complete gzip stream yet ({exc})") from exc
    if len(raw) < 348:
        raise IncompleteVolumeError(f"{path} has {len(raw)} bytes, less than a NIfTI header")
    image_class: type[nib.Nifti1Image] | type[nib.Nifti2Image]
    sizeof_hdr = int.from_bytes(raw[:4], "little")
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(raw[:4], "big")
    if sizeof_hdr == 348:
        image_class = nib.Nifti1Image
    elif sizeof_hdr == 540:
        image_class = nib.Nifti2Image
    else:
        raise VolumeReadError(f"{path} is not NIfTI-1 or NIfTI-2 (header size field {sizeof_hdr})")
    if len(raw) < sizeof_hdr:
        raise IncompleteVolumeError(f"{path} has {len(raw)} bytes, less than its {sizeof_hdr}-byte header")
    if sizeof_hdr == 348 and (plain := _plain_nifti1(path, raw)) is not None:
        data, affine, tr_s = plain
        return FilePart(path=str(path), series=series, number=number, data=data, affine=affine, tr_s=tr_s)
    try:
        header = image_class.header_class.from_fileobj(io.BytesIO(raw), check=True)
    except Exception as exc:  # nibabel raises several types for a bad header
        raise VolumeReadError(f"{path}: not a valid NIfTI header ({exc})") from exc
    shape = header.get_data_shape()
    needed = int(header["vox_offset"]) + math.prod(shape) * header.get_data_dtype().itemsize
    if len(raw) < needed:
        raise IncompleteVolumeError(f"{path} has {len(raw)} of its {needed} bytes")
    if len(shape) > 3 and math.prod(shape[3:]) != 1:
        raise VolumeReadError(
            f"{path} holds {math.prod(shape[3:])} volumes {shape}; the export directory takes one volume "
            "per file. Feed a 4D file with `cortexloop bridge replay`."
        )
    if len(shape) < 3:
        shape = (*shape, *([1] * (3 - len(shape))))
    # Straight from the bytes (nibabel's image classes would parse the header again);
    # scaling exactly as nibabel's array proxy applies it.
    dtype = header.get_data_dtype()
    raw_data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape[:3]), offset=int(header["vox_offset"]))
    slope, inter = header.get_slope_inter()
    data = apply_read_scaling(raw_data.reshape(shape[:3], order="F"), slope, inter)
    return FilePart(
        path=str(path),
        series=series,
        number=number,
        data=data,
        affine=np.asarray(header.get_best_affine(), dtype=np.float64),
        tr_s=_nifti_tr_s(path, header),
    )


# What a scanner's real-time export writes: NIfTI-1 in one file, native byte order, sform set, one
# volume of plain voxels. Read from a view of the header's bytes: on the latency path, nibabel's header
# object costs about ten times as much. Anything else goes through nibabel.
_NIFTI1 = nib.nifti1.header_dtype
_PLAIN_DTYPES = {  # NIfTI datatype codes
    2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16,
}  # fmt: skip
_TIME_UNITS = {"msec": 1e-3, "usec": 1e-6}  # seconds for any other time unit


def _plain_nifti1(
    path: Path, raw: bytes
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64], float | None] | None:
    """The data, affine and TR of a plain NIfTI-1 volume, exactly as nibabel reads them; None if not plain."""
    h = np.frombuffer(raw, dtype=_NIFTI1, count=1)[0]
    dim, code = h["dim"], int(h["datatype"])
    dtype = _PLAIN_DTYPES.get(code)
    slope, inter = float(h["scl_slope"]), float(h["scl_inter"])
    if (
        h["sizeof_hdr"] != 348  # in the other byte order
        or h["magic"] != b"n+1"
        or dtype is None
        or int(h["bitpix"]) != 8 * np.dtype(dtype).itemsize
        or not 3 <= dim[0] <= 4
        or (dim[0] == 4 and dim[4] != 1)
        or not all(0 < n < 1 << 15 for n in dim[1:4])
        or not h["vox_offset"] >= 352
        or h["sform_code"] <= 0
        or (math.isfinite(slope) and slope != 0.0 and (slope, inter) != (1.0, 0.0))  # scaled: nibabel's
    ):
        return None
    affine = np.eye(4)
    affine[0], affine[1], affine[2] = h["srow_x"], h["srow_y"], h["srow_z"]
    if not np.isfinite(affine).all():
        return None
    shape = (int(dim[1]), int(dim[2]), int(dim[3]))
    offset = int(h["vox_offset"])
    needed = offset + math.prod(shape) * np.dtype(dtype).itemsize
    if len(raw) < needed:
        raise IncompleteVolumeError(f"{path} has {len(raw)} of its {needed} bytes")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape, order="F")
    return data, affine, _nifti_tr_s(path, h)


def _nifti_tr_s(path: Path, header: Any) -> float | None:
    """The TR in seconds from a NIfTI header's fields (nibabel's header, or a view of its bytes).

    A unit code NIfTI does not define is this file's error: its TR could be in any unit.
    """
    units = int(header["xyzt_units"])
    space, time_code = units % 8, units - units % 8  # split as nibabel's get_xyzt_units splits them
    codes = nib.nifti1.unit_codes
    if space not in codes.code or time_code not in codes.code:
        raise VolumeReadError(
            f"{path}: its NIfTI xyzt_units field is {units}, not a unit code NIfTI defines, so its TR's "
            "unit is unknown; fix the scanner's export settings (seconds or milliseconds)"
        )
    tr = float(header["pixdim"][4])
    return tr * _TIME_UNITS.get(str(codes.label[time_code]), 1.0) if tr > 0 else None


# --- DICOM -----------------------------------------------------------------------------------------


def _read_dicom(path: Path, raw: bytes, slices_per_volume: int | None) -> FilePart:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vendors' odd values; what we need is checked below
            ds = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:  # pydicom raises many types for a partial file
        raise IncompleteVolumeError(f"{path} is not a complete DICOM file yet ({exc})") from exc
    if "PixelData" not in ds:
        raise VolumeReadError(f"{path} is DICOM without pixel data (a report or a localizer header?)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian).is_compressed is False:
        expected = int(ds.Rows) * int(ds.Columns) * frames * int(ds.BitsAllocated) // 8
        expected *= int(ds.get("SamplesPerPixel", 1))
        if len(ds.PixelData) < expected:
            raise IncompleteVolumeError(f"{path} has {len(ds.PixelData)} of its {expected} pixel bytes")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise VolumeReadError(
            f"{path}: cannot decode its pixels ({exc}); export uncompressed DICOM "
            f"(transfer syntax {ds.file_meta.get('TransferSyntaxUID', 'unknown')})"
        ) from exc
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeReadError(f"{path} is a colour image, not an MR volume")
    common: dict[str, Any] = {
        "path": str(path),
        "series": f"{ds.get('SeriesNumber', '?')}/{ds.get('SeriesInstanceUID', 'unknown')}",
        "number": _dicom_number(ds),
        "tr_s": _dicom_tr_s(ds),
        "acquisition_time": _dicom_time(ds),
    }
    if frames > 1 or ds.get("SOPClassUID") == ENHANCED_MR_SOP:
        data, affine = _enhanced(path, ds, pixels.reshape(frames, *pixels.shape[-2:]))
        return FilePart(data=data, affine=affine, **common)
    csa = _csa_image_header(ds)
    mosaic = "MOSAIC" in [str(t).upper() for t in ds.get("ImageType", [])]
    if mosaic or (csa is not None and csareader.get_n_mosaic(csa)):
        data, affine = _mosaic(path, ds, pixels, csa)
        return FilePart(data=data, affine=affine, **common)
    return _single_slice(path, ds, pixels, slices_per_volume, common)


def _csa_image_header(ds: Dataset) -> dict[str, Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header: dict[str, Any] | None = csareader.get_csa_header(ds, "image")
    except csareader.CSAReadError:
        return None
    return header


def _dicom_number(ds: Dataset) -> int:
    for keyword in ("AcquisitionNumber", "InstanceNumber"):
        value = ds.get(keyword)
        if value not in (None, ""):
            return int(value)
    raise VolumeReadError("DICOM file has neither AcquisitionNumber nor InstanceNumber")


def _dicom_tr_s(ds: Dataset) -> float | None:
    tr = ds.get("RepetitionTime")
    if tr is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        timing = shared[0].get("MRTimingAndRelatedParametersSequence") if shared else None
        tr = timing[0].get("RepetitionTime") if timing else None
    return float(tr) / 1000.0 if tr not in (None, "") and float(tr) > 0 else None


def _dicom_time(ds: Dataset) -> str | None:
    stamp = ds.get("AcquisitionDateTime")
    if not stamp:
        date, time_ = ds.get("AcquisitionDate"), ds.get("AcquisitionTime")
        if not (date and time_):
            return None
        stamp = f"{date}{time_}"
    s = str(stamp)
    if len(s) < 14 or not s[:14].isdigit():
        return None
    frac = s[14:].split("+")[0].split("-")[0]
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:14]}{frac}"


def _rescaled(ds: Dataset, pixels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    inter = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and inter == 0:
        return pixels
    return pixels * slope + inter


def _floats(value: Any, n: int, what: str, path: Path) -> npt.NDArray[np.float64]:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(f"{path}: {what} is missing or not numeric ({value!r})") from exc
    if arr.shape != (n,):
        raise VolumeReadError(f"{path}: {what} has {arr.size} values; expected {n}")
    return arr


def _affine(
    orientation: npt.NDArray[np.floating[Any]],
    spacing_rc: npt.NDArray[np.floating[Any]],
    first_position: npt.NDArray[np.floating[Any]],
    slice_step: npt.NDArray[np.floating[Any]],
    n_rows: int,
) -> npt.NDArray[np.float64]:
    """RAS affine of the dcm2niix layout (i = column, j = rows bottom-up, k = slice).

    DICOM puts pixel (r, c) of a slice at ``IPP + c * dc * row_cos + r * dr * col_cos``
    (LPS); the layout flips rows, so j = n_rows - 1 - r.
    """
    row_cos, col_cos = orientation[:3], orientation[3:]
    dr, dc = spacing_rc
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc
    lps[:3, 1] = -col_cos * dr
    lps[:3, 2] = slice_step
    lps[:3, 3] = first_position + (n_rows - 1) * dr * col_cos
    ras = np.eye(4)
    ras[:3] = LPS_TO_RAS @ lps[:3]
    return ras


def _layout(slice_rc: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One slice as stored (rows, columns) -> (columns, rows bottom-up)."""
    return slice_rc.T[:, ::-1]


def _slice_spacing(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _single_slice(
    path: Path, ds: Dataset, pixels: npt.NDArray[Any], slices_per_volume: int | None, common: dict[str, Any]
) -> FilePart:
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    position = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
    spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)
    normal = np.cross(orientation[:3], orientation[3:])
    n_slices = ds.get("ImagesInAcquisition") or slices_per_volume
    if n_slices in (None, ""):
        raise VolumeReadError(
            f"{path} is one slice of a volume but does not say how many slices make one "
            "(no ImagesInAcquisition); give the bridge --slices-per-volume N"
        )
    data = _layout(_rescaled(ds, pixels))[:, :, None]
    affine = _affine(orientation, spacing, position, normal * _slice_spacing(ds), int(ds.Rows))
    return FilePart(
        data=data,
        affine=affine,
        slices_per_volume=int(n_slices),
        slice_position_mm=float(position @ normal),
        **common,
    )


def _mosaic(
    path: Path, ds: Dataset, pixels: npt.NDArray[Any], csa: dict[str, Any] | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    n_slices = csareader.get_n_mosaic(csa) if csa else None
    if not n_slices:
        raise VolumeReadError(f"{path} is a Siemens mosaic without NumberOfImagesInMosaic in its CSA header")
    n_slices = int(n_slices)
    tiles = math.ceil(math.sqrt(n_slices))
    rows_m, cols_m = pixels.shape
    rows, cols = rows_m // tiles, cols_m // tiles
    data = np.empty((cols, rows, n_slices), dtype=pixels.dtype)
    for k in range(n_slices):
        r0, c0 = (k // tiles) * rows, (k % tiles) * cols
        data[:, :, k] = _layout(pixels[r0 : r0 + rows, c0 : c0 + cols])
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)
    normal = csareader.get_slice_normal(csa)
    normal = np.cross(orientation[:3], orientation[3:]) if normal is None else np.asarray(normal, float)
    # A mosaic's ImagePositionPatient is the corner of the whole mosaic image, not of slice 0.
    position = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
    position = (
        position
        + orientation[:3] * spacing[1] * (cols_m - cols) / 2
        + orientation[3:] * spacing[0] * (rows_m - rows) / 2
    )
    affine = _affine(orientation, spacing, position, normal * _slice_spacing(ds), rows)
    return _rescaled(ds, data), affine


def _enhanced(
    path: Path, ds: Dataset, frames: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != len(frames):
        raise VolumeReadError(f"{path}: enhanced DICOM without one functional group per frame")

    def group(i: int, sequence: str) -> Dataset:
        found = per_frame[i].get(sequence) or shared.get(sequence)
        if not found:
            raise VolumeReadError(f"{path}: frame {i} has no {sequence}")
        item: Dataset = found[0]
        return item

    orientation = _floats(
        group(0, "PlaneOrientationSequence").ImageOrientationPatient, 6, "ImageOrientationPatient", path
    )
    measures = group(0, "PixelMeasuresSequence")
    spacing = _floats(measures.PixelSpacing, 2, "PixelSpacing", path)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [
            _floats(group(i, "PlanePositionSequence").ImagePositionPatient, 3, "ImagePositionPatient", path)
            for i in range(len(frames))
        ]
    )
    along = positions @ normal
    if len(np.unique(np.round(along, 3))) != len(frames):
        raise VolumeReadError(
            f"{path} holds {len(frames)} frames at {len(np.unique(np.round(along, 3)))} slice positions: "
            "more than one volume per file. Feed it with `cortexloop bridge replay`."
        )
    order = np.argsort(along, kind="stable")
    scaled = []
    for i in order:
        transform = per_frame[i].get("PixelValueTransformationSequence") or shared.get(
            "PixelValueTransformationSequence"
        )
        scaled.append(_rescaled(transform[0], frames[i]) if transform else _rescaled(ds, frames[i]))
    data = np.stack([_layout(s) for s in scaled], axis=2)
    step = (
        (positions[order[-1]] - positions[order[0]]) / (len(frames) - 1)
        if len(frames) > 1
        else normal * float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 1.0)
    )
    return data, _affine(orientation, spacing, positions[order[0]], step, frames.shape[1])


def read_volume(paths: Sequence[Path | str]) -> FilePart:
    """One whole volume from its file, or from all its single-slice DICOM files."""
    assembler = SliceAssembler()
    for path in paths:
        part = read_part(path)
        whole = part if not part.is_slice else assembler.add(part)
        if whole is not None:
            return whole
    raise VolumeReadError(
        f"{len(paths)} file(s) from {paths[0] if paths else '?'} do not make a whole volume"
    )


class VolumeFiles:
    """Whole volumes by any one of their files, as a run's record names each volume by one file.

    A NIfTI file, a mosaic or an enhanced DICOM file holds its volume. A
    single-slice DICOM file brings the other slices of its volume: those of
    its folder with the same series and acquisition, found by reading each
    folder's DICOM headers once (not their pixels).
    """

    def __init__(self) -> None:
        self._groups: dict[Path, dict[tuple[str, int], list[Path]]] = {}

    def __call__(self, path: Path | str) -> FilePart:
        """The whole volume ``path`` is a file of; :class:`VolumeReadError` if it cannot be made whole."""
        path = Path(path)
        part = read_part(path)
        if not part.is_slice:
            return part
        if path.parent not in self._groups:
            self._groups[path.parent] = self._index(path.parent)
        siblings = self._groups[path.parent].get((part.series, part.number), [path])
        return read_volume(siblings)

    def arrays(self, path: Path | str) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
        """The whole volume ``path`` is a file of, as (data (x, y, z), affine): the export's reader."""
        part = self(path)
        return part.data, part.affine

    @staticmethod
    def _index(folder: Path) -> dict[tuple[str, int], list[Path]]:
        groups: dict[tuple[str, int], list[Path]] = {}
        for entry in sorted(folder.iterdir()):
            if not entry.is_file() or entry.name.lower().endswith(NIFTI_SUFFIXES):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(entry, stop_before_pixels=True)
                key = (
                    f"{ds.get('SeriesNumber', '?')}/{ds.get('SeriesInstanceUID', 'unknown')}",
                    _dicom_number(ds),
                )
            except Exception:  # not DICOM, or a header without a volume number: not a slice of a run
                continue
            groups.setdefault(key, []).append(entry)
        return groups


class SliceAssembler:
    """Puts single-slice DICOM files together into volumes.

    ``add`` returns the whole volume as a :class:`FilePart` once its last slice
    arrives, and None until then. A slice at a position already held is a
    duplicate and raises :class:`VolumeReadError`.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], dict[float, FilePart]] = {}

    def add(self, part: FilePart) -> FilePart | None:
        key = (part.series, part.number)
        slices = self._pending.setdefault(key, {})
        position = round(part.slice_position_mm, 3)
        if position in slices:
            raise DuplicateSliceError(
                f"{part.path} repeats the slice at {position} mm of acquisition {part.number} "
                f"(first read from {slices[position].path}); kept the first"
            )
        slices[position] = part
        if part.slices_per_volume is None or len(slices) < part.slices_per_volume:
            return None
        del self._pending[key]
        _check_stack([slices[p] for p in sorted(slices)])
        # Named by the slice that completed it: that file's time stamps the volume as written, and is
        # the one a later check for a rewrite looks at.
        return dataclasses.replace(self._assemble([slices[p] for p in sorted(slices)]), path=part.path)

    def waiting(self) -> list[tuple[str, int, int, int]]:
        """Volumes still short of slices: (series, number, slices held, slices needed)."""
        return [
            (series, number, len(s), next(iter(s.values())).slices_per_volume or 0)
            for (series, number), s in self._pending.items()
        ]

    def discard(self, series: str, number: int) -> list[str]:
        """Forget a volume's slices (given up on); return their paths."""
        return [p.path for p in self._pending.pop((series, number), {}).values()]

    @staticmethod
    def _assemble(parts: Iterable[FilePart]) -> FilePart:
        parts = list(parts)
        first = parts[0]
        affine = first.affine.copy()
        if len(parts) > 1:
            # Column 2 of the single-slice affine is normal * thickness; the real step is between slices.
            step_ras = (parts[-1].affine[:3, 3] - first.affine[:3, 3]) / (len(parts) - 1)
            affine[:3, 2] = step_ras
        data = np.concatenate([p.data for p in parts], axis=2)
        return dataclasses.replace(first, data=data, affine=affine, slices_per_volume=None)
