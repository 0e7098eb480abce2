"""The :class:`Assistant`: questions about one patient's record, answered from it with citations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError
from ..records import Missing, PatientRecord
from .answer import DEFAULT_OF_REF, REFUSED, Answer, Citation, make_ref, split_ref
from .engine import answer_query, parse_question
from .index import RecordIndex

__all__ = ["Assistant", "AssistantError", "load_patient", "events_from_fhir"]


class AssistantError(MedmmError):
    """The assistant cannot work on this input (unknown patient, unusable endpoint ...)."""


class Assistant:
    """Answer questions about one patient from the record, every statement cited.

    Parameters
    ----------
    record:
        The patient's :class:`~medmm.records.PatientRecord`.
    model:
        Optional trained model (a :class:`~medmm.deploy.runtime.Predictor` or a
        :class:`~medmm.models.multimodal.MultimodalModel`) for risk questions.
    monitor:
        Optional :class:`~medmm.monitor.health.HealthMonitor` whose alerts "why did you alert"
        questions explain.
    events:
        The patient's EHR event table (conditions, medications, labs ... with dates), e.g. from
        a FHIR import's ``events/<pid>.events.csv`` or :func:`events_from_fhir`.
    sources:
        modality -> the file it was read from (shown in citations).
    now:
        The time questions are asked at; default the record's index time.
    phraser:
        Optional :class:`~medmm.assistant.llm.LLMPhraser`: a language model rephrases each
        answer from its evidence only, and the reply is used only when it passes verification.
    modalities:
        The cohort's declared modalities (a :class:`~medmm.records.ModalitySpec` or mapping
        ``name -> kind``); default: each name's kind from the default names or its value. Every
        ``series``, ``table`` and ``text`` modality of the record is indexed, asked about and cited.
    """

    def __init__(self, record: PatientRecord, model: Any = None, monitor: Any = None, *, events: Any = None,
                 sources: dict[str, str] | None = None, now: Any = None, phraser: Any = None,
                 modalities: Any = None) -> None:
        if not isinstance(record, PatientRecord):
            raise AssistantError(f"the assistant needs a PatientRecord, got {type(record).__name__}",
                                 hint="load the patient with medmm.assistant.load_patient(manifest, patient_id)")
        self.record = record
        self.model = model
        self.monitor = monitor
        self.phraser = phraser
        self.index = RecordIndex(record, events=events, sources=sources, now=now, modalities=modalities)

    @property
    def patient_id(self) -> str:
        return self.record.patient_id

    def ask(self, question: str) -> Answer:
        """The answer to ``question`` (raises :class:`~medmm.assistant.engine.QuestionError` for an
        empty or unparseable question)."""
        from .verify import dates_in, numbers_in

        query = parse_question(question, self.index)
        ans = answer_query(query, self.index, model=self.model, monitor=self.monitor, patient_id=self.patient_id)
        ans.patient_id = self.patient_id
        ans._assistant = self
        ctx = {"now": self.index.now} if self.index.now is not None else {}
        for k in ("start", "end", "at"):
            if getattr(query, k) is not None:
                ctx[f"query_{k}"] = getattr(query, k)
        if query.window_hours is not None:
            ctx["window_hours"] = query.window_hours
            ctx["window_days"] = query.window_hours / 24
        for i, n in enumerate(numbers_in(query.question)):
            ctx[f"question_number_{i}"] = float(n)
        for i, d in enumerate(dates_in(query.question)):
            ctx[f"question_date_{i}"] = d
        ans.context = ctx
        if self.phraser is not None and ans.status != REFUSED:
            ans = self.phraser.phrase(ans)
        return ans

    __call__ = ask

    def resolve(self, citation: Citation) -> dict[str, Any]:
        """The record item a citation points to: ``{'value', 'time', 'text'}``; raises
        :class:`AssistantError` when it does not resolve."""
        import pandas as pd

        ref = citation.ref
        rec = self.record
        kind, modality, rest = split_ref(ref)
        if kind in DEFAULT_OF_REF and citation.modality and citation.modality != modality:
            raise AssistantError(f"citation {ref!r} points into modality {modality!r} but says it is from "
                                 f"{citation.modality!r}", hint="cite a declared modality's items with its name, "
                                 f"e.g. {make_ref(kind, citation.modality, rest)!r}")
        try:
            if kind == "V":
                frame = rec.modality(modality).frame
                row = frame.iloc[int(rest)]
                return {"value": float(row["value"]), "time": pd.Timestamp(row["time"]), "text": str(row["signal"]),
                        "unit": str(row.get("unit", "")), "modality": modality}
            if kind == "E" and rest[:1].isdigit():
                row = self.index.events.iloc[int(rest)]
                v = pd.to_numeric(row["value"], errors="coerce")
                value = float(v) if pd.notna(v) else str(row["code"])
                return {"value": value, "time": pd.Timestamp(row["time"]), "text": str(row["name"]),
                        "unit": str(row.get("unit", "")), "modality": "ehr"}
            if kind == "T" and rest.startswith(":"):
                feat = rest[1:]
                tab = rec.modality(modality)
                v = tab.values[feat]
                return {"value": v, "time": rec.index_time, "text": feat, "unit": tab.units.get(feat, ""),
                        "modality": modality}
            if kind == "N":
                k, span = rest.split(":")
                a, b = (int(x) for x in span.split("-"))
                note = rec.modality(modality).notes[int(k)]
                if not 0 <= a < b <= len(note.text):
                    raise IndexError(f"span {a}-{b} is outside the note's {len(note.text)} characters")
                return {"value": None, "time": note.time, "text": note.text[a:b], "unit": "", "modality": modality}
            if kind == "A" and rest.isdigit():
                a = self.monitor.alerts[int(rest)]
                return {"value": a.level, "time": pd.Timestamp(a.time), "text": "\n".join(a.explanation), "unit": ""}
            if kind == "M" and rest.startswith(":"):
                m = rest[1:]
                if isinstance(rec.modality(m), Missing):
                    raise KeyError(m)
                return {"value": None, "time": rec.index_time, "text": m, "unit": "", "modality": m}
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise AssistantError(f"citation {ref!r} does not resolve in patient {self.patient_id}'s record ({exc})",
                                 hint="cite only items of this record") from None
        raise AssistantError(f"unknown citation kind {ref!r}", hint="cite V, E, T, N, A or M items (see Citation)")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_manifest(cls, manifest: str | Path, patient_id: str, **kwargs: Any) -> "Assistant":
        """The assistant of one patient of a cohort manifest (EHR events are read from a FHIR
        import's ``events/<pid>.events.csv`` when there is one)."""
        from ..cohort import modality_spec

        record, events, sources = load_patient(manifest, patient_id)
        kwargs.setdefault("modalities", modality_spec(manifest))
        return cls(record, events=events, sources=sources, **kwargs)

    @classmethod
    def from_bundle(cls, path: str | Path | None = None, *, data: Any = None, index_time: Any = None,
                    **kwargs: Any) -> "Assistant":
        """The assistant of the patient of one FHIR R4 Bundle: notes, vital signs and EHR events
        (cited by their FHIR resource ids); ``index_time`` defaults to the bundle's last event."""
        from ..io.fhir import load_bundle
        from ..io.json_record import record_from_bundle

        bundle = load_bundle(path, data=data)
        if bundle.patient_id is None:
            raise AssistantError("the bundle has no Patient", path=str(path) if path else None,
                                 hint="give one patient's Bundle with its Patient resource")
        events = events_from_fhir(bundle)
        record = record_from_bundle(bundle, index_time=index_time)
        if index_time is None:
            times = [t for t in (*events["time"].dropna(), record.index_time) if t is not None]
            if times:
                record = record_from_bundle(bundle, index_time=max(times))
        src = str(path) if path is not None else "bundle"
        return cls(record, events=events, sources={"vitals": f"{src} (vital-sign Observations)", "notes": src,
                                                   "events": src}, **kwargs)

    @classmethod
    def from_monitor(cls, monitor: Any, patient_id: str, **kwargs: Any) -> "Assistant":
        """The assistant of a patient the health monitor follows: its observation window as the
        vital signs, the notes / EHR / image registered with ``set_context``."""
        import pandas as pd

        from ..records import Vitals

        pid = str(patient_id)
        if pid not in monitor.patients:
            raise AssistantError(f"the monitor has no patient {pid!r}", column="patient_id",
                                 hint="post the patient's observations to the monitor first")
        p = monitor.patients[pid]
        frame = pd.DataFrame(list(p.obs), columns=["time", "signal", "value", "unit"])
        if len(frame):
            frame["time"] = frame["time"].astype("datetime64[ns]")
            frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
        ctx = p.context
        last = [t for t, _ in p.latest.values()]
        now = max([*frame["time"], *last]) if len(frame) or last else None
        record = PatientRecord(pid, vitals=Vitals(frame) if len(frame) else Missing("empty"),
                               notes=ctx.get("notes", Missing()), ehr=ctx.get("ehr", Missing()),
                               image=ctx.get("image", Missing()), index_time=now,
                               **{k: v for k, v in ctx.items() if k not in ("notes", "ehr", "image", "vitals")})
        return cls(record, monitor=monitor, sources={"vitals": "health monitor observations"}, **kwargs)


def events_from_fhir(bundle: Any) -> Any:
    """The EHR events of a :class:`~medmm.io.fhir.FhirBundle` as
    :func:`medmm.io.ehr.events_from_bundle` gives them, with a ``source`` column: each row's
    FHIR resource (``Condition/<id>``) or, without an id, its ``Bundle.entry[i]``."""
    import pandas as pd

    from ..io.ehr import OBSERVATION_KINDS

    def src(kind: str, item: dict[str, Any]) -> str:
        if item.get("id"):
            return f"{kind}/{item['id']}"
        return f"Bundle.entry[{item['entry']}]" if item.get("entry") is not None else kind

    rows = []
    for e in bundle.encounters:
        rows.append((e["start"], "encounter", e["class"] or e["code"], e["display"], None, "", e["end"],
                     src("Encounter", e)))
    for c in bundle.conditions:
        rows.append((c["time"], "condition", c["code"], c["display"], None, "", c["end"], src("Condition", c)))
    for o in bundle.observations:
        kind = OBSERVATION_KINDS.get(o["category"])
        if kind:
            rows.append((o["time"], kind, o["code"], o["display"], o["value"], o["unit"], None,
                         src("Observation", o)))
    for m in bundle.medications:
        rows.append((m["time"], "medication", m["code"], m["display"], None, "", None, src("MedicationRequest", m)))
    for pr in bundle.procedures:
        rows.append((pr["time"], "procedure", pr["code"], pr["display"], None, "", None, src("Procedure", pr)))
    for im in bundle.imaging:
        rows.append((im["time"], "imaging", im["modalities"], im["uid"], float(im["n_instances"]), "", None,
                     src("ImagingStudy", im)))
    df = pd.DataFrame(rows, columns=["time", "kind", "code", "name", "value", "unit", "end", "source"])
    df.insert(0, "patient_id", bundle.patient_id)
    df["time"] = pd.to_datetime(df["time"]).astype("datetime64[ns]")
    df["end"] = pd.to_datetime(df["end"]).astype("datetime64[ns]")
    return df


def load_patient(manifest: str | Path, patient_id: str) -> tuple[PatientRecord, Any, dict[str, str]]:
    """One patient of a cohort manifest: ``(record, events or None, sources)``. Only that
    patient's files are read."""
    from ..cohort import Cohort

    manifest = Path(manifest)
    if not manifest.is_file():
        raise ReadError("manifest not found", path=manifest, hint="give the cohort's manifest.csv")
    cohort = Cohort.from_manifest(manifest, progress=False)
    ids = cohort.patient_ids
    pid = str(patient_id)
    if pid not in ids:
        close = [i for i in ids if i.lower().startswith(pid[:3].lower())][:5] or ids[:5]
        raise AssistantError(f"patient {pid!r} is not in the cohort ({len(ids)} patients)", path=manifest,
                             column="patient_id", hint=f"give a patient_id of the manifest, e.g. {', '.join(close)}")
    k = ids.index(pid)
    record = cohort[k]  # only this patient's files are read
    raw = cohort.rows[k]
    sources = {m: str(raw.get(f"{m}_path")) for m in dict.fromkeys(("image", "notes", "vitals", "ehr", *cohort.modalities))
               if isinstance(raw.get(f"{m}_path"), str) and raw.get(f"{m}_path")}
    events = None
    from ..io.fhir_cohort import events_file

    ev_path = events_file(manifest.parent, pid)
    if ev_path.is_file():
        from ..io.ehr import load_events

        ev = load_events(ev_path)
        events = ev[ev["patient_id"].astype(str) == pid].reset_index(drop=True)
        events = events.assign(source=[f"events/{ev_path.name} row {i}" for i in range(len(events))])
        sources["events"] = f"events/{ev_path.name}"
    return record, events, sources
