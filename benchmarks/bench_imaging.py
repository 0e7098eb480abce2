"""Imaging I/O benchmark: medmm's DICOM reader and cache beside MONAI, SimpleITK and raw bytes.

Run: ``.venv/bin/python benchmarks/bench_imaging.py [--slices 200] [--size 512] [--runs 5]``

1. A CT series of single-frame 16-bit files with shuffled names (written to a temp dir) is
   read to a float32 HU volume with its affine by medmm, MONAI ``LoadImage(reader=
   "PydicomReader")``, SimpleITK ``ImageSeriesReader`` and a plain read of the files' bytes
   (median of ``--runs`` runs after imports), plus medmm's peak memory over the volume size.
2. Small series, where fixed costs dominate: a 28-slice CT (single-frame files) and an
   enhanced multi-frame MR file (520 frames), each read by medmm and SimpleITK.
3. A small synthetic cohort's images are preprocessed through medmm's on-disk cache, cold
   then warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def vendor_header(ds, rng: np.random.Generator, n_private: int = 160) -> None:
    """Header bulk of a real scanner file: request/reference sequences and private groups
    (GE CT headers hold ~300 elements, most of them private)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstitutionName, ds.StationName, ds.ReferringPhysicianName = "BENCH HOSPITAL", "CT01", "DOE^J"
    ds.ManufacturerModelName, ds.SoftwareVersions, ds.ProtocolName = "Revolution", "gmp_vct.48", "HEAD ROUTINE"
    ds.AcquisitionDate = ds.ContentDate = ds.SeriesDate = "20240101"
    ds.AcquisitionTime = ds.ContentTime = ds.StudyTime = "101010.123456"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge, ds.PatientWeight = "19600101", "F", "064Y", 70
    ds.ConvolutionKernel, ds.DataCollectionDiameter, ds.ReconstructionDiameter = "STANDARD", 500.0, 250.0
    ds.DistanceSourceToDetector, ds.DistanceSourceToPatient, ds.GantryDetectorTilt = 946.7, 538.5, 0.0
    ds.TableHeight, ds.RotationDirection, ds.ExposureTime, ds.XRayTubeCurrent = 150.0, "CW", 1000, 250
    ds.Exposure, ds.FilterType, ds.GeneratorPower, ds.FocalSpots = 250, "BODY FILTER", 30000, 0.7
    ds.WindowCenter, ds.WindowWidth = [40, 40], [400, 400]
    ds.SliceLocation, ds.PositionReferenceIndicator = float(ds.ImagePositionPatient[2]), "SN"
    ref = []
    for _ in range(3):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3." + str(rng.integers(1e9))
        ref.append(item)
    ds.ReferencedImageSequence = Sequence(ref)
    req = Dataset()
    req.RequestedProcedureID, req.ScheduledProcedureStepID = "RP1", "SPS1"
    req.ScheduledProcedureStepDescription = "CT HEAD W/O CONTRAST"
    ds.RequestAttributesSequence = Sequence([req])
    vrs = [("LO", lambda: "GE_VALUE_" + str(rng.integers(1000))), ("SL", lambda: int(rng.integers(1e6))),
           ("DS", lambda: f"{rng.random():.6f}"), ("SS", lambda: int(rng.integers(-1000, 1000))),
           ("FL", lambda: float(rng.random())), ("SH", lambda: "X" + str(rng.integers(100)))]
    for g, creator in ((0x0009, "GEMS_IDEN_01"), (0x0019, "GEMS_ACQU_01"), (0x0021, "GEMS_RELA_01"),
                       (0x0027, "GEMS_IMAG_01"), (0x0043, "GEMS_PARM_01"), (0x0045, "GEMS_HELIOS_01")):
        block = ds.private_block(g, creator, create=True)
        for e in range(n_private // 6):
            vr, make = vrs[e % len(vrs)]
            block.add_new(e, vr, make())


def write_ct(folder: Path, n: int, size: int, seed: int = 0, rich: bool = False) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    names = rng.permutation(n)
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) / (0.42 * size)) ** 2 + ((yy - size / 2) / (0.36 * size)) ** 2 <= 1
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.StudyDate = "BENCH", "BENCH^CT", "20240101"
        ds.Modality, ds.Manufacturer, ds.SeriesDescription, ds.KVP = "CT", "BENCH", "bench CT", 120
        ds.InstanceNumber = int(rng.integers(1, 100000))
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-250.0, -250.0, -300.0 + 1.25 * k]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.SliceThickness = 1.25
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        if rich:
            vendor_header(ds, rng)
        img = np.where(body, 1064, 24) + rng.integers(0, 40, size=(size, size))
        ds.PixelData = img.astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{names[k]:06d}", enforce_file_format=True)


def write_enhanced(path: Path, n: int, size: int, seed: int = 1) -> None:
    """One enhanced MR file of ``n`` frames (per-frame positions, shared orientation/spacing)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.Manufacturer, ds.SeriesDescription = "BENCH", "MR", "BENCH", "bench enhanced MR"
    ds.InstanceNumber, ds.NumberOfFrames = 1, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    shared = Dataset()
    pm, po, pvt = Dataset(), Dataset(), Dataset()
    pm.PixelSpacing, pm.SliceThickness = [0.5, 0.5], 0.6
    po.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # sagittal-ish stack of coronal frames
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1.0, 0.0, "US"
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(n):
        per_frame.append(_philips_frame(k, n, rng))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = rng.integers(0, 4096, size=(n, size, size)).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _philips_frame(k: int, n: int, rng: np.random.Generator):
    """One PerFrameFunctionalGroupsSequence item as Philips writes it: every group per
    frame (even the unchanging ones) and a private per-frame sequence of ~60 elements."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(**kw):
        d = Dataset()
        for key, v in kw.items():
            setattr(d, key, v)
        return Sequence([d])

    fg = Dataset()
    fg.FrameContentSequence = item(
        StackID="1", InStackPositionNumber=k + 1, TemporalPositionIndex=1, DimensionIndexValues=[1, k + 1],
        FrameAcquisitionDateTime="20240101101010.12", FrameReferenceDateTime="20240101101010.12",
        FrameAcquisitionDuration=2000.0, FrameAcquisitionNumber=1,
    )
    fg.PlanePositionSequence = item(ImagePositionPatient=[-64.0, -100.0 + 0.6 * k, 64.0])
    fg.PlaneOrientationSequence = item(ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    fg.PixelMeasuresSequence = item(PixelSpacing=[0.5, 0.5], SliceThickness=0.6)
    fg.FrameVOILUTSequence = item(WindowCenter=1000, WindowWidth=2000)
    fg.PixelValueTransformationSequence = item(RescaleSlope=1.0, RescaleIntercept=0.0, RescaleType="US")
    fg.MRTimingAndRelatedParametersSequence = item(RepetitionTime=8.1, EchoTrainLength=1, FlipAngle=8,
                                                   GradientOutputType="DB_DT", GradientOutput=75.0)
    fg.MREchoSequence = item(EffectiveEchoTime=3.7)
    fg.MRModifierSequence = item(InversionRecovery="YES", FlowCompensation="NONE", Spoiling="RF",
                                 T2Preparation="NO", SpectrallySelectedExcitation="NONE",
                                 SpatialPresaturation="NONE", PartialFourier="NO")
    fg.MRImagingModifierSequence = item(PixelBandwidth=191.0, TransmitterFrequency=127.7,
                                        MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE")
    fg.MRReceiveCoilSequence = item(ReceiveCoilName="SENSE-Head-8", ReceiveCoilType="MULTICOIL",
                                    QuadratureReceiveCoil="NO")
    fg.MRTransmitCoilSequence = item(TransmitCoilName="B", TransmitCoilType="BODY")
    fg.MRAveragesSequence = item(NumberOfAverages=1)
    fg.MRImageFrameTypeSequence = item(FrameType=["ORIGINAL", "PRIMARY", "M_SE", "NONE"], PixelPresentation="MONOCHROME",
                                       VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE",
                                       ComplexImageComponent="MAGNITUDE", AcquisitionContrast="T1")
    fg.MRDiffusionSequence = item(DiffusionBValue=0.0, DiffusionDirectionality="NONE")
    priv = Dataset()
    block = priv.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    for e in range(60):
        if e % 3 == 0:
            block.add_new(e, "FL", float(rng.random()))
        elif e % 3 == 1:
            block.add_new(e, "SS", int(rng.integers(-100, 100)))
        else:
            block.add_new(e, "CS", "PHILIPS_" + str(e))
    fg.add_new((0x2005, 0x0010), "LO", "Philips MR Imaging DD 005")
    fg.add_new((0x2005, 0x140F), "SQ", Sequence([priv]))
    return fg


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        out = None
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def read_bytes(folder: Path) -> int:
    return sum(len(p.read_bytes()) for p in folder.iterdir())


def read_medmm(folder: Path):
    from medmm.io.image import read_image

    return read_image(folder)


def read_monai(folder: Path):
    from monai.transforms import LoadImage

    return LoadImage(reader="PydicomReader", image_only=True)(str(folder))


def read_sitk(folder: Path):
    import SimpleITK as sitk

    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    img = sitk.Cast(r.Execute(), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(img), img.GetDirection(), img.GetOrigin(), img.GetSpacing()


def read_sitk_file(path: Path):
    import SimpleITK as sitk

    img = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(img), img.GetDirection(), img.GetOrigin(), img.GetSpacing()


def bench_small(root: Path, runs: int) -> None:
    """Small series, where per-call costs (headers, pools, imports) weigh most."""
    ct, enh = root / "small_ct", root / "enhanced.dcm"
    write_ct(ct, 28, 512, seed=2, rich=True)
    write_enhanced(enh, 520, 192)
    print(f"\nsmall series, median of {runs} runs (s):")
    for label, path, sitk_fn in (
        ("28-slice CT (512x512, GE-like headers)", ct, read_sitk),
        ("enhanced MR (520 frames, Philips-like)", enh, read_sitk_file),
    ):
        read_medmm(path), sitk_fn(path)  # warm the page cache
        t_medmm, img = timed(lambda path=path: read_medmm(path), runs)
        t_sitk, ref = timed(lambda path=path, fn=sitk_fn: fn(path), runs)
        same = np.array_equal(np.asarray(img.data).transpose(2, 1, 0), ref[0])
        print(f"  {label:38s} medmm {t_medmm:7.3f}   SimpleITK {t_sitk:7.3f}   medmm is "
              f"{t_sitk / t_medmm:5.2f}x faster (target >= 1); same voxels: {same}")


def peak_rss_during(fn) -> tuple[int, int]:
    """(baseline RSS, peak RSS) in bytes while ``fn`` runs (sampled from /proc every 2 ms)."""

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    base, peak, done = rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out = fn()
    done.set()
    th.join()
    peak[0] = max(peak[0], rss())
    del out
    return base, peak[0]


def bench_cache(root: Path, runs: int) -> None:
    import medmm
    from medmm.io.image import read_image
    from medmm.preprocess.cache import VolumeCache
    from medmm.preprocess.image import ImagePreprocessor

    manifest = medmm.generate_cohort(root / "cohort", n_patients=24, seed=0)
    import pandas as pd

    table = pd.read_csv(manifest)
    col = next(c for c in table.columns if c.startswith("image"))
    paths = [root / "cohort" / p for p in table[col].dropna()]
    pre = ImagePreprocessor(spatial_size=(32, 32, 32)).fit()
    cache = VolumeCache(root / "cache", max_bytes=1 << 30)

    def one_pass() -> float:
        t = time.perf_counter()
        for p in paths:
            arr = cache.get_or_compute(p, pre, lambda p=p: pre.transform(read_image(p)))
            float(arr[0, 0, 0, 0])
        return time.perf_counter() - t

    cold = one_pass()
    warm = statistics.median(one_pass() for _ in range(runs))
    print(f"\ncache over {len(paths)} cohort images (32^3 preprocessed):")
    print(f"  {'cold (read + preprocess + write)':34s} {cold:8.3f} s")
    print(f"  {'warm (memory-mapped .npy)':34s} {warm:8.3f} s   speed-up {cold / warm:6.1f}x (target >= 20x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--only-small", action="store_true", help="run only the small-series rows")
    args = ap.parse_args()

    import monai.transforms  # noqa: F401  (imports outside the timings)
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401

    import medmm.io.image  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        bench_small(Path(tmp), args.runs)
        if args.only_small:
            return
        folder = Path(tmp) / "ct"
        write_ct(folder, args.slices, args.size)
        nbytes = args.slices * args.size * args.size * 4
        print(f"CT series: {args.slices} files of {args.size}x{args.size} uint16, shuffled names; "
              f"median of {args.runs} runs (s)")
        read_medmm(folder)  # warm the page cache and the imports
        t_bytes, _ = timed(lambda: read_bytes(folder), args.runs)
        t_medmm, img = timed(lambda: read_medmm(folder), args.runs)
        t_sitk, ref = timed(lambda: read_sitk(folder), args.runs)
        t_monai, _ = timed(lambda: read_monai(folder), args.runs)
        same = np.array_equal(np.asarray(img.data).transpose(2, 1, 0), ref[0])
        print(f"  {'plain read of the bytes':28s} {t_bytes:8.3f}")
        print(f"  {'medmm read_image':28s} {t_medmm:8.3f}   {t_medmm / t_bytes:5.1f}x the bytes read")
        print(f"  {'SimpleITK ImageSeriesReader':28s} {t_sitk:8.3f}   medmm is {t_sitk / t_medmm:5.2f}x faster (target >= 1)")
        print(f"  {'MONAI LoadImage(Pydicom)':28s} {t_monai:8.3f}   medmm is {t_monai / t_medmm:5.2f}x faster (target >= 3)")
        print(f"  medmm volume equals SimpleITK's: {same}; shape {img.shape}, dtype {img.data.dtype}")
        del img, ref
        base, peak = peak_rss_during(lambda: read_medmm(folder))
        print(f"  medmm peak memory while loading: {(peak - base) / nbytes:4.2f}x the float32 volume "
              f"({(peak - base) / 2**20:.0f} MiB over {nbytes / 2**20:.0f} MiB; target < 2.5x)")
        if not args.skip_cache:
            bench_cache(Path(tmp), args.runs)


if __name__ == "__main__":
    main()
