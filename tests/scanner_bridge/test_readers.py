"""Readers: complete files only, clear errors, and the same arrays as dcm2niix."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from scanner_bridge import (
    BridgeEvent,
    DirectoryWatcher,
    EventCode,
    IncompleteVolumeError,
    VolumeReadError,
    WatchConfig,
)
from scanner_bridge.readers import SliceAssembler, read_part
from scanner_bridge.writers import dicom_slice_files, nifti_bytes

NICOM_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"


def _dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    """Convert with dcm2niix (the field's reference) and load its one output image."""
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    out.mkdir()
    subprocess.run(
        [exe, "-z", "n", "-f", "ref", "-o", str(out), str(folder)], check=True, capture_output=True
    )
    (image_path,) = out.glob("ref*.nii")
    return nib.load(image_path)


def _with_random_pixels(
    source: Path, dest: Path, rng: np.random.Generator, *, strip_private: bool = False
) -> None:
    """A vendor's file with its real header, and pixels that make a wrong layout show."""
    raw = source.read_bytes()
    ds = pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(gzip.decompress(raw) if source.suffix == ".gz" else raw)
    )
    # Philips' private scale tags make dcm2niix apply its vendor-specific scaling; the standard
    # rescale slope/intercept is what scanners' real-time exports carry.
    if strip_private:
        ds.remove_private_tags()
    frames = int(ds.get("NumberOfFrames", 1))
    pixels = rng.integers(0, 4000, size=(frames, ds.Rows, ds.Columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)


def test_siemens_mosaic_reads_like_dcm2niix(tmp_path: Path, rng: np.random.Generator) -> None:
    _with_random_pixels(NICOM_DATA / "siemens_dwi_0.dcm.gz", tmp_path / "in" / "mosaic.dcm", rng)
    part = read_part(tmp_path / "in" / "mosaic.dcm")
    ref = _dcm2niix(tmp_path / "in", tmp_path / "out")
    assert part.data.shape == ref.shape == (128, 128, 48)
    np.testing.assert_array_equal(part.data, ref.get_fdata())
    np.testing.assert_allclose(part.affine, ref.affine, atol=1e-3)


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"]
)
def test_pydicom_single_slices_read_like_dcm2niix(tmp_path: Path, name: str) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(PYDICOM_DATA / name, tmp_path / "in" / name)
    part = read_part(tmp_path / "in" / name, slices_per_volume=1)
    ref = _dcm2niix(tmp_path / "in", tmp_path / "out")
    np.testing.assert_array_equal(part.data, ref.get_fdata().reshape(part.data.shape))
    np.testing.assert_allclose(part.affine, ref.affine, atol=1e-3)
    assert part.data.std() > 100  # a real image, so a flipped or transposed layout would fail


def test_slices_written_by_replay_assemble_like_dcm2niix(tmp_path: Path, functional_run) -> None:
    (tmp_path / "in").mkdir()
    files = dicom_slice_files(
        functional_run.raw[..., 0],
        functional_run.affine,
        acquisition=1,
        tr_s=2.0,
        series_uid=pydicom.uid.generate_uid(),
        slope=functional_run.slope,
        inter=functional_run.inter,
    )
    for name, data in files:
        (tmp_path / "in" / name).write_bytes(data)
    assembler = SliceAssembler()
    volume = None
    for name, _ in reversed(files):  # arrival order must not matter
        volume = assembler.add(read_part(tmp_path / "in" / name)) or volume
    assert volume is not None
    ref = _dcm2niix(tmp_path / "in", tmp_path / "out")
    np.testing.assert_allclose(volume.data, ref.get_fdata(), rtol=1e-9)
    np.testing.assert_allclose(volume.affine, ref.affine, atol=1e-3)
    np.testing.assert_allclose(volume.data, functional_run.values(0), rtol=1e-9)
    np.testing.assert_allclose(volume.affine, functional_run.affine, atol=1e-6)


def test_enhanced_multiframe_matches_dcm2niix_voxel_for_voxel(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # dcm2niix turns 3D (non-EPI) acquisitions to another axis order, so compare the same voxels
    # at the same places: both images brought to the closest RAS orientation.
    _with_random_pixels(
        NICOM_DATA / "philips_mprage.dcm.gz", tmp_path / "in" / "enhanced.dcm", rng, strip_private=True
    )
    part = read_part(tmp_path / "in" / "enhanced.dcm")
    ref = nib.as_closest_canonical(_dcm2niix(tmp_path / "in", tmp_path / "out"))
    ours = nib.as_closest_canonical(nib.Nifti1Image(part.data.astype(np.float64), part.affine))
    # dcm2niix keeps the rescale slope as a float32 header field.
    np.testing.assert_allclose(ours.get_fdata(), ref.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)


def test_truncated_dicom_is_incomplete(tmp_path: Path) -> None:
    raw = (PYDICOM_DATA / "MR_small.dcm").read_bytes()
    path = tmp_path / "slice.dcm"
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(IncompleteVolumeError, match=r"pixel bytes|not a complete DICOM"):
        read_part(path, slices_per_volume=1)


def test_slice_without_slice_count_says_what_to_do(tmp_path: Path) -> None:
    shutil.copy(PYDICOM_DATA / "MR_small.dcm", tmp_path / "slice.dcm")
    with pytest.raises(VolumeReadError, match="--slices-per-volume"):
        read_part(tmp_path / "slice.dcm")


def test_partial_nifti_is_incomplete_until_all_bytes_are_there(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    data = rng.integers(0, 1000, size=(8, 9, 5), dtype=np.int16)
    raw = nifti_bytes(data, np.eye(4), tr_s=1.5)
    path = tmp_path / "vol_00003.nii"
    for cut in (100, 348, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(IncompleteVolumeError):
            read_part(path)
    path.write_bytes(raw)
    part = read_part(path)
    np.testing.assert_array_equal(part.data, data)
    assert (part.number, part.series, part.tr_s) == (3, "vol_#####.nii", 1.5)


@pytest.mark.parametrize(
    ("dtype", "units", "scaling"),
    [
        ("<i2", "sec", None),  # what exports write: read without nibabel's header object
        ("<u2", "msec", (1.0, 0.0)),
        ("<f4", "usec", (float("nan"), 7.0)),  # NaN slope: no scaling, whatever the intercept
        ("<i2", "sec", (0.5, 10.0)),  # scaled: through nibabel
        ("<i4", "sec", (1.0, 3.0)),
        (">i2", "sec", None),  # a big-endian file: through nibabel
    ],
)
def test_nifti_volumes_read_as_nibabel_reads_them(
    tmp_path: Path, rng: np.random.Generator, dtype: str, units: str, scaling: tuple[float, float] | None
) -> None:
    affine = np.eye(4)
    affine[:3] = rng.normal(size=(3, 4)) * [1, 1, 1, 40]
    header = nib.Nifti1Header(endianness=dtype[0])
    image = nib.Nifti1Image(rng.integers(0, 200, size=(7, 6, 5)).astype(dtype), affine, header=header)
    image.header.set_xyzt_units("mm", units)
    image.header["pixdim"][4] = 1500.0
    image.set_sform(affine, code="scanner")
    image.set_qform(np.eye(4), code="aligned")  # a different qform: the sform is the one read
    if scaling is not None:
        image.header["scl_slope"], image.header["scl_inter"] = scaling
    path = tmp_path / "vol_00004.nii"
    path.write_bytes(image.to_bytes())
    part, reference = read_part(path), nib.load(path)
    np.testing.assert_array_equal(part.data, np.asanyarray(reference.dataobj))
    assert part.data.dtype == np.asanyarray(reference.dataobj).dtype
    np.testing.assert_array_equal(part.affine, reference.affine)
    assert part.tr_s == pytest.approx(1500.0 * {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}[units])


def test_partial_gzip_nifti_is_incomplete(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = gzip.compress(nifti_bytes(rng.normal(size=(6, 6, 4)), np.eye(4), tr_s=2.0))
    path = tmp_path / "vol_00000.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IncompleteVolumeError, match="gzip"):
        read_part(path)


def test_nifti2_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti2Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "vol_00001.nii")
    part = read_part(tmp_path / "vol_00001.nii")
    np.testing.assert_array_equal(part.data, data)


def test_4d_file_in_the_export_directory_is_refused_with_advice(
    tmp_path: Path, functional_path: Path
) -> None:
    shutil.copy(functional_path, tmp_path / "run_001.nii")
    with pytest.raises(VolumeReadError, match=r"holds 20 volumes.*bridge replay"):
        read_part(tmp_path / "run_001.nii")


def test_nifti_without_a_volume_number_is_refused(tmp_path: Path) -> None:
    (tmp_path / "anat.nii").write_bytes(nifti_bytes(np.zeros((2, 2, 2), np.int16), np.eye(4), tr_s=None))
    with pytest.raises(VolumeReadError, match="no volume number"):
        read_part(tmp_path / "anat.nii")


def test_a_repeated_slice_is_reported_not_stacked(tmp_path: Path, functional_run) -> None:
    files = dicom_slice_files(
        functional_run.raw[..., 0], functional_run.affine, acquisition=1, tr_s=2.0, series_uid="1.2.3.4"
    )
    data = files[0][1]
    (tmp_path / "a.dcm").write_bytes(data)
    (tmp_path / "b.dcm").write_bytes(data)
    assembler = SliceAssembler()
    assert assembler.add(read_part(tmp_path / "a.dcm")) is None
    with pytest.raises(VolumeReadError, match="repeats the slice"):
        assembler.add(read_part(tmp_path / "b.dcm"))


def test_a_siemens_real_time_export_is_followed_across_a_bridge_restart_as_dcm2niix_reads_it(
    tmp_path: Path,
) -> None:
    """Real mosaics named as Siemens' real-time export names them: 001_<series>_<acquisition>.dcm.

    The bridge starts (again) with the run's first volume and an earlier series' file already there;
    when the run goes on, it reads the run's first file too, and never the other series'.
    """
    export = tmp_path / "export"
    export.mkdir()
    first, second = (
        pydicom.dcmread(pydicom.filebase.DicomBytesIO(gzip.decompress((NICOM_DATA / name).read_bytes())))
        for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")
    )  # series 12, acquisitions 1 and 2
    earlier = pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(gzip.decompress((NICOM_DATA / "siemens_dwi_0.dcm.gz").read_bytes()))
    )
    earlier.SeriesNumber, earlier.SeriesInstanceUID = 11, pydicom.uid.generate_uid()
    earlier.save_as(export / "001_000011_000001.dcm")
    first.save_as(export / "001_000012_000001.dcm")
    events: list[BridgeEvent] = []
    with DirectoryWatcher(
        export, config=WatchConfig(rescan_interval_s=0.2), on_event=events.append
    ) as watcher:
        second.save_as(export / "001_000012_000002.dcm")
        threading.Timer(1.5, watcher.close).start()
        got = sorted(watcher, key=lambda v: v.index)
    assert [(v.index, v.series.split("/")[0]) for v in got] == [(0, "12"), (1, "12")]
    for volume, name in zip(got, ("001_000012_000001.dcm", "001_000012_000002.dcm"), strict=True):
        (tmp_path / name).mkdir()
        shutil.copy(export / name, tmp_path / name / name)
        reference = _dcm2niix(tmp_path / name, tmp_path / f"{name}.out")
        np.testing.assert_array_equal(volume.data, np.asanyarray(reference.dataobj))
        np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-3)
    assert [e.code for e in events if e.code is not EventCode.SERIES_STARTED] == [EventCode.OTHER_SERIES]
