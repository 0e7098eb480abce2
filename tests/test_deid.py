"""DICOM de-identification follows PS3.15 Table E.1-1 (as shipped by dicom-anonymizer), recursively."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence

from medmm.io.deid import Deidentifier, action_for, profile


def _item(**values: object) -> Dataset:
    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


@pytest.fixture()
def ct() -> Dataset:
    """A real CT header with what exports from the field carry: PHI in sequences, vendor tags, overlays."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE^Q", "MRN0042", "19330405"
    ds.PatientAge, ds.PatientSex, ds.PatientWeight = "093Y", "F", 61.5
    ds.MilitaryRank, ds.OtherPatientIDs, ds.AccessionNumber = "Sgt", "X9 Y7", "ACC778"
    ds.InstitutionName, ds.StationName = "St Elsewhere General", "CT-ROOM-2"
    ds.StudyDate, ds.StudyTime, ds.AcquisitionDateTime = "20200315", "101500", "20200315102000.000000"
    ds.SeriesDescription, ds.ProtocolName = "CHEST W/O Dr Who", "Smith protocol"
    ds.VerifyingObserverSequence = Sequence([_item(
        VerifyingObserverName="HOUSE^GREGORY", VerifyingOrganization="PPTH",
        VerificationDateTime="20200316090000", VerifyingObserverIdentificationCodeSequence=Sequence())])
    ds.RequestAttributesSequence = Sequence([_item(RequestedProcedureID="RP1", ScheduledProcedureStepID="S1")])
    ds.ReferencedImageSequence = Sequence([_item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                                                 ReferencedSOPInstanceUID="1.3.6.1.4.1.5962.99.7")])
    ds.add_new(0x60000010, "US", 4)  # overlay rows (kept), its data and comments (removed)
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    ds.add_new(0x60004000, "LT", "drawn by DOE")
    ds.add_new(0x50000005, "US", 2)  # a retired curve
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "LO", "DOE^JANE")
    return ds


def test_profile_is_the_standard_table_without_contradictions() -> None:
    prof = profile()
    assert len(prof.exact) > 600  # the whole table, not a hand-typed subset
    kw = lambda name: action_for(tag_for_keyword(name))  # noqa: E731
    assert kw("MilitaryRank") == "X"
    assert kw("VerifyingObserverName") == "D"  # one action, not both REMOVE and BLANK
    assert kw("PatientName") == "Z" and kw("SOPInstanceUID") == "U" and kw("InstitutionName") == "X/Z/D"
    assert action_for(0x60223000) == "X" and action_for(0x50100000) == "X"  # repeating groups
    assert kw("Rows") is None


def test_deidentified_header(ct: Dataset) -> None:
    deid = Deidentifier(salt="s3cret")
    out = deid.dataset(ct)
    assert ct.PatientName == "DOE^JANE^Q"  # a copy: the input is untouched
    text = str(out)
    for phi in ("DOE", "MRN0042", "Sgt", "X9", "Elsewhere", "CT-ROOM-2", "HOUSE", "PPTH", "Smith", "Who", "19330405"):
        assert phi not in text, phi
    assert out.PatientID == deid.pseudonym("MRN0042") == out.PatientName
    assert out.PatientBirthDate == "" and out.AccessionNumber == ""  # Z: kept, empty
    assert "MilitaryRank" not in out and "OtherPatientIDs" not in out and "InstitutionName" not in out
    assert "SeriesDescription" not in out and "ProtocolName" not in out and "RequestAttributesSequence" not in out
    # Retain Patient Characteristics, with ages over 89 aggregated
    assert out.PatientSex == "F" and out.PatientWeight == 61.5 and out.PatientAge == "090Y"
    # Modified Dates: one shift per patient, times kept
    days = deid.shift_days("MRN0042")
    assert out.StudyDate == deid._shift_date("20200315", days) != "20200315" and out.StudyTime == "101500"
    assert out.AcquisitionDateTime[:8] == out.StudyDate and out.AcquisitionDateTime[8:] == "102000.000000"
    # into sequences: D gives a dummy, dates shift, UIDs map consistently, standard UIDs stay
    obs = out.VerifyingObserverSequence[0]
    assert obs.VerifyingObserverName == "ANONYMOUS" and obs.VerifyingOrganization == "ANONYMIZED"
    assert obs.VerificationDateTime[:8] == deid._shift_date("20200316", days)
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == deid.uid("1.3.6.1.4.1.5962.99.7") != "1.3.6.1.4.1.5962.99.7"
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.SOPInstanceUID == deid.uid(ct.SOPInstanceUID) == out.file_meta.MediaStorageSOPInstanceUID
    # overlays' data and comments, curves and private tags go; pixels stay
    assert 0x60003000 not in out and 0x60004000 not in out and 0x50000005 not in out
    assert not any(e.tag.is_private for e in out.iterall())
    assert out.PixelData == ct.PixelData and out.PatientIdentityRemoved == "YES"
    assert len(out.DeidentificationMethod) <= 64
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == ["113100", "113107", "113108"]


def test_keep_descriptors_and_salt(ct: Dataset) -> None:
    kept = Deidentifier(salt="a", keep_descriptors=True).dataset(ct)
    assert kept.SeriesDescription == "CHEST W/O Dr Who" and kept.ProtocolName == "Smith protocol"
    other = Deidentifier(salt="b").dataset(ct)
    assert other.PatientID != kept.PatientID and other.SOPInstanceUID != kept.SOPInstanceUID

