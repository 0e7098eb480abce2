"""A folder of FHIR R4 bundles (one patient each, as Synthea writes them) to a medmm cohort.

:func:`import_fhir_cohort` streams the bundles (a process pool, one bundle in memory per
worker) and writes, under the output folder:

* ``manifest.csv`` — the synthetic cohort's columns (``patient_id, split, index_time, site,
  sex, image_path, notes_path, vitals_path, ehr_path, label_*``);
* ``notes/<pid>.jsonl`` — the patient's text DocumentReferences (note table; optionally
  PHI-scrubbed with the names from ``Patient.name``);
* ``vitals/<pid>.csv`` — vital-sign Observations by LOINC, long layout, cleaned;
* ``events/<pid>.events.csv`` — the EHR events (long layout), for other index times or windows;
* ``ehr.csv`` — one row per patient of EHR features at the index time (look-back window,
  leakage guard), with a vocabulary of codes fitted on the *training* patients only;
* ``problems.csv`` — every problem (file, patient, entry, field, message, hint), and per patient
  what the leakage guard left out (kind ``LeakageGuard``);
* ``import_report.json`` — counts, bytes, seconds and throughput.

Readers apply the index time again when the cohort is loaded, so files may hold later data.

Index time
----------
The default policy, ``'last-encounter-end'``, puts the prediction at the close of the patient's
last encounter (the *index encounter*): everything recorded during it (its vitals, labs and
notes, which Synthea stamps a fraction of a second after the encounter starts) is known at the
index time. An index encounter without an end (still open) ends at the latest resource that
references it. ``'last-encounter-start'`` predicts at admission: the index encounter's own notes
and results then fall after the index time and are left out, and the problem report says how
many, per patient.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MedmmError, ReadError
from ..problems import Problem, ProblemReport
from .common import PROBLEM_COLUMNS, to_timestamp

__all__ = ["ImportConfig", "ImportResult", "import_fhir_cohort", "convert_bundle", "events_file", "patient_file_stem"]

_SEX = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


@dataclass
class ImportConfig:
    """Settings of a FHIR import.

    ``index_time``: ``'last-encounter-end'`` (default: the close of the last encounter, see the
    module notes), ``'last-encounter-start'``, ``'last-event'``, an ISO time shared by all
    patients, or a CSV ``patient_id,index_time``.
    ``labels``: label name -> condition codes (SNOMED CT); ``label_<name>`` is 1 when such a
    condition starts within ``horizon`` after the index time, 0 when none does, empty when the
    patient already had it at the index time (prevalent).
    ``survival``: the name of a time-to-death task (e.g. ``'death'``): ``label_<name>.time`` (days
    from the index time) and ``label_<name>.event`` from ``Patient.deceasedDateTime`` or the last
    contact (:func:`survival_pair`), censored administratively at ``survival_horizon``; the task is
    declared (kind ``survival``) in the manifest's sidecar, so training reads it as one.
    """

    index_time: str = "last-encounter-end"
    lookback: str = "365D"
    horizon: str = "365D"
    labels: dict[str, list[str]] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] = (0.55, 0.15, 0.30)
    seed: int = 0
    min_patients: int = 5
    scrub_phi: bool = False
    validate: bool = False
    site: str = ""
    survival: str | None = None
    survival_horizon: str = "1825D"


@dataclass
class ImportResult:
    manifest: Path
    n_files: int
    n_patients: int
    n_failed: int
    n_problems: int
    n_bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.n_bytes / 1e6 / self.seconds if self.seconds > 0 else float("nan")


def _split(pid: str, seed: int, fractions: tuple[float, float, float]) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big") / 2**64
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def patient_file_stem(pid: str) -> str:
    """The file name stem of a patient's files in an import (``notes/<stem>.jsonl``, ...): the id with
    characters other than letters, digits and ``-_.`` replaced by ``_``, at most 120 characters."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in pid)[:120]


def events_file(out: str | Path, pid: str) -> Path:
    """Where an import in ``out`` keeps the EHR events of patient ``pid``."""
    return Path(out) / "events" / f"{patient_file_stem(pid)}.events.csv"


def _encounter_end(bundle: Any, enc: dict[str, Any]) -> Any:
    """An encounter's end; for an open one, the latest resource recorded in it (else its start)."""
    if enc["end"] is not None:
        return enc["end"]
    last = bundle.encounter_activity.get(str(enc["id"])) if enc.get("id") is not None else None
    return max(enc["start"], last) if last is not None else enc["start"]


def _index_time(policy: str, bundle: Any, events: Any, fixed: dict[str, Any]) -> tuple[Any, dict | None]:
    """``(index time, index encounter or None)`` of one patient under ``policy``."""
    if policy in fixed:
        return fixed[policy], None
    if bundle.patient_id in fixed:
        return fixed[bundle.patient_id], None
    if policy in ("last-encounter-start", "last-encounter-end") and bundle.encounters:
        enc = max(bundle.encounters, key=lambda e: e["start"])
        if policy == "last-encounter-start":
            return enc["start"], enc
        return max(_encounter_end(bundle, e) for e in bundle.encounters), enc
    if policy == "last-event" and len(events):
        return events["time"].max(), None
    return None, None


def _guard_report(bundle: Any, index: Any, enc: dict | None, vitals: Any, events: Any) -> dict[str, int]:
    """What the leakage guard leaves out of one patient: counts of notes, vitals, EHR events
    after the index time, and of notes of the index encounter among them."""
    late_notes = [n.time for n in bundle.notes if n.time is not None and n.time > index]
    in_index = 0
    if enc is not None:
        end = _encounter_end(bundle, enc)
        in_index = sum(enc["start"] <= t <= end for t in late_notes)
    return {"notes": len(late_notes), "index_encounter_notes": in_index,
            "vitals": int((vitals["time"] > index).sum()) if len(vitals) else 0,
            "events": int((events["time"] > index).sum()) if len(events) else 0}


def convert_bundle(path: str, out: str, cfg: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Convert one bundle file; returns the manifest row, raw features and problem rows.

    Runs in a worker process; raises nothing (a file that cannot be used gives
    ``row=None`` and its problem).
    """
    import pandas as pd

    from .ehr import event_features, events_from_bundle
    from .fhir import load_bundle
    from .vitals import vitals_from_observations

    rel = os.path.relpath(path, cfg["src"])
    found = ProblemReport(source=rel)
    result: dict[str, Any] = {"file": rel, "row": None, "features": None, "units": {}, "problems": found.problems,
                              "bytes": 0, "counts": {}, "guard": None}

    def add(errors: list[MedmmError], pid: str | None, severity: str = "warning") -> None:
        found.extend(Problem.from_error(e, severity, patient_id=pid, path=rel) for e in errors)

    try:
        result["bytes"] = os.path.getsize(path)
        bundle = load_bundle(path, validate=cfg["validate"])
    except MedmmError as exc:
        add([exc], None, "error")
        return result
    except Exception as exc:  # a library error escaping the reader: report, never die
        add([ReadError(f"{type(exc).__name__}: {exc}", path=path)], None, "error")
        return result
    result["counts"] = bundle.counts
    pid = bundle.patient_id
    problems = list(bundle.problems)
    if pid is None:
        problems.append(ReadError("bundle has no Patient resource; skipped", path=rel, column="Patient",
                                  hint="write one bundle per patient with its Patient resource"))
        add(problems, None)
        return result
    events = events_from_bundle(bundle)
    index, index_encounter = _index_time(cfg["index_time"], bundle, events, fixed)
    if index is None:
        problems.append(ReadError(f"no index time by {cfg['index_time']!r} for this patient; skipped",
                                  path=rel, column="index_time",
                                  hint="choose another --index-time policy or give a CSV of index times"))
        add(problems, pid)
        return result
    index = to_timestamp(index)
    assert index is not None  # _index_time gave a time
    name = patient_file_stem(pid)
    row: dict[str, Any] = {
        "patient_id": pid, "split": _split(pid, cfg["seed"], tuple(cfg["split_fractions"])),
        "index_time": index.isoformat(), "site": cfg["site"],
        "sex": _SEX.get(str(bundle.patient.get("gender") or "unknown"), "U"),
        "image_path": "", "notes_path": "", "vitals_path": "", "ehr_path": "",
    }
    # notes
    if bundle.notes:
        texts = [n.text for n in bundle.notes]
        if cfg["scrub_phi"]:
            from ..deid.text import PhiScrubber

            scrub = PhiScrubber(known_names=bundle.patient.get("names", []))
            texts = [scrub(t) for t in texts]
        import orjson

        with open(Path(out) / "notes" / f"{name}.jsonl", "wb") as fh:
            for n, text in zip(bundle.notes, texts):
                fh.write(orjson.dumps({"patient_id": pid, "time": n.time.isoformat() if n.time is not None else None,
                                       "note_type": n.note_type, "text": text}) + b"\n")
        row["notes_path"] = f"notes/{name}.jsonl"
    # vitals
    vit = vitals_from_observations(bundle.observations, path=rel, problems=problems)
    guard = _guard_report(bundle, index, index_encounter, vit, events)
    result["guard"] = guard
    if len(vit):
        vit = vit.assign(time=vit["time"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
        vit.to_csv(Path(out) / "vitals" / f"{name}.csv", index=False)
        row["vitals_path"] = f"vitals/{name}.csv"
    # EHR
    if len(events):
        ev = events.drop(columns=["end"]).assign(time=events["time"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
        ev["value"] = ev["value"].map(lambda v: v.isoformat() if isinstance(v, pd.Timestamp) else v)
        ev.to_csv(events_file(out, pid), index=False)
        tab = event_features(events, index, lookback=cfg["lookback"])
        result["features"] = tab.values
        result["units"] = tab.units
        row["ehr_path"] = "ehr.csv"
    # labels
    horizon_end = index + pd.Timedelta(cfg["horizon"])
    for label, codes in cfg["labels"].items():
        onsets = [c["time"] for c in bundle.conditions if c["code"] in set(codes)]
        if any(t <= index for t in onsets):
            row[f"label_{label}"] = None
        else:
            row[f"label_{label}"] = int(any(index < t <= horizon_end for t in onsets))
    if cfg.get("survival"):
        name = cfg["survival"]
        try:
            t_days, event = survival_pair(bundle, index, horizon_days=cfg["survival_days"])
        except MedmmError as exc:  # a death before the index time: no label, and the problem says why
            add([exc], pid)
            t_days, event = None, None
        row[f"label_{name}.time"], row[f"label_{name}.event"] = t_days, event
    result["row"] = row
    add(problems, pid)
    if guard["notes"] or guard["vitals"] or guard["events"]:
        message = (f"leakage guard: {guard['notes']} note(s), {guard['vitals']} vital-sign value(s) and "
                   f"{guard['events']} EHR event(s) dated after the index time {index.isoformat()} are left out "
                   "of this patient's inputs")
        hint = "expected when data follow the index time; the files keep them for other index times"
        if guard["index_encounter_notes"]:
            message += f", {guard['index_encounter_notes']} of the notes written during the index encounter"
            hint = ("the index time is the start of the index encounter, so its own notes are after it; "
                    "use --index-time last-encounter-end to keep them")
        found.add("info", message, patient_id=pid, path=rel, column="index_time", kind="LeakageGuard", hint=hint)
    return result


def _csv_row(p: Problem, file: str) -> dict[str, Any]:
    """A :class:`Problem` as a line of ``problems.csv``."""
    return {"patient_id": p.patient_id, "file": file, **{c: getattr(p, c) for c in PROBLEM_COLUMNS}}


def _work(args: tuple) -> dict[str, Any]:
    return convert_bundle(*args)


def _vocabulary(features: dict[str, dict[str, Any]], splits: dict[str, str], min_patients: int) -> list[str]:
    seen: Counter = Counter()
    for pid, f in features.items():
        if splits.get(pid) == "train":
            seen.update(f.keys())
    return sorted(k for k, n in seen.items() if n >= min_patients or ":" not in k)


def _days(value: str, field_name: str) -> float:
    """A pandas duration (``'1825D'``, ``'5 days'``) in days, checked before any bundle is read."""
    import pandas as pd

    try:
        days = pd.Timedelta(value) / pd.Timedelta(days=1)
    except (ValueError, TypeError) as exc:
        raise ReadError(f"{field_name} {value!r} is not a duration", column=field_name,
                        hint="write it as pandas reads a duration, e.g. 1825D or 365 days") from exc
    if not days > 0:
        raise ReadError(f"{field_name} {value!r} is not positive", column=field_name, hint="e.g. 1825D")
    return float(days)


def import_fhir_cohort(
    src: str | Path,
    out: str | Path,
    config: ImportConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = False,
    limit: int | None = None,
) -> ImportResult:
    """Import every ``*.json`` bundle under ``src`` into a medmm cohort under ``out``."""
    import multiprocessing as mp

    import pandas as pd

    cfg = config or ImportConfig()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ReadError("not a folder", path=src, hint="give the folder that holds the FHIR bundles")
    files = sorted(str(p) for p in src.rglob("*.json"))[:limit]
    if not files:
        raise ReadError("no .json file in the folder", path=src, hint="give a folder of FHIR bundles (*.json)")
    for d in ("notes", "vitals", "events"):
        (out / d).mkdir(parents=True, exist_ok=True)
    fixed: dict[str, Any] = {}
    policies = {"last-encounter-start", "last-encounter-end", "last-event"}
    if cfg.index_time not in policies:
        if Path(cfg.index_time).is_file():
            table = pd.read_csv(cfg.index_time, dtype=str)
            fixed = {r.patient_id: to_timestamp(r.index_time) for r in table.itertuples(index=False)}
        else:
            try:
                fixed = {cfg.index_time: to_timestamp(cfg.index_time)}
            except ValueError as exc:
                raise ReadError(f"index time {cfg.index_time!r} is neither a policy, a time nor a file",
                                column="index_time", hint=f"use one of {sorted(policies)}, an ISO time or a "
                                "CSV patient_id,index_time") from exc
    cfgd = {**asdict(cfg), "src": str(src), "survival_days": _days(cfg.survival_horizon, "survival_horizon")}
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    features: dict[str, dict[str, Any]] = {}
    unit_counts: dict[str, Counter] = {}
    counts: Counter = Counter()
    n_bytes = n_failed = n_problems = 0
    seen_pids: set[str] = set()
    kinds: Counter = Counter()
    guard_total: Counter = Counter()
    workers = workers or min(os.cpu_count() or 1, 4)
    jobs = ((f, str(out), cfgd, fixed) for f in files)
    with open(out / "problems.csv", "w", newline="", encoding="utf-8") as pf:
        writer = csv.DictWriter(pf, fieldnames=["patient_id", "file", *PROBLEM_COLUMNS])
        writer.writeheader()
        if workers > 1:
            pool = mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers)
            results: Iterator[dict[str, Any]] = pool.imap(_work, jobs, chunksize=2)
        else:
            pool = None
            results = map(_work, jobs)
        try:
            it = results
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(results, total=len(files), desc="fhir import", unit="bundle")
            for res in it:
                n_bytes += res["bytes"]
                counts.update(res["counts"])
                row = res["row"]
                if row is not None and row["patient_id"] in seen_pids:
                    res["problems"].append(Problem(
                        "error", "patient already imported from another bundle; skipped", patient_id=row["patient_id"],
                        path=res["file"], column="Patient.id", kind="ReadError", hint="write one bundle per patient"))
                    row = None
                for p in res["problems"]:
                    writer.writerow(_csv_row(p, res["file"]))
                    kinds["leakage guard" if p.kind == "LeakageGuard" else p.message.split(" (")[0][:60]] += 1
                n_problems += len(res["problems"])
                if row is None:
                    n_failed += 1
                    continue
                seen_pids.add(row["patient_id"])
                rows.append(row)
                if res["guard"]:
                    guard_total.update({k: v for k, v in res["guard"].items()})
                    guard_total["patients"] += any(res["guard"][k] for k in ("notes", "vitals", "events"))
                    guard_total["patients_losing_index_notes"] += bool(res["guard"]["index_encounter_notes"])
                if res["features"] is not None:
                    features[row["patient_id"]] = res["features"]
                    for k, u in res["units"].items():
                        unit_counts.setdefault(k, Counter())[u] += 1
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    # EHR wide table: vocabulary from the training split only; absent flags 0, absent values empty
    splits = {r["patient_id"]: r["split"] for r in rows}
    vocab = _vocabulary(features, splits, cfg.min_patients)
    units = {k: c.most_common(1)[0][0] for k, c in unit_counts.items()}
    mixed = {k: c for k, c in unit_counts.items() if len(c) > 1 and k in vocab}
    if mixed:
        with open(out / "problems.csv", "a", newline="", encoding="utf-8") as pf:
            writer = csv.DictWriter(pf, fieldnames=["patient_id", "file", *PROBLEM_COLUMNS])
            for k, c in sorted(mixed.items()):
                writer.writerow(_csv_row(Problem(
                    "warning", "one feature in several units across patients ("
                    + ", ".join(f"{u or '(none)'}: {n}" for u, n in c.most_common()) + ")",
                    path="ehr.csv", column=k, kind="SchemaError",
                    hint="convert the values to one unit before modelling; the header names the most common"), "ehr.csv"))
                n_problems += 1
    flag_kinds = ("condition:", "medication:", "procedure:")
    table = []
    for pid, f in features.items():
        table.append({"patient_id": pid, **{
            k: f.get(k, 0 if k.startswith(flag_kinds) else None) for k in vocab}})
    header = {k: f"{k} [{units[k]}]" if units.get(k) else k for k in vocab}
    ehr = pd.DataFrame(table, columns=["patient_id", *vocab]).rename(columns=header)
    ehr.to_csv(out / "ehr.csv", index=False)
    label_cols = [f"label_{k}" for k in cfg.labels]
    surv_cols = [f"label_{cfg.survival}.time", f"label_{cfg.survival}.event"] if cfg.survival else []
    cols = ["patient_id", "split", "index_time", "site", "sex", "image_path", "notes_path", "vitals_path",
            "ehr_path", *label_cols, *surv_cols]
    manifest = pd.DataFrame(rows, columns=cols)
    for col in [*label_cols, *surv_cols[1:]]:
        manifest[col] = manifest[col].astype("Int64")
    mpath = out / "manifest.csv"
    manifest.to_csv(mpath, index=False)
    if cfg.survival:
        import yaml

        decl = {cfg.survival: {"kind": "survival", "horizon": cfgd["survival_days"]}}
        (out / "manifest.modalities.yaml").write_text(yaml.safe_dump({"tasks": decl}, sort_keys=False))
    seconds = time.perf_counter() - t0
    result = ImportResult(mpath, len(files), len(rows), n_failed, n_problems, n_bytes, seconds)
    report = {
        "source": str(src), "files": len(files), "patients": len(rows), "failed_files": n_failed,
        "problems": n_problems, "problem_kinds": dict(kinds.most_common(20)), "bytes": n_bytes,
        "seconds": round(seconds, 3), "mb_per_s": round(result.mb_per_s, 2),
        "resource_counts": dict(counts.most_common()), "ehr_features": len(vocab),
        "splits": dict(Counter(splits.values())), "config": asdict(cfg),
        "leakage_guard": {k: guard_total[k] for k in ("patients", "notes", "index_encounter_notes",
                                                      "patients_losing_index_notes", "vitals", "events")},
    }
    (out / "import_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return result


def survival_pair(bundle: Any, index: Any, *, horizon_days: float | None = None) -> tuple[float | None, int | None]:
    """A time-to-death label from one patient's :class:`~medmm.io.fhir.FhirBundle`, in days
    from ``index`` (the index time, e.g. the index encounter's start).

    * ``Patient.deceasedDateTime`` -> event 1 at that time;
    * otherwise the patient is censored (event 0) at the last time they were seen: the latest
      encounter start or end, observation, condition, medication, procedure, imaging study or note;
    * ``deceasedBoolean: true`` without a date cannot be placed in time: censored at the last
      contact (the death is known to have come later), so it never counts as an event too early;
    * ``horizon_days`` censors administratively (an event after it becomes censored there).

    Returns ``(None, None)`` when the patient has no contact after the index time at all; a
    death recorded before the index time is a :class:`~medmm.errors.ReadError`.
    """
    import pandas as pd

    from ..errors import ReadError

    index = pd.Timestamp(index)
    index = index.tz_convert(None) if index.tzinfo is not None else index
    deceased = bundle.patient.get("deceased")
    times = [t for e in bundle.encounters for t in (e.get("start"), e.get("end"))]
    for rows in (bundle.observations, bundle.conditions, bundle.medications, bundle.procedures, bundle.imaging):
        times += [r.get("time") for r in rows]
    times += [getattr(n, "time", None) for n in bundle.notes]
    times = [pd.Timestamp(t) for t in times if t is not None and not pd.isna(t)]
    day = pd.Timedelta(days=1)
    if isinstance(deceased, pd.Timestamp):
        if deceased < index:
            raise ReadError(f"patient {bundle.patient_id} died ({deceased}) before the index time {index}",
                            path=bundle.path, column="Patient.deceasedDateTime",
                            hint="choose an index time before the death, or leave the patient out")
        time, event = (deceased - index) / day, 1
    else:
        last = max((t for t in times if t >= index), default=None)
        if last is None:
            return None, None
        time, event = (last - index) / day, 0
    if horizon_days is not None and time > horizon_days:
        time, event = float(horizon_days), 0
    return float(time), int(event)
