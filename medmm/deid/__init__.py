"""De-identification, below the readers: DICOM headers (:mod:`.dicom`, PS3.15 Table E.1-1) and
clinical text (:mod:`.text`, PHI scrubbing). Readers apply them on request (``deidentify=`` /
``deid=``); ``medmm dicom deid`` writes de-identified copies."""
