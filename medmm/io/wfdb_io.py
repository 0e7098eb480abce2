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
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MedmmError, ReadError
from ..problems import ProblemReport
from ..records import Vitals
from .common import problem, to_timestamp
from .vitals import SIGNALS, finish_vitals, canonical_signal, clean_vitals, drop_signal_loss

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Waveform", "read_wfdb_vitals", "read_ecg", "read_ecg_heart_rate", "is_ecg_lead", "sample_times",
           "WAVEFORM_HZ"]

_VOLT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3, "nv": 1e-6}
#: a lead after an optional ``ECG``/``EKG``/``Lead`` prefix: limb (I-III, aVR/aVL/aVF, D1-D3), precordial
#: (V, V1-V9, V3R-V6R), modified (MLI-MLIII, MCL1-6, MV1-2, CM5, CC5, CS), Frank (VX-VZ); a bare digit only
#: after the prefix (``ECG 1``). PLETH/PPG, ABP, RESP, ``ECG HR`` are not leads.
_LEAD_RE = re.compile(
    r"^(?:(?P<pre>ECG|EKG)[\s_.:-]*)?(?:LEAD[\s_.:-]*)?"
    r"(?P<lead>I{1,3}|AV[RLF]|D[1-3]|V(?:[1-9]R?)?|ML(?:I{1,3}|[1-3])|MCL[1-6]?|MV[1-6]|CM[1-6]|CC[1-6]|CS\d?"
    r"|V[XYZ]|\d)?[+]?$")
#: channels sampled at least this fast are waveforms, not vital-sign numerics
WAVEFORM_HZ = 5.0


def is_ecg_lead(name: str, unit: str | None = None) -> bool:
    """Whether a channel is an ECG lead (``II``, ``V1``, ``MLII``, ``MCL1``, ``ECG 1``, ``ECG`` ...).

    A channel whose ``unit`` is given and is not a voltage (``bpm``, ``NU``, ``mmHg``) is not.
    """
    key = re.sub(r"\s+", " ", str(name).strip().upper())
    m = _LEAD_RE.match(key)
    if not m or not (m["pre"] or m["lead"]) or (m["lead"] or "").isdigit() and not m["pre"]:
        return False
    return unit is None or not unit.strip() or unit.strip().lower() in _VOLT


def _lead_name(label: str) -> str:
    """``'Lead I (Einthoven)'`` -> ``'I'``, ``'Lead aVR'`` -> ``'aVR'``, ``'ECG II'`` -> ``'II'``;
    others unchanged."""
    m = re.match(r"^\s*(?:(?:ecg|ekg)[\s_.:-]*)?(?:lead\s+)?(?P<lead>I{1,3}|aV[RLF]|V[1-6]|MLI{1,3})\b", label, re.I)
    if not m:
        return label.strip()
    lead = m["lead"]
    return "aV" + lead[2:].upper() if lead.lower().startswith("av") else lead.upper()


def _record_name(path: str | Path) -> str:
    p = str(path)
    return p[:-4] if p.endswith((".hea", ".dat")) else p


def _read_record(name: str) -> Any:
    """A WFDB record; a multi-segment one (fixed or variable layout, with ``~`` gaps) joined into
    one signal matrix over the layout's channels, gaps and absent channels as NaN."""
    import wfdb

    rec = wfdb.rdrecord(name, m2s=False)
    if not isinstance(rec, wfdb.MultiRecord):
        return rec
    segs = [(g, n) for g, n in zip(rec.segments, rec.seg_len)]
    head = next((g for g, n in segs if g is not None and n == 0), None)  # variable layout
    if head is None:
        head = next((g for g, _ in segs if g is not None), None)
    if head is None:
        raise ValueError("every segment is a gap")
    names, units = list(head.sig_name), list(head.units or [""] * len(head.sig_name))
    out = np.full((int(sum(n for _, n in segs)), len(names)), np.nan)
    pos = 0
    for g, n in segs:
        if g is not None and n and g.p_signal is not None:
            for j, nm in enumerate(g.sig_name):
                if nm in names:
                    out[pos:pos + n, names.index(nm)] = g.p_signal[:, j]
        pos += n
    return wfdb.Record(record_name=rec.record_name, n_sig=len(names), fs=rec.fs, sig_len=len(out),
                       base_date=rec.base_date, base_time=rec.base_time, p_signal=out, sig_name=names,
                       units=units)


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


def sample_times(start: "pd.Timestamp", n: int, fs: float) -> np.ndarray:
    """``start + k / fs`` for ``k < n`` as ``datetime64``, exact to the unit (no float drift).

    ``fs`` is read as the nearest fraction with a denominator up to 10,000 (a header's
    ``0.0166667`` is 1/60 Hz), offsets are computed in integers and rounded half up. The unit is
    ns, or us where the times lie beyond the ns range (MIMIC's de-identified 2700s-2900s).
    """
    import pandas as pd

    f = Fraction(float(fs)).limit_denominator(10_000)
    if f <= 0:
        raise ValueError(f"sampling frequency {fs!r} is not positive")
    unit, scale = "ns", 10**9
    try:
        pd.Timestamp(start).as_unit("ns")
        (pd.Timestamp(start) + pd.Timedelta(seconds=float(n / f) + 1)).as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta):
        unit, scale = "us", 10**6
    k = np.arange(n, dtype=np.int64)
    off = (k * (scale * f.denominator) + f.numerator // 2) // f.numerator
    return pd.Timestamp(start).as_unit(unit).to_datetime64() + off.astype(f"timedelta64[{unit}]")


def read_wfdb_vitals(
    path: str | Path,
    *,
    index_time: Any = None,
    start_time: Any = None,
    strict: bool = False,
    report: ProblemReport | None = None,
    signal_loss: Any = "device",
    waveform_hz: float = WAVEFORM_HZ,
    **_: Any,
) -> Vitals:
    """Read a WFDB numerics record (``.hea`` + data, single- or multi-segment) into cleaned long vitals.

    Channel names are mapped to medmm's signals (``HR`` -> ``heart_rate``, ``ABPSys`` ->
    ``abp_sys``, ``NBPSys`` -> ``sbp``, ``PULSE`` -> ``pulse_rate`` ...); units are converted as
    for any vitals file. Sample ``k`` is at ``base + k / fs`` exactly (:func:`sample_times`);
    de-identified dates in the 2700s-2900s are kept (``datetime64[us]``).

    The device's "no signal" readings (0, flat-lines; per signal, :data:`~medmm.io.vitals.
    DEVICE_SIGNAL_LOSS`, changed with ``signal_loss``) are left out and reported, one problem
    per signal and kind. Channels sampled at ``waveform_hz`` or faster are waveforms, not vitals:
    ECG leads give the heart rate their QRS complexes imply (when the record has no heart-rate
    numeric); other waveforms (PLETH, ABP, RESP ...) are skipped with one problem per channel.
    """
    import pandas as pd

    from .vitals import signal_loss_rules

    rules = signal_loss_rules(signal_loss)
    name = _record_name(path)
    try:
        rec = _read_record(name)
    except (FileNotFoundError, ValueError, OSError, IndexError, AttributeError, TypeError) as exc:
        raise ReadError(f"not a readable WFDB record ({exc})", path=path,
                        hint="give the .hea header next to its data file (and every segment of a multi-segment record)"
                        ) from exc
    start = _base_time(rec, start_time, path)
    problems: list[MedmmError] = []
    if rec.p_signal is None or rec.n_sig == 0 or not rec.fs:
        raise ReadError("record has no signal", path=path, hint="remove it from the manifest")
    sig = np.asarray(rec.p_signal, dtype=float)
    t = sample_times(start, sig.shape[0], float(rec.fs))
    spf = list(getattr(rec, "samps_per_frame", None) or [1] * rec.n_sig)
    units = list(rec.units or [""] * rec.n_sig)
    frames, ecg = [], []
    for k, (cname, unit) in enumerate(zip(rec.sig_name, units)):
        hz = float(rec.fs) * (spf[k] or 1)
        if hz >= waveform_hz:
            if is_ecg_lead(cname, unit):
                ecg.append(k)
            else:
                problems.append(problem(
                    f"channel {cname!r} is a {hz:g} Hz waveform, not a vital-sign numeric; skipped", path=path,
                    column=f"sig_name[{k}]", hint="read the record's numerics (MIMIC's '...n' record) as vitals"))
            continue
        signal = canonical_signal(cname)
        if signal not in SIGNALS:
            problems.append(problem(f"unknown channel {cname!r}; kept unconverted", path=path,
                                    column=f"sig_name[{k}]", hint=f"known signals: {sorted(SIGNALS)}"))
        col = sig[:, k]
        ok = np.flatnonzero(~np.isnan(col))
        frame = pd.DataFrame({"time": t[ok], "signal": signal, "value": col[ok], "unit": unit or ""}, index=ok)
        if signal in rules:
            frame = drop_signal_loss(frame, {signal: rules[signal]}, path=path, problems=problems,
                                     column=f"sig_name[{k}]")
        frames.append(frame)
    has_hr = any(len(f) and f["signal"].iloc[0] == "heart_rate" for f in frames)
    if ecg and not has_hr:
        wf = Waveform((sig[:, ecg] * np.asarray([_VOLT.get((units[k] or "mV").lower(), 1.0) for k in ecg])
                       ).astype(np.float32), float(rec.fs), [_lead_name(rec.sig_name[k]) for k in ecg],
                      pd.Timestamp(t[0]))
        hr = wf.heart_rate()
        if hr.empty:
            problems.append(problem("no QRS complexes detected in the ECG leads", path=path, column="sig_name",
                                    hint="check the ECG's leads and sampling rate"))
        else:
            secs = (hr["time"] - pd.Timestamp(t[0])).dt.total_seconds().to_numpy()
            hr.index = np.minimum(np.round(secs * float(rec.fs)), sig.shape[0] - 1).astype(np.int64)
            frames.append(hr)
    elif ecg:
        problems.append(problem(f"ECG lead(s) {[rec.sig_name[k] for k in ecg]} skipped: the record has a heart-rate "
                                "numeric", path=path, column="sig_name", hint="read ECGs with the 'ecg_wfdb' format"))
    if not frames:
        raise ReadError("no vital-sign channel in the record"
                        + (f" ({len(problems)} problem(s), first: {problems[0].message})" if problems else ""),
                        path=path, hint="give a numerics record, or an ECG record for its heart rate")
    df = pd.concat(frames)
    return finish_vitals(clean_vitals(df, path=path, problems=problems, rename=False), problems, path=path,
                         strict=strict, index_time=index_time, report=report)


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
    keep = [k for k, n in enumerate(rec.sig_name) if is_ecg_lead(n, (rec.units or [None] * rec.n_sig)[k])]
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
    report: ProblemReport | None = None,
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
    return finish_vitals(clean_vitals(df, path=path, problems=problems, rename=False), problems, path=path,
                         strict=strict, index_time=index_time, report=report)
