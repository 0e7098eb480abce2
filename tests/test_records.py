import numpy as np
import pytest

from medmm.records import MODALITIES, Image, Missing, Notes, Note, PatientRecord, Tabular


def test_missing_is_falsy_and_keeps_its_reason():
    m = Missing("read_error", "bad file")
    assert not m
    assert m.reason == "read_error" and "bad file" in repr(m)


def test_record_presence_and_pattern():
    img = Image(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 3.0, 4.0, 1.0]))
    rec = PatientRecord("P1", image=img, notes=Notes([Note("no mass")]), ehr=Tabular({"age": 3}))
    assert rec.present == {"image": True, "notes": True, "vitals": False, "ehr": True}
    assert rec.pattern == "image+notes+ehr"
    masked = rec.masked("image", "notes")
    assert masked.pattern == "ehr" and masked.image.reason == "masked"
    assert rec.pattern == "image+notes+ehr"  # the original is untouched
    assert PatientRecord("P2").pattern == "none"
    assert "PatientRecord" in rec._repr_html_()


def test_image_spacing_world_coordinates_and_orientation():
    aff = np.array([[-1.5, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    img = Image(np.zeros((3, 3, 3), np.float32), aff)
    assert img.spacing == pytest.approx((1.5, 1.5, 2.0))
    assert img.orientation == "LPS"
    np.testing.assert_allclose(img.world_coordinates([[1, 2, 3]]), [[8.5, 17.0, 1.0]])
    with pytest.raises(ValueError):
        Image(np.zeros((2, 2, 2)), np.eye(3))


def test_modality_lookup_rejects_unknown_names():
    rec = PatientRecord("P1")
    for m in MODALITIES:
        assert isinstance(rec.modality(m), Missing)
    with pytest.raises(KeyError):
        rec.modality("genomics")
