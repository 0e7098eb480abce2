"""DICOM de-identification: kept as a public path; the code is :mod:`medmm.deid.dicom`."""

from ..deid.dicom import (
    DESCRIPTORS,
    PROFILE_RELEASE,
    RETAINED_CHARACTERISTICS,
    Deidentifier,
    action_for,
    deidentify_path,
    profile,
)

__all__ = ["Deidentifier", "deidentify_path", "profile", "action_for", "DESCRIPTORS", "RETAINED_CHARACTERISTICS",
           "PROFILE_RELEASE"]
