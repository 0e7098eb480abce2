"""PhysioNet WFDB records and ECG waveforms (WFDB or DICOM waveform) as vital signs.

* :func:`read_wfdb_vitals` — a numerics record (``HR``, ``SpO2``, ``RESP``, ``ABP Sys``,
  ``NBP Sys`` ... as in MIMIC's numerics) to a cleaned long :class:`~medmm.records.Vitals`
  (a record of ECG leads only gives its derived heart rate).
* :func:`read_ecg` — an ECG record (WFDB, or a DICOM 12-lead / general ECG waveform such as
  pydicom's ``waveform_ecg.dcm``) to a :class:`Waveform` (samples x leads, in mV).
* :func:`read_ecg_heart_rate` — the heart rate derived from an ECG (QRS detection with
  ``wfdb.processing.XQRS``), as vitals.

Times are absolute: a record's ``base_date``/``base_time`` (DICOM ``AcquisitionDateTime``), or
the ``start_time`` passed in; a record with neither raises, since a guessed time could put
the future before the index time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MedmmError, ReadError
from ..records import Vitals
from .common import problem, to_timestamp
from .vitals import SIGNALS, _finish, canonical_signal, clean_vitals

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Waveform", "read_wfdb_vitals", "read_ecg", "read_ecg_heart_rate", "is_ecg_lead"]

_ECG_LEADS = {"i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "mli", "mlii",
              "mliii", "ecg", "ecg1", "ecg2", "ecg i", "ecg ii", "ecg iii", "mv1", "mv2", "v", "lead i",
              "lead ii", "lead iii", "d1", "d2", "d3"}
_VOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3, "nv": 1e-6}


def is_ecg_lead(name: str) -> bool:
    """Whether a channel name is an ECG lead (``II``, ``V1``, ``MLII``, ``ECG`` ...)."""
    return _lead_name(name).lower() in _ECG_LEADS


def _lead_name(label: str) -> str:
    """``'Lead I (Einthoven)'`` -> ``'I'``, ``'Lead aVR'`` -> ``'aVR'``, others unchanged."""
    m = re.match(r"^\s*(?:lead\s+)?(?P<lead>I{1,3}|aV[RLF]|V[1-6]|MLI{1,3})\b", label, re.I)
    if not m:
        return label.strip()
    lead = m["lead"]
    return "aV" + lead[2:].upper() if lead.lower().startswith("av") else lead.upper()


def _record_name(path: str | Path) -> str:
    p = str(path)
    return p[:-4] if p.endswith((".hea", ".dat")) else p


def _base_time(rec: Any, start_time: Any, path: Any) -> "pd.Timestamp":
    import pandas as pd

    if start_time is not None:
        return to_timestamp(start_time)
    if getattr(rec, "base_datetime", None) is not None:
        return to_timestamp(pd.Timestamp(rec.base_datetime))
    if getattr(rec, "base_date", None) is not None and getattr(rec, "base_time", None) is not None:
        return to_timestamp(pd.Timestamp.combine(rec.base_date, rec.base_time))
    raise ReadError(
        "the record has no base date and time, so its samples cannot be placed in time",
        path=path,
        column="base_date",
        hint="write base_date/base_time into the header, or pass start_time= to the reader",
    )


def read_wfdb_vitals(
    path: str | Path,
    *,
    index_time: Any = None,
    start_time: Any = None,
    strict: bool = False,
    **_: Any,
) -> Vitals:
    """Read a WFDB numerics record (``.hea`` + data) into cleaned long vitals.

    Channel names are mapped to medmm's signals (``HR`` -> ``heart_rate``, ``ABP Sys`` ->
    ``abp_sys``, ``NBP Sys`` -> ``sbp`` ...); units are converted as for any vitals file.
    ECG waveform channels are skipped (use :func:`read_ecg_heart_rate`).
    """
    import pandas as pd
    import wfdb

    name = _record_name(path)
    try:
        rec = wfdb.rdrecord(name)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ReadError(f"not a readable WFDB record ({exc})", path=path,
                        hint="give the .hea header next to its data file") from exc
    start = _base_time(rec, start_time, path)
    problems: list[MedmmError] = []
    if rec.p_signal is None or rec.n_sig == 0:
        raise ReadError("record has no signal", path=path, hint="remove it from the manifest")
    sig = np.asarray(rec.p_signal, dtype=float)
    t = start + pd.to_timedelta(np.arange(sig.shape[0]) / float(rec.fs), unit="s")
    frames = []
    for k, (cname, unit) in enumerate(zip(rec.sig_name, rec.units)):
        if is_ecg_lead(cname):
            problems.append(problem(f"channel {cname!r} is an ECG waveform; skipped here", path=path,
                                    column=f"sig_name[{k}]", hint="read ECGs with the 'ecg_wfdb' format"))
            continue
        signal = canonical_signal(cname)
        if signal not in SIGNALS:
            problems.append(problem(f"unknown channel {cname!r}; kept unconverted", path=path,
                                    column=f"sig_name[{k}]", hint=f"known signals: {sorted(SIGNALS)}"))
        col = sig[:, k]
        ok = ~np.isnan(col)
        frames.append(pd.DataFrame({"time": t[ok], "signal": signal, "value": col[ok], "unit": unit or ""},
                                   index=np.flatnonzero(ok)))
    if not frames:  # an ECG record: its derived heart rate
        return read_ecg_heart_rate(path, index_time=index_time, start_time=start_time, strict=strict)
    df = pd.concat(frames)
    return _finish(clean_vitals(df, path=path, problems=problems, rename=False), problems, path=path,
                   strict=strict, index_time=index_time)


# --------------------------------------------------------------------------- ECG


@dataclass
class Waveform:
    """A multichannel waveform: ``signal`` float32 ``[samples, leads]`` in mV, at ``fs`` Hz."""

    signal: np.ndarray
    fs: float
    leads: list[str]
    start: "pd.Timestamp | None" = None
    units: str = "mV"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[0] / self.fs

    def lead(self, name: str) -> np.ndarray:
        return self.signal[:, self.leads.index(name)]

    def qrs(self, lead: str | None = None) -> np.ndarray:
        """Sample indices of the QRS complexes (wfdb's XQRS) in ``lead`` (default II)."""
        import wfdb.processing as wp

        lead = lead or ("II" if "II" in self.leads else next((x for x in self.leads if is_ecg_lead(x)),
                                                                self.leads[0]))
        x = np.nan_to_num(self.lead(lead).astype(np.float64))
        fs = self.fs
        if fs > 500:  # XQRS is tuned for clinical rates; decimate long high-rate records
            step = int(fs // 250)
            x, fs = x[::step], fs / step
        else:
            step = 1
        xq = wp.XQRS(sig=x, fs=fs)
        xq.detect(verbose=False)
        return np.asarray(xq.qrs_inds, dtype=int) * step

    def heart_rate(self, *, lead: str | None = None, window_s: float = 10.0) -> "pd.DataFrame":
        """Heart rate per window (median of beat-to-beat rates) as a long vitals frame.

        Each row is stamped at the end of its window (what was known by then).
        """
        import pandas as pd

        q = self.qrs(lead)
        rows = []
        if len(q) >= 2:
            t_beat = q[1:] / self.fs
            hr = 60.0 * self.fs / np.diff(q)
            n_win = max(1, int(np.ceil(self.duration_s / window_s - 1e-9)))
            for w in range(n_win):
                sel = (t_beat >= w * window_s) & (t_beat < (w + 1) * window_s)
                if sel.sum() >= 1:
                    end = min((w + 1) * window_s, self.duration_s)
                    rows.append((end, float(np.median(hr[sel]))))
        start = self.start if self.start is not None else pd.Timestamp(0)
        return pd.DataFrame({
            "time": [start + pd.Timedelta(seconds=s) for s, _ in rows],
            "signal": "heart_rate", "value": [v for _, v in rows], "unit": "bpm",
        }, columns=["time", "signal", "value", "unit"])

    def __repr__(self) -> str:
        return (f"Waveform(leads={self.leads}, fs={self.fs:g} Hz, duration={self.duration_s:.1f} s, "
                f"start={self.start})")


def _read_dicom_ecg(path: Path, group: int | None) -> Waveform:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as exc:
        raise ReadError(f"not a readable DICOM file ({exc})", path=path, hint="check the file") from exc
    if "WaveformSequence" not in ds:
        raise ReadError("DICOM file has no WaveformSequence", path=path, column="WaveformSequence",
                        hint="give a DICOM ECG waveform object")
    seq = ds.WaveformSequence
    if group is None:
        labels = [str(g.get("MultiplexGroupLabel", "")).upper() for g in seq]
        group = next((i for i, lab in enumerate(labels) if "RHYTHM" in lab), 0)
    g = seq[group]
    arr = ds.waveform_array(group).astype(np.float64)  # sensitivity, correction, baseline applied
    leads, scale = [], []
    for k, ch in enumerate(g.ChannelDefinitionSequence):
        src = ch.ChannelSourceSequence[0] if "ChannelSourceSequence" in ch else None
        label = str(ch.get("ChannelLabel") or (src.CodeMeaning if src is not None else f"ch{k}"))
        leads.append(_lead_name(label))
        unit = "uV"
        if "ChannelSensitivityUnitsSequence" in ch:
            unit = str(ch.ChannelSensitivityUnitsSequence[0].CodeValue)
        if unit.lower() not in _VOLT:
            raise ReadError(f"channel {label!r} has unit {unit!r}, not a voltage", path=path,
                            column="ChannelSensitivityUnitsSequence", hint="give an ECG in uV or mV")
        scale.append(_VOLT[unit.lower()])
    start = None
    for key in ("AcquisitionDateTime",):
        if ds.get(key):
            start = _dicom_dt(str(ds.get(key)))
    if start is None and ds.get("ContentDate") and ds.get("ContentTime"):
        start = _dicom_dt(str(ds.ContentDate) + str(ds.ContentTime))
    offset = float(g.get("MultiplexGroupTimeOffset", 0) or 0) / 1000.0
    if start is not None and offset:
        import pandas as pd

        start = start + pd.Timedelta(seconds=offset)
    return Waveform((arr * np.asarray(scale)).astype(np.float32), float(g.SamplingFrequency), leads, start,
                    meta={"source": "dicom", "group": str(g.get("MultiplexGroupLabel", "")),
                          "modality": str(ds.get("Modality", ""))})


def _dicom_dt(s: str) -> "pd.Timestamp | None":
    import pandas as pd

    s = s.strip()
    m = re.match(r"^(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$", s)
    if not m:
        return None
    txt = f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:]}T{m[2] or '00'}:{m[3] or '00'}:{m[4] or '00'}{m[5] or ''}"
    if m[6]:
        txt += m[6][:3] + ":" + m[6][3:]
    return to_timestamp(pd.Timestamp(txt))


def read_ecg(path: str | Path, *, start_time: Any = None, group: int | None = None) -> Waveform:
    """Read an ECG: a DICOM waveform (``.dcm``) or a WFDB record (``.hea``); signals in mV."""
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        wf = _read_dicom_ecg(p, group)
        if start_time is not None:
            wf.start = to_timestamp(start_time)
        return wf
    import wfdb

    try:
        rec = wfdb.rdrecord(_record_name(p))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ReadError(f"not a readable WFDB record ({exc})", path=path,
                        hint="give the .hea header next to its data file") from exc
    keep = [k for k, n in enumerate(rec.sig_name) if is_ecg_lead(n)]
    if not keep:
        raise ReadError(f"no ECG lead among channels {rec.sig_name}", path=path, column="sig_name",
                        hint="name ECG channels I, II, III, aVR, V1 ... or MLII")
    scale = []
    for k in keep:
        u = (rec.units[k] or "mV").lower()
        if u not in _VOLT:
            raise ReadError(f"channel {rec.sig_name[k]!r} has unit {rec.units[k]!r}, not a voltage", path=path,
                            column=f"units[{k}]", hint="give ECG leads in mV or uV")
        scale.append(_VOLT[u])
    try:
        start = _base_time(rec, start_time, path)
    except ReadError:
        start = None
    sig = (np.asarray(rec.p_signal)[:, keep] * np.asarray(scale)).astype(np.float32)
    return Waveform(sig, float(rec.fs), [_lead_name(rec.sig_name[k]) for k in keep], start,
                    meta={"source": "wfdb", "record": rec.record_name})


def read_ecg_heart_rate(
    path: str | Path,
    *,
    index_time: Any = None,
    start_time: Any = None,
    window_s: float = 10.0,
    strict: bool = False,
    **_: Any,
) -> Vitals:
    """The heart rate derived from an ECG (DICOM waveform or WFDB), as cleaned vitals."""
    wf = read_ecg(path, start_time=start_time)
    if wf.start is None:
        raise ReadError("the ECG has no acquisition time, so its heart rate cannot be placed in time",
                        path=path, column="AcquisitionDateTime",
                        hint="pass start_time= to the reader")
    problems: list[MedmmError] = []
    df = wf.heart_rate(window_s=window_s)
    if df.empty:
        raise ReadError("no QRS complexes detected", path=path, hint="check the ECG's leads and sampling rate")
    return _finish(clean_vitals(df, path=path, problems=problems, rename=False), problems, path=path,
                   strict=strict, index_time=index_time)
