"""DICOM series to :class:`~medmm.records.Image`.

Reading runs in three steps:

1. **Headers.** Every file under a folder (or every instance a DICOMDIR names) is parsed
   up to its pixel data. Each 2D frame becomes a :class:`Frame`: a single-frame file, one
   frame of an enhanced multi-frame file (geometry from its per-frame functional groups),
   or one tile of a Siemens mosaic.
2. **Stacks.** Frames are grouped by SeriesInstanceUID, then split into stacks by
   orientation, size, enhanced StackID, SeriesNumber and image kind (magnitude, phase,
   real, imaginary, derived maps: dcm2niix writes these as separate files). A stack whose
   positions repeat is split into volumes (a 4D image) the way dcm2niix does: by echo,
   temporal position, b-value and gradient direction (standard tags, GE/Philips private
   tags, Siemens CSA), trigger time, enhanced dimension index or acquisition, and, where
   no header field tells frames apart (GE fMRI), by instance order at each position.
   Within a volume, frames are ordered by ImagePositionPatient projected on the slice
   normal (never by file name or InstanceNumber). Missing slices, irregular spacing,
   gantry tilt and duplicate positions are detected here as :class:`Problem` s.
3. **Pixels.** Native little-endian pixel data is read straight from the file into a
   preallocated float32 volume, slice by slice in a thread pool (BitsStored masking,
   sign, MONOCHROME1 inversion, per-frame RescaleSlope/Intercept); compressed and deflated
   transfer syntaxes are decoded by pydicom (pylibjpeg plugins).

The affine maps ``(i, j, k)`` (i along a row, j down a column, k along the slices) to RAS+
millimetres. A series with geometry problems raises one :class:`~medmm.errors.GeometryError`
naming all of them, unless ``irregular="accept"`` (read as is, with a warning) or
``irregular="resample"`` (interpolate onto a regular, untilted grid).
"""

from ...problems import Problem
from .frame import DicomWarning, Frame, Stack, plane_name, slice_normal
from .geometry import LPS_TO_RAS, affine_lps
from .headers import GZIP_SKIP, collect_frames
from .read import IRREGULAR_OPTIONS, META_TAGS, PROJECTION_MODALITIES, list_series, read_dicom, read_dicom_series
from .stacks import scan_stacks, stack_label

__all__ = [
    "read_dicom",
    "read_dicom_series",
    "list_series",
    "scan_stacks",
    "slice_normal",
    "Frame",
    "Stack",
    "Problem",
    "DicomWarning",
    "IRREGULAR_OPTIONS",
    "collect_frames",
    "GZIP_SKIP",
    "LPS_TO_RAS",
    "META_TAGS",
    "PROJECTION_MODALITIES",
    "affine_lps",
    "plane_name",
    "stack_label",
]
