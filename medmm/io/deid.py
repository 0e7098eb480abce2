"""DICOM de-identification by the PS3.15 Annex E basic application level confidentiality profile.

What :class:`Deidentifier` does to a dataset (recursively, into sequences):

* attributes the basic profile lists for removal (``X``) are deleted and those it lists
  as "zero length" or "dummy" (``Z``/``D``) are blanked or given a dummy value;
* every private attribute is removed (the profile's default, no Retain Private option);
* every UID except the DICOM-defined ones (SOP classes, transfer syntaxes, coding
  schemes: ``1.2.840.10008.*``) is replaced by a new UID derived from the original and a
  secret ``salt``, so that references between files stay consistent;
* the Modified Dates option: every DA/DT value is shifted by a per-patient number of
  days derived from the salt and the original PatientID, so intervals within a patient
  are kept; PatientBirthDate is emptied;
* free-text descriptors (series/study description, protocol name) are removed unless
  ``keep_descriptors=True``;
* PatientID becomes a pseudonym derived from the salt, PatientName the same pseudonym;
  PatientSex and PatientAge are kept (ages over 89 become ``090Y``: the Retain Patient
  Characteristics option);
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
from pathlib import Path
from typing import Any

from ..errors import DicomError

__all__ = ["Deidentifier", "deidentify_path", "REMOVE", "BLANK", "DESCRIPTORS"]

#: Attributes deleted (PS3.15 Table E.1-1, action X / X/Z / X/D and friends).
REMOVE: frozenset[str] = frozenset(
    """
    AcquisitionComments AcquisitionContextSequence AcquisitionDeviceProcessingDescription
    AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory AddressTrial
    AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
    AffectedSOPInstanceUID Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID
    CommentsOnThePerformedProcedureStep ConfidentialityConstraintOnPatientDataDescription
    ContentCreatorIdentificationCodeSequence ContributionDescription CountryOfResidence
    CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding
    DerivationDescription DetectorID DeviceSerialNumber DigitalSignaturesSequence DischargeDiagnosisDescription
    DistributionAddress DistributionName EthnicGroup FrameComments GantryID GeneratorID
    GraphicAnnotationSequence HumanPerformerName HumanPerformerOrganization IconImageSequence
    IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
    InstitutionAddress InstitutionalDepartmentName InstitutionName InsurancePlanIdentification
    IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
    InterpretationDiagnosisDescription InterpretationIDIssuer InterpretationRecorder InterpretationText
    InterpretationTranscriber IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID
    MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDescription
    ModifyingDeviceID NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults Occupation
    OperatorIdentificationSequence OperatorsName OriginalAttributesSequence OrderCallbackPhoneNumber
    OrderEnteredBy OrderEntererLocation OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    OverlayComments OverlayDate OverlayTime ParticipantSequence PatientAddress PatientBirthName
    PatientBirthTime PatientComments PatientInstitutionResidence PatientInsurancePlanCodeSequence
    PatientMotherBirthName PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientState PatientTelephoneNumbers PatientTelecomInformation
    PatientTransportArrangements PerformedLocation PerformedProcedureStepDescription
    PerformedProcedureStepID PerformingPhysicianIdentificationSequence PerformingPhysicianName
    PersonAddress PersonTelephoneNumbers PersonTelecomInformation PhysicianApprovingInterpretation
    PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
    PlateID PreMedication PregnancyStatus ReasonForTheImagingServiceRequest ReasonForStudy
    ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence ReferencedPatientPhotoSequence
    ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
    RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureID
    RequestedProcedureLocation RequestingPhysician RequestingService ResponsibleOrganization
    ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer
    ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepLocation ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime
    ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence ScheduledStationName
    ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle ServiceEpisodeID
    ServiceEpisodeDescription SmokingStatus SpecialNeeds StationName StudyComments StudyIDIssuer
    TextComments TextString TopicAuthor TopicKeywords TopicSubject TopicTitle VerifyingObserverIdentificationCodeSequence
    VerifyingObserverName VerifyingObserverSequence VerifyingOrganization VisitComments
    PatientSize PatientWeight MilitaryRank AdmittingDiagnosesCodeSequence
    RequestedProcedureDescription PerformedProcedureStepStartDate
    """.split()
)

#: Free-text descriptors the basic profile removes; kept with ``keep_descriptors=True``
#: (then check them for identifiers yourself).
DESCRIPTORS: frozenset[str] = frozenset(
    "SeriesDescription StudyDescription ProtocolName".split()
)

#: Attributes kept but emptied (type 2 attributes: action Z or D).
BLANK: frozenset[str] = frozenset(
    """
    AccessionNumber PatientBirthDate ReferringPhysicianName StudyID ContentCreatorName PersonName VerifyingObserverName
    FillerOrderNumberImagingServiceRequest PlacerOrderNumberImagingServiceRequest
    ConsultingPhysicianName
    """.split()
)

_STANDARD_UID_ROOT = "1.2.840.10008."
_METHOD = "PS3.15 Basic Profile, Modified Dates Option (medmm)"
_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),  # sex and (capped) age are kept
)


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
            group = elem.tag.group
            curve = 0x5000 <= group <= 0x50FF
            overlay_data = 0x6000 <= group <= 0x60FF and elem.tag.element in (0x3000, 0x4000)
            if kw in REMOVE or curve or overlay_data or (kw in DESCRIPTORS and not self.keep_descriptors):
                del ds[elem.tag]
                continue
            if kw in BLANK:
                elem.value = None if elem.VR == "SQ" else ""
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
