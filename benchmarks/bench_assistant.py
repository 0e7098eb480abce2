"""The consultation assistant against questions with known answers.

Questions (with paraphrases) come from a synthetic cohort (medmm.synth knows the truth: the
vitals CSVs, the EHR table, the category of each note's finding) and from random FHIR bundles
(answers computed here from the raw bundle JSON, not through medmm's readers). Printed beside
the targets:

* answerable questions answered exactly right (value, unit, date) per type      target >= 95 %
* statements whose citations all resolve to the record                          target 100 %
* numbers or dates in an answer not in its cited evidence                         target 0
* unanswerable questions refused                                                 target >= 95 %
* negated findings reported as present                                           target 0
* p95 latency per question, record of 10,000 observations and 100 notes          target < 200 ms

    PYTHONPATH=. python benchmarks/bench_assistant.py [--patients 20] [--fhir 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from medmm.assistant import REFUSED, Assistant, check_answer  # noqa: E402

PARA = {
    "max": ["highest {s} in the past 24 h", "What was the maximum {s} over the last 24 hours?",
            "peak {s} in the last day"],
    "min": ["lowest {s} in the past 24 h", "what was the minimum {s} during the previous 24 hours"],
    "latest": ["last {s}", "What is the latest {s}?", "most recent {s}"],
    "mean": ["average {s} over the last 12 hours", "mean {s} in the past 12 h"],
}
SIG_NAMES = {"heart_rate": ["heart rate", "HR", "pulse"], "spo2": ["SpO2", "oxygen saturation", "sats"],
             "sbp": ["systolic blood pressure", "systolic BP"], "resp_rate": ["respiratory rate", "RR"],
             "temperature": ["temperature", "temp"]}
TUMOR_WORDS = ("mass", "lesion", "neoplasm", "malignancy", "nodule", "tumor")


class Tally:
    def __init__(self) -> None:
        self.ok = defaultdict(lambda: [0, 0])
        self.refused = [0, 0]
        self.negated_present = 0
        self.negated_total = 0
        self.statements = 0
        self.unresolved = 0
        self.unsupported = 0
        self.failures: list[str] = []

    def check(self, bot: Assistant, ans) -> None:
        probs = check_answer(ans)
        self.unsupported += len(probs)
        if probs:
            self.failures.append(f"unsupported: {ans.question!r}: {probs}")
        for st in ans.statements:
            self.statements += 1
            try:
                for c in st.citations:
                    item = bot.resolve(c)
                    if c.modality == "vitals" and abs(item["value"] - c.value) > 1e-9:
                        raise ValueError("value")
                    if c.time is not None and c.modality != "monitor" and pd.Timestamp(item["time"]) != c.time:
                        raise ValueError("time")
                if not st.citations:
                    raise ValueError("no citation")
            except Exception as exc:
                self.unresolved += 1
                self.failures.append(f"unresolved: {ans.question!r}: {exc}")

    def answerable(self, kind: str, bot: Assistant, q: str, good) -> None:
        ans = bot.ask(q)
        self.check(bot, ans)
        ok = ans.status != REFUSED and bool(good(ans))
        self.ok[kind][0] += ok
        self.ok[kind][1] += 1
        if not ok:
            self.failures.append(f"wrong [{kind}] {bot.patient_id} {q!r}: {ans.text[:160]}")

    def unanswerable(self, bot: Assistant, q: str) -> None:
        ans = bot.ask(q)
        self.check(bot, ans)
        self.refused[0] += ans.status == REFUSED
        self.refused[1] += 1
        if ans.status != REFUSED:
            self.failures.append(f"not refused {bot.patient_id} {q!r}: {ans.text[:160]}")

    def negated(self, bot: Assistant, q: str, term_ok=None) -> None:
        ans = bot.ask(q)
        self.check(bot, ans)
        self.negated_total += 1
        present = any(v == "affirmed" for v in ans.findings.values()) or "report" in ans.text.split(".")[0] and \
            "no " not in ans.text.split(".")[0]
        self.negated_present += bool(present)
        right = bool(not present and ans.findings and set(ans.findings.values()) == {"negated"})
        self.ok["finding"][0] += right
        self.ok["finding"][1] += 1
        if not right:
            self.failures.append(f"wrong [finding] {q!r}: {ans.findings} {ans.text[:160]}")
        if present:
            self.failures.append(f"NEGATED REPORTED PRESENT {q!r}: {ans.text[:160]}")


def _close(a, b, tol=1e-6) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) <= tol


def synth_questions(tally: Tally, n: int, rng: np.random.Generator) -> None:
    from medmm.synth import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_cohort(tmp, n_patients=n, seed=11, image_size=8, missing_rate=0.0, progress=False)
        root = manifest.parent
        man = pd.read_csv(manifest)
        ehr = pd.read_csv(root / "ehr.csv").set_index("patient_id")
        truth = pd.read_csv(root / "truth.csv").set_index("patient_id")
        for row in man.itertuples():
            pid = row.patient_id
            bot = Assistant.from_manifest(manifest, pid)
            now = pd.Timestamp(row.index_time)
            vit = pd.read_csv(root / row.vitals_path, parse_dates=["time"])
            for sig, names in SIG_NAMES.items():
                v = vit[vit["signal"] == sig]
                for stat, hours in (("max", 24), ("min", 24), ("latest", None), ("mean", 12)):
                    w = v if hours is None else v[v["time"] >= now - pd.Timedelta(hours=hours)]
                    if not len(w):
                        continue
                    exp = {"max": w["value"].max(), "min": w["value"].min(), "latest": w["value"].iloc[-1],
                           "mean": round(w["value"].mean(), 2)}[stat]
                    unit = w["unit"].iloc[0]
                    q = rng.choice(PARA[stat]).format(s=rng.choice(names))
                    tol = 0.0051 if stat == "mean" else 1e-6  # a mean is shown to 2 places (half-way cases may round either way)
                    tally.answerable("stat", bot, q, lambda a, e=exp, u=unit, t=tol: _close(a.value, e, t) and a.unit == u)
                # trends: direction and slope recomputed here with numpy
                w = v[v["time"] >= now - pd.Timedelta(hours=12)]
                if len(w) >= 3:
                    h = (w["time"] - w["time"].iloc[0]).dt.total_seconds().to_numpy() / 3600
                    slope = np.polyfit(h, w["value"].to_numpy(), 1)[0]
                    q = rng.choice(["is the {s} falling over the last 12 hours?", "{s} trend in the past 12 h",
                                    "is {s} rising in the last 12 h?"]).format(s=rng.choice(names))
                    tally.answerable("trend", bot, q, lambda a, s=slope: a.statements and _close(
                        a.statements[0].derived.get("slope_per_hour"), round(s, 3), 1e-3))
            for lab, col in (("lactate", "lactate [mmol/L]"), ("CEA", "cea [ng/mL]"), ("WBC", "wbc [10^9/L]"),
                             ("sodium", "sodium [mmol/L]")):
                val = ehr.loc[pid, col]
                q = rng.choice(["last {l}", "what is the {l}?", "{l} result"]).format(l=lab)
                if pd.isna(val):
                    tally.unanswerable(bot, q)
                else:
                    unit = col.split("[")[1].rstrip("]")
                    tally.answerable("lab", bot, q, lambda a, e=val, u=unit: _close(a.value, e) and a.unit == u)
            # notes: the finding sentence's category is known
            text = (root / row.notes_path).read_text()
            cat = truth.loc[pid, "note_tumor"]
            words = [w for w in TUMOR_WORDS if w in text.lower().split("impression")[0].lower()]
            if cat == "unmentioned" or not words:
                tally.unanswerable(bot, f"is there a {rng.choice(['mass', 'tumor'])}?" if not words else
                                   "any pneumothorax?")
            else:
                first = min(words, key=lambda w: text.lower().find(w))
                q = rng.choice(["is there a {w}?", "what do the notes say about a {w}?", "any {w} documented?"])
                q = q.format(w=first)
                if cat == "negated":
                    tally.negated(bot, q)
                else:
                    tally.answerable("finding", bot, q, lambda a, c=cat: c in a.findings.values())
            dcat = truth.loc[pid, "note_disease"]
            if dcat == "negated" and "shortness of breath" in text:
                tally.negated(bot, rng.choice(["any shortness of breath?", "is the patient short of breath?"]))
            for q in ("What is the last HbA1c?", "highest troponin in the past 24 h", "What is the capital of France?",
                      "what dose of insulin should I give?", "is he on warfarin?", "what is the patient's weight?",
                      "any pneumothorax?", "what is the risk of disease?"):
                tally.unanswerable(bot, q)
            tally.answerable("news2", bot, "NEWS2 now?", lambda a: a.value is not None)
            tally.answerable("summary", bot, "summarise the last 24 hours", lambda a: len(a.statements) >= 5)


def fhir_questions(tally: Tally, n: int, rng: np.random.Generator) -> None:
    from fhir.resources.R4B.bundle import Bundle

    from fhir_factory import condition, document, encounter, medication, observation, patient

    conds = [("44054006", "Diabetes mellitus type 2", "diabetes"), ("38341003", "Hypertension", "hypertension"),
             ("195967001", "Asthma", "asthma"), ("13645005", "Chronic obstructive lung disease", "COPD")]
    meds = [("860975", "metformin 500 MG Oral Tablet", "metformin"), ("314076", "lisinopril 10 MG", "lisinopril"),
            ("617314", "atorvastatin 10 MG", "atorvastatin")]
    for k in range(n):
        pid = f"f{k}"
        res = [patient(pid), encounter(f"{pid}-e1", pid, "2024-05-01T09:00:00Z", "2024-05-01T10:00:00Z")]
        mine_c = [conds[i] for i in rng.permutation(len(conds))[: rng.integers(1, 3)]]
        mine_m = [meds[i] for i in rng.permutation(len(meds))[: rng.integers(1, 3)]]
        for code, disp, _ in mine_c:
            res.append(condition(pid, code, disp, f"20{rng.integers(10, 23)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}T00:00:00Z"))
        for code, disp, _ in mine_m:
            res.append(medication(pid, code, disp, f"2024-0{rng.integers(1, 5)}-0{rng.integers(1, 9)}T00:00:00Z"))
        for h in range(int(rng.integers(2, 5))):
            res.append(observation(pid, "2524-7", round(float(rng.uniform(0.5, 4)), 1), "mmol/L",
                                   f"2024-05-0{h + 1}T08:00:00Z", display="Lactate"))
        has_a1c = rng.random() < 0.5
        if has_a1c:
            res.append(observation(pid, "4548-4", round(float(rng.uniform(5, 9)), 1), "%", "2024-04-01T08:00:00Z",
                                   display="Hemoglobin A1c"))
        res.append(document(pid, "IMPRESSION: No evidence of pneumonia. Chest pain denied.", "2024-05-04T12:00:00Z"))
        doc = Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"fullUrl": f"urn:uuid:{pid}-{i}", "resource": r}
                                               for i, r in enumerate(res)]}).model_dump(mode="json")
        # the truth, from the raw JSON
        raw = [e["resource"] for e in doc["entry"]]
        lact = sorted((r["effectiveDateTime"], r["valueQuantity"]["value"]) for r in raw
                      if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "2524-7")
        onset = {r["code"]["coding"][0]["display"]: r["onsetDateTime"][:10] for r in raw if r["resourceType"] == "Condition"}
        authored = {r["medicationCodeableConcept"]["coding"][0]["display"]: r["authoredOn"][:10] for r in raw
                    if r["resourceType"] == "MedicationRequest"}
        bot = Assistant.from_bundle(data=doc, index_time="2024-06-01T00:00:00")
        tally.answerable("lab", bot, rng.choice(["last lactate", "latest lactic acid", "most recent lactate"]),
                         lambda a, e=lact[-1][1]: _close(a.value, e) and a.unit == "mmol/L")
        tally.answerable("lab", bot, "highest lactate", lambda a, e=max(v for _, v in lact): _close(a.value, e))
        tally.answerable("clinical", bot, rng.choice(["what conditions does the patient have?", "problem list",
                                                      "list the diagnoses"]),
                         lambda a, o=onset: all(f"{d} since {t}" in a.text for d, t in o.items()))
        for code, disp, word in mine_c:
            tally.answerable("clinical", bot, rng.choice(["does the patient have {w}?", "when was {w} diagnosed?"])
                             .format(w=word), lambda a, t=onset[disp]: t in a.text)
        for code, disp, word in mine_m:
            tally.answerable("clinical", bot, rng.choice(["is the patient on {w}?", "when was {w} started?"])
                             .format(w=word), lambda a, t=authored[disp]: t in a.text)
        for code, disp, word in [m for m in meds if m not in mine_m]:
            tally.unanswerable(bot, f"is the patient on {word}?")
        if not has_a1c:
            tally.unanswerable(bot, rng.choice(["last HbA1c", "what is the A1c?"]))
        tally.negated(bot, rng.choice(["any pneumonia?", "do the notes mention pneumonia?"]))
        tally.negated(bot, "any chest pain?")


def latency(n_obs: int = 10_000, n_notes: int = 100, seed: int = 0) -> tuple[float, float, float]:
    from medmm.records import Note, Notes, PatientRecord, Tabular, Vitals
    from medmm.synth.render import DISEASE_TEXT, FILLER_TEXT, TUMOR_TEXT

    rng = np.random.default_rng(seed)
    now = pd.Timestamp("2024-03-01T08:00")
    sigs = ["heart_rate", "resp_rate", "spo2", "sbp", "dbp", "temperature"]
    base = {"heart_rate": 80, "resp_rate": 16, "spo2": 96, "sbp": 120, "dbp": 75, "temperature": 37}
    units = {"heart_rate": "bpm", "resp_rate": "/min", "spo2": "%", "sbp": "mmHg", "dbp": "mmHg", "temperature": "degC"}
    t = now - pd.to_timedelta(np.sort(rng.uniform(0, 24 * 30, n_obs))[::-1], unit="h")
    s = rng.choice(sigs, n_obs)
    frame = pd.DataFrame({"time": t, "signal": s, "value": [round(base[x] + rng.normal(0, 3), 2) for x in s],
                          "unit": [units[x] for x in s]})
    notes = []
    for _k in range(n_notes):
        parts = [str(rng.choice(v)) for d in (TUMOR_TEXT, DISEASE_TEXT) for v in d.values()] + list(FILLER_TEXT)
        text = "FINDINGS:\n" + " ".join(p.format(size=2.1, organ="liver") for p in rng.permutation(parts)[:8])
        notes.append(Note(text, now - pd.Timedelta(hours=int(rng.integers(0, 24 * 30))), "progress"))
    notes.sort(key=lambda n: n.time)
    rec = PatientRecord("BIG", vitals=Vitals(frame), notes=Notes(notes),
                        ehr=Tabular({"lactate": 1.2}, {"lactate": "mmol/L"}), index_time=now)
    t0 = time.perf_counter()
    bot = Assistant(rec)
    build = time.perf_counter() - t0
    qs = ["last blood pressure", "highest temperature in the past 24 h", "is spo2 falling over the last 6 hours?",
          "mean heart rate over the last 12 hours", "NEWS2 at 03:00", "is there a mass?", "any shortness of breath?",
          "what do the notes say about the kidneys?", "summarise the last 24 hours", "last HbA1c",
          "what is the capital of France?", "lowest sats in the last 3 days", "what conditions does he have?"]
    bot.ask(qs[0])
    times = []
    for _ in range(5):
        for q in qs:
            t0 = time.perf_counter()
            bot.ask(q)
            times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 95) * 1e3), float(np.median(times) * 1e3), build * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--fhir", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-failures", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tally = Tally()
    synth_questions(tally, args.patients, rng)
    fhir_questions(tally, args.fhir, rng)
    p95, p50, build = latency()
    total_ok = sum(v[0] for v in tally.ok.values())
    total = sum(v[1] for v in tally.ok.values())
    print(f"{'figure':58s} {'medmm':>12s} {'target':>10s}")
    for kind, (ok, n) in sorted(tally.ok.items()):
        print(f"  answered exactly right: {kind:32s} {f'{ok}/{n}':>12s}")
    print(f"{'answerable questions answered exactly right':58s} {100 * total_ok / max(total, 1):11.1f}% {'>= 95 %':>10s}")
    print(f"{'statements whose citations resolve to the record':58s} "
          f"{100 * (tally.statements - tally.unresolved) / max(tally.statements, 1):11.1f}% {'100 %':>10s}")
    print(f"{'numbers/dates not in the cited evidence (answers)':58s} {tally.unsupported:12d} {'0':>10s}")
    print(f"{'unanswerable questions refused':58s} {100 * tally.refused[0] / max(tally.refused[1], 1):11.1f}% "
          f"{'>= 95 %':>10s}   ({tally.refused[0]}/{tally.refused[1]})")
    print(f"{'negated findings reported as present':58s} {tally.negated_present:12d} {'0':>10s}   "
          f"(of {tally.negated_total})")
    print(f"{'p95 ms per question (10,000 observations, 100 notes)':58s} {p95:12.1f} {'< 200':>10s}   "
          f"(median {p50:.1f} ms; index built once in {build:.0f} ms)")
    for f in tally.failures[: args.show_failures]:
        print("  -", f)


if __name__ == "__main__":
    main()
