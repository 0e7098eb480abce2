"""DICOM de-identification by the PS3.15 Annex E basic application level confidentiality profile.

The action of every attribute comes from PS3.15 Table E.1-1 as the ``dicom-anonymizer``
package ships it (generated from the standard, release 2026c; :data:`PROFILE`), not from a
hand-typed list. What :class:`Deidentifier` does to a dataset (recursively, into sequences):

* ``X`` (and ``X/Z``, ``X/D``, ``X/Z/D``: medmm takes the first choice, removal) deletes the
  attribute; ``Z`` and ``Z/D`` keep it with an empty value; ``D`` puts a dummy value of its VR;
  ``X/Z/U*`` sequences are kept and the UIDs inside them replaced;
* curves, overlay data and comments (the table's repeating groups) and every private attribute
  are removed (the profile's default, no Retain Private option);
* every UID except the DICOM-defined ones (SOP classes, transfer syntaxes, coding
  schemes: ``1.2.840.10008.*``) is replaced by a new UID derived from the original and a
  secret ``salt``, so that references between files stay consistent;
* the Retain Longitudinal Temporal Information, Modified Dates option: every DA/DT value is
  shifted by a per-patient number of days derived from the salt and the original PatientID
  (times are kept), so intervals within a patient are kept; PatientBirthDate is emptied;
* the Retain Patient Characteristics option: sex, age (ages over 89 become ``090Y``), size,
  weight, ethnic group, smoking and pregnancy status are kept;
* free-text descriptors (series/study description, protocol name) are removed unless
  ``keep_descriptors=True`` (the Retain Description option without its cleaning: check them);
* PatientID becomes a pseudonym derived from the salt, PatientName the same pseudonym;
* PatientIdentityRemoved, DeidentificationMethod and its code sequence are set.

Pixel data is never touched: a file whose BurnedInAnnotation is ``YES`` is flagged
(``Deidentifier.burned_in``), not cleaned.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import DicomError

__all__ = ["Deidentifier", "deidentify_path", "profile", "action_for", "DESCRIPTORS", "RETAINED_CHARACTERISTICS",
           "PROFILE_RELEASE"]

#: The release of PS3.15 whose Table E.1-1 is applied (a database of ``dicom-anonymizer``).
PROFILE_RELEASE = "2026c"

#: ``dicom-anonymizer``'s category lists -> the action code of PS3.15 Table E.1-1.
_CATEGORIES = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}

#: Free-text descriptors the basic profile removes; kept with ``keep_descriptors=True``
#: (then check them for identifiers yourself).
DESCRIPTORS: frozenset[str] = frozenset(
    "SeriesDescription StudyDescription ProtocolName".split()
)

#: Kept by the Retain Patient Characteristics option (PS3.15 E.3.7, column "K").
RETAINED_CHARACTERISTICS: frozenset[str] = frozenset(
    "PatientSex PatientAge PatientSize PatientWeight EthnicGroup PatientSexNeutered SmokingStatus "
    "PregnancyStatus".split()
)

#: Dates about the patient rather than the care episode: the temporal option does not keep them.
_PATIENT_DATES = frozenset({"PatientBirthDate", "PatientBirthTime"})


class _Masked(NamedTuple):
    group: int
    element: int
    group_mask: int
    element_mask: int
    action: str


class _Profile(NamedTuple):
    exact: dict[int, str]
    masked: tuple[_Masked, ...]


@lru_cache(maxsize=1)
def profile() -> _Profile:
    """PS3.15 Table E.1-1: tag -> action code (``"X"``, ``"Z"``, ``"D"``, ``"U"``, ``"X/Z"``, ...)."""
    import importlib

    try:
        table = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.dicomfields_{PROFILE_RELEASE}")
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DicomError("the PS3.15 Table E.1-1 database is not installed",
                         hint="pip install dicom-anonymizer") from exc
    exact: dict[int, str] = {}
    masked: list[_Masked] = []
    for category, action in _CATEGORIES.items():
        for tag in getattr(table, category):
            if len(tag) == 4:
                masked.append(_Masked(*tag, action))
                continue
            key = (tag[0] << 16) | tag[1]
            if exact.setdefault(key, action) != action:
                raise DicomError(f"PS3.15 table lists ({tag[0]:04X},{tag[1]:04X}) as both {exact[key]} and {action}",
                                 hint="upgrade dicom-anonymizer")
    return _Profile(exact, tuple(masked))


def action_for(tag: int) -> str | None:
    """The Table E.1-1 action of a tag (an int such as ``0x00100010``), or ``None`` (kept)."""
    prof = profile()
    action = prof.exact.get(int(tag))
    if action is not None:
        return action
    group, element = int(tag) >> 16, int(tag) & 0xFFFF
    for m in prof.masked:
        if group & m.group_mask == m.group & m.group_mask and element & m.element_mask == m.element & m.element_mask:
            return m.action
    return None


_STANDARD_UID_ROOT = "1.2.840.10008."
_METHOD = f"medmm: PS3.15 {PROFILE_RELEASE} basic profile, modified dates, patient chars"  # LO: <= 64
_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
#: D (dummy) values by VR; VRs not listed get an empty value
_DUMMY = {"PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED", "LT": "ANONYMIZED",
          "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "AE": "ANONYMIZED",
          "DS": "0", "IS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0}


class Deidentifier:
    """De-identify pydicom datasets consistently across files and runs.

    Parameters
    ----------
    salt:
        A secret string: the same salt maps the same UID, PatientID and dates the same way
        (so that several exports of one study stay linked). Keep it private. Default:
        ``$MEDMM_DEID_SALT``, else a public constant (reproducible by anyone).
    max_shift_days:
        Dates are shifted back by 1 to ``max_shift_days`` days, fixed per patient.
    keep_descriptors:
        Keep SeriesDescription, StudyDescription and ProtocolName (removed by the basic
        profile since they are free text that may hold identifiers).
    """

    def __init__(
        self, *, salt: str | None = None, max_shift_days: int = 3650, keep_descriptors: bool = False
    ) -> None:
        self.salt = salt if salt is not None else os.environ.get("MEDMM_DEID_SALT", "medmm")
        self.max_shift_days = int(max_shift_days)
        self.keep_descriptors = keep_descriptors
        self.burned_in: list[str] = []

    def _hash(self, *parts: str) -> bytes:
        h = hashlib.sha256(self.salt.encode())
        for p in parts:
            h.update(b"\x00" + p.encode())
        return h.digest()

    def uid(self, uid: str) -> str:
        """The replacement of ``uid`` (a ``2.25.<int>`` UID derived from it and the salt)."""
        if not uid or uid.startswith(_STANDARD_UID_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(self._hash("uid", uid)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        """A stable pseudonymous PatientID."""
        return "ANON" + self._hash("pid", patient_id).hex()[:12].upper()

    def shift_days(self, patient_id: str) -> int:
        """The per-patient date shift (days, subtracted)."""
        return 1 + int.from_bytes(self._hash("date", patient_id)[:4], "big") % self.max_shift_days

    def _shift_date(self, value: str, days: int) -> str:
        value = str(value).strip()
        if len(value) < 8 or not value[:8].isdigit():
            return ""
        try:
            d = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) - dt.timedelta(days=days)
        except ValueError:
            return ""
        return d.strftime("%Y%m%d") + value[8:]

    def dataset(self, ds: Any) -> Any:
        """A de-identified deep copy of the pydicom dataset ``ds``."""
        out = copy.deepcopy(ds)
        pid = str(ds.get("PatientID", "") or "")
        days = self.shift_days(pid)
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            self.burned_in.append(str(ds.get("SOPInstanceUID", "")))
            warnings.warn(
                "BurnedInAnnotation is YES: text burned into the pixels is not removed",
                UserWarning,
                stacklevel=2,
            )
        self._walk(out, days)
        out.PatientID = self.pseudonym(pid)
        out.PatientName = out.PatientID
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = _METHOD
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        codes = []
        for value, meaning in _CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(codes)
        age = str(out.get("PatientAge", "") or "")
        if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) > 89:
            out.PatientAge = "090Y"  # HIPAA: ages over 89 are aggregated
        fm = getattr(out, "file_meta", None)
        if fm is not None and "MediaStorageSOPInstanceUID" in fm:
            fm.MediaStorageSOPInstanceUID = self.uid(str(fm.MediaStorageSOPInstanceUID))
        return out

    def _walk(self, ds: Any, days: int) -> None:
        ds.remove_private_tags()
        for elem in list(ds):
            kw = elem.keyword
            if kw in RETAINED_CHARACTERISTICS or (kw in DESCRIPTORS and self.keep_descriptors):
                continue
            action = action_for(elem.tag)
            temporal = elem.VR in ("DA", "DT", "TM") and kw not in _PATIENT_DATES
            if action is not None and action.startswith("X") and action != "X/Z/U*" and not temporal:
                del ds[elem.tag]
                continue
            if action in ("Z", "Z/D") and not temporal and elem.VR != "UI":
                elem.value = [] if elem.VR == "SQ" else ""
                continue
            if action == "D" and not temporal and elem.VR not in ("UI", "SQ"):
                elem.value = _DUMMY.get(elem.VR, "")
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    self._walk(item, days)
            elif elem.VR == "UI" and elem.value:
                if elem.VM > 1:
                    elem.value = [self.uid(str(v)) for v in elem.value]
                else:
                    elem.value = self.uid(str(elem.value))
            elif elem.VR in ("DA", "DT") and elem.value:
                if elem.VM > 1:
                    elem.value = [self._shift_date(str(v), days) for v in elem.value]
                else:
                    elem.value = self._shift_date(str(elem.value), days)


def deidentify_path(
    src: str | Path, dst: str | Path, *, salt: str | None = None, deidentifier: Deidentifier | None = None
) -> list[Path]:
    """De-identify every DICOM file under ``src`` into ``dst`` (same relative layout).

    Files are renamed after their new SOPInstanceUID's digest so that original names (which
    may hold identifiers) do not leak; non-DICOM files are skipped.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    src, dst = Path(src), Path(dst)
    deid = deidentifier or Deidentifier(salt=salt)
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise DicomError("no files to de-identify", path=src, hint="point at a DICOM file or folder")
    if src.is_file() and dst.suffix:
        targets = {src: dst}
    else:
        targets = {}
    written = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except InvalidDicomError:
            continue
        except Exception as exc:
            raise DicomError(f"unreadable DICOM file ({exc})", path=f, hint="remove or replace it") from exc
        if f.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in ds:
            continue  # a DICOMDIR holds names and IDs; rebuild it from the output if needed
        out = deid.dataset(ds)
        if f in targets:
            target = targets[f]
        else:
            rel_parent = f.parent.relative_to(src) if src.is_dir() else Path()
            parent_alias = Path(*[deid._hash("dir", part).hex()[:8] for part in rel_parent.parts])
            target = dst / parent_alias / (deid._hash("file", str(f.relative_to(src) if src.is_dir() else f.name)).hex()[:16] + ".dcm")
        target.parent.mkdir(parents=True, exist_ok=True)
        out.save_as(target, enforce_file_format=False)
        written.append(target)
    if not written:
        raise DicomError("no DICOM file found to de-identify", path=src, hint="point at a DICOM file or folder")
    return written
