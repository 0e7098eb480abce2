"""The assistant's vocabulary: vital signs, labs (LOINC), conditions (SNOMED CT), medication
classes and the words that ask for a statistic, a trend, a window or an intent.

The vital-sign names extend :mod:`medmm.io.vitals`' aliases with the words people use in a
question ("blood pressure", "sats", "temp"); the lab table holds the common LOINC codes of
each analyte with a reference interval (adult, in the unit given) for counting abnormal
results.
"""

from __future__ import annotations

__all__ = ["SIGNAL_TERMS", "SIGNAL_LABELS", "LABS", "CONDITIONS", "MEDICATION_CLASSES", "STOPWORDS"]

#: canonical vital signal -> words that name it in a question (besides medmm.io.vitals' aliases)
SIGNAL_TERMS: dict[str, tuple[str, ...]] = {
    "heart_rate": ("heart rate", "hr", "heartrate", "pulse", "pulse rate"),
    "pulse_rate": ("pulse rate", "pulse"),
    "resp_rate": ("respiratory rate", "respiration rate", "resp rate", "rr", "breathing rate", "respirations",
                  "respiration"),
    "spo2": ("spo2", "sp02", "sats", "sat", "saturation", "saturations", "oxygen saturation", "o2 sat", "o2 sats",
             "oxygen sats", "pulse ox", "pulse oximetry"),
    "sbp": ("systolic blood pressure", "systolic bp", "systolic", "sbp"),
    "dbp": ("diastolic blood pressure", "diastolic bp", "diastolic", "dbp"),
    "map": ("mean arterial pressure", "map"),
    "temperature": ("temperature", "temp", "body temperature"),
    "weight": ("weight", "body weight"),
    "height": ("height",),
    "bmi": ("bmi", "body mass index"),
    "pain_score": ("pain score",),
    "cvp": ("cvp", "central venous pressure"),
}
#: several signals asked for at once
SIGNAL_GROUPS: dict[str, tuple[str, ...]] = {
    "blood pressure": ("sbp", "dbp"),
    "bp": ("sbp", "dbp"),
    "bps": ("sbp", "dbp"),
}
#: canonical signal -> how an answer names it
SIGNAL_LABELS: dict[str, str] = {
    "heart_rate": "heart rate", "pulse_rate": "pulse rate", "resp_rate": "respiratory rate", "spo2": "SpO2",
    "sbp": "systolic blood pressure", "dbp": "diastolic blood pressure", "map": "mean arterial pressure",
    "temperature": "temperature", "weight": "weight", "height": "height", "bmi": "BMI",
    "pain_score": "pain score", "cvp": "central venous pressure", "abp_sys": "arterial systolic pressure",
    "abp_dia": "arterial diastolic pressure", "abp_mean": "arterial mean pressure",
}

#: lab -> (label, LOINC codes, question words, (low, high, unit) reference interval or None)
LABS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[float, float, str] | None]] = {
    "lactate": ("lactate", ("2524-7", "32693-4", "2518-9", "32133-1"), ("lactate", "lactic acid", "lac"),
                (0.5, 2.0, "mmol/L")),
    "sodium": ("sodium", ("2951-2", "2947-0", "32717-1"), ("sodium", "na"), (135.0, 145.0, "mmol/L")),
    "potassium": ("potassium", ("2823-3", "6298-4", "32713-0"), ("potassium",), (3.5, 5.1, "mmol/L")),
    "chloride": ("chloride", ("2075-0", "2069-3"), ("chloride",), (98.0, 107.0, "mmol/L")),
    "bicarbonate": ("bicarbonate", ("1963-8", "2028-9", "1959-6"), ("bicarbonate", "bicarb", "hco3", "co2"),
                    (22.0, 29.0, "mmol/L")),
    "creatinine": ("creatinine", ("2160-0", "38483-4", "14682-9"), ("creatinine", "creat", "cr"),
                   (0.6, 1.3, "mg/dL")),
    "urea": ("urea nitrogen", ("3094-0", "6299-2", "22664-7"), ("bun", "urea", "urea nitrogen",
                                                                "blood urea nitrogen"), (7.0, 20.0, "mg/dL")),
    "glucose": ("glucose", ("2345-7", "2339-0", "41653-7", "15074-8"), ("glucose", "blood sugar", "sugar"),
                (70.0, 140.0, "mg/dL")),
    "hba1c": ("HbA1c", ("4548-4", "17856-6", "59261-8"), ("hba1c", "a1c", "hemoglobin a1c", "haemoglobin a1c",
                                                          "glycated hemoglobin", "glycated haemoglobin"),
              (4.0, 5.6, "%")),
    "hemoglobin": ("hemoglobin", ("718-7", "20509-6", "30313-1"), ("hemoglobin", "haemoglobin", "hb", "hgb"),
                   (12.0, 17.5, "g/dL")),
    "wbc": ("white cell count", ("6690-2", "26464-8", "804-5"), ("wbc", "white cell count", "white cells",
                                                                 "white blood cells", "white blood cell count",
                                                                 "white count", "leukocytes", "leucocytes"),
            (4.0, 11.0, "10^9/L")),
    "platelets": ("platelets", ("777-3", "26515-7"), ("platelets", "platelet count", "plt"), (150.0, 400.0, "10^9/L")),
    "crp": ("C-reactive protein", ("1988-5", "30522-7"), ("crp", "c-reactive protein", "c reactive protein"),
            (0.0, 10.0, "mg/L")),
    "procalcitonin": ("procalcitonin", ("33959-8",), ("procalcitonin", "pct"), (0.0, 0.5, "ng/mL")),
    "troponin": ("troponin", ("6598-7", "10839-9", "89579-7", "49563-0"), ("troponin", "trop", "tnt", "tni"), None),
    "cea": ("CEA", ("2039-6",), ("cea", "carcinoembryonic antigen"), (0.0, 5.0, "ng/mL")),
    "albumin": ("albumin", ("1751-7", "61151-7"), ("albumin",), (3.5, 5.0, "g/dL")),
    "bilirubin": ("bilirubin", ("1975-2", "42719-5"), ("bilirubin", "bili"), (0.1, 1.2, "mg/dL")),
    "alt": ("ALT", ("1742-6", "1743-4"), ("alt", "alanine aminotransferase", "sgpt"), (7.0, 56.0, "U/L")),
    "ast": ("AST", ("1920-8",), ("ast", "aspartate aminotransferase", "sgot"), (10.0, 40.0, "U/L")),
    "inr": ("INR", ("6301-6", "34714-6"), ("inr",), (0.8, 1.2, "{INR}")),
    "cholesterol": ("total cholesterol", ("2093-3",), ("cholesterol", "total cholesterol"), None),
    "ldl": ("LDL cholesterol", ("18262-6", "13457-7", "2089-1"), ("ldl", "ldl cholesterol"), None),
    "hdl": ("HDL cholesterol", ("2085-9",), ("hdl", "hdl cholesterol"), None),
    "triglycerides": ("triglycerides", ("2571-8",), ("triglycerides", "trigs"), None),
    "egfr": ("eGFR", ("33914-3", "62238-1", "48642-3", "48643-1", "69405-9"), ("egfr", "gfr",
                                                                             "glomerular filtration rate"), None),
    "calcium": ("calcium", ("17861-6", "49765-1"), ("calcium",), (8.5, 10.5, "mg/dL")),
    "magnesium": ("magnesium", ("19123-9", "2601-3"), ("magnesium",), None),
    "bnp": ("BNP", ("30934-4", "33762-6", "83107-3"), ("bnp", "nt-probnp", "probnp", "natriuretic peptide"), None),
    "ph": ("pH", ("2744-1", "11558-4"), ("ph",), (7.35, 7.45, "[pH]")),
}

#: condition -> (label, SNOMED CT codes, question words)
CONDITIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "diabetes": ("diabetes", ("44054006", "73211009", "46635009", "190330002", "15777000"),
                 ("diabetes", "diabetic", "dm", "t2dm", "t1dm", "diabetes mellitus", "prediabetes")),
    "hypertension": ("hypertension", ("38341003", "59621000", "1201005"), ("hypertension", "hypertensive", "htn",
                                                                        "high blood pressure")),
    "asthma": ("asthma", ("195967001", "233678006"), ("asthma", "asthmatic")),
    "copd": ("COPD", ("13645005", "185086009"), ("copd", "chronic obstructive pulmonary disease", "emphysema")),
    "sepsis": ("sepsis", ("91302008", "76571007", "10001005"), ("sepsis", "septic", "septicaemia", "septicemia",
                                                              "septic shock")),
    "heart_failure": ("heart failure", ("84114007", "42343007", "88805009"), ("heart failure", "chf",
                                                                            "congestive heart failure", "hf")),
    "atrial_fibrillation": ("atrial fibrillation", ("49436004",), ("atrial fibrillation", "afib", "af", "a fib")),
    "ckd": ("chronic kidney disease", ("709044004", "431855005", "431856006", "433144002", "46177005"),
            ("ckd", "chronic kidney disease", "renal failure", "kidney disease")),
    "pneumonia": ("pneumonia", ("233604007", "385093006"), ("pneumonia",)),
    "mi": ("myocardial infarction", ("22298006", "401303003", "401314000"), ("myocardial infarction", "heart attack",
                                                                          "mi", "stemi", "nstemi")),
    "stroke": ("stroke", ("230690007", "422504002"), ("stroke", "cva", "cerebrovascular accident")),
    "cancer": ("cancer", ("363346000", "254637007", "93761005"), ("cancer", "malignancy", "neoplasm", "tumour",
                                                                "tumor", "carcinoma")),
    "obesity": ("obesity", ("414916001", "162864005"), ("obesity", "obese")),
    "hyperlipidemia": ("hyperlipidemia", ("55822004", "267432004"), ("hyperlipidemia", "hyperlipidaemia",
                                                                     "high cholesterol", "dyslipidemia")),
    "depression": ("depression", ("35489007", "370143000"), ("depression", "depressive")),
    "anemia": ("anemia", ("271737000",), ("anemia", "anaemia")),
}

#: medication class -> substance words
MEDICATION_CLASSES: dict[str, tuple[str, ...]] = {
    "antibiotic": ("amoxicillin", "clavulanate", "piperacillin", "tazobactam", "ceftriaxone", "cefuroxime",
                   "cephalexin", "vancomycin", "meropenem", "azithromycin", "clarithromycin", "doxycycline",
                   "ciprofloxacin", "levofloxacin", "metronidazole", "gentamicin", "penicillin", "nitrofurantoin",
                   "trimethoprim", "sulfamethoxazole", "clindamycin", "cefazolin", "ampicillin"),
    "anticoagulant": ("warfarin", "apixaban", "rivaroxaban", "dabigatran", "edoxaban", "heparin", "enoxaparin"),
    "insulin": ("insulin",),
    "statin": ("atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin"),
    "opioid": ("morphine", "oxycodone", "hydromorphone", "fentanyl", "tramadol", "codeine", "hydrocodone"),
    "antihypertensive": ("lisinopril", "amlodipine", "losartan", "hydrochlorothiazide", "metoprolol", "ramipril",
                         "valsartan", "atenolol", "chlorthalidone"),
    "steroid": ("prednisone", "prednisolone", "hydrocortisone", "dexamethasone", "methylprednisolone",
                "fluticasone", "budesonide"),
}
_CLASS_WORDS = {"antibiotic": ("antibiotic", "antibiotics", "antimicrobial", "antimicrobials"),
                "anticoagulant": ("anticoagulant", "anticoagulants", "anticoagulation", "blood thinner",
                                  "blood thinners"),
                "insulin": ("insulin",), "statin": ("statin", "statins"),
                "opioid": ("opioid", "opioids", "opiate", "opiates"),
                "antihypertensive": ("antihypertensive", "antihypertensives", "blood pressure medication",
                                     "blood pressure medications"),
                "steroid": ("steroid", "steroids", "corticosteroid", "corticosteroids")}
MEDICATION_CLASS_WORDS: dict[str, str] = {w: c for c, ws in _CLASS_WORDS.items() for w in ws}

STOPWORDS = frozenset("""
a an the is are was were be been being of in on at to for from by with about into over under during since until
and or but not no nor any some what whats what's which who whom whose when where why how does do did has have had
it its this that these those there their they them he she him her his hers patient patients pt the's me my i you
your we our us tell show give list please can could would should will shall may might must say says said said
documented document documents mention mentions mentioned notes note record records chart charted written state
states stated report reports reported recorded ever currently current now today yesterday any anything all
hours hour days day weeks week h hrs mins minutes past last previous latest recent recently most than then
also just only much many more less lot lots
""".split())
