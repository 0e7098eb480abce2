"""NEWS2, the Royal College of Physicians' National Early Warning Score 2 (RCP 2017).

Chart 1 (the scoring system) and Chart 4 (the clinical response to NEWS trigger thresholds),
implemented as published:

=====================  ======  =========  =========  ==============  ==========  =========  ======
parameter              3       2          1          0               1           2          3
=====================  ======  =========  =========  ==============  ==========  =========  ======
respiration rate /min  <=8                9-11       12-20                       21-24      >=25
SpO2 scale 1 %         <=91    92-93      94-95      >=96
SpO2 scale 2 %         <=83    84-85      86-87      88-92, >=93 air 93-94 O2    95-96 O2   >=97 O2
air or oxygen                  oxygen                air
systolic BP mmHg       <=90    91-100     101-110    111-219                                >=220
pulse /min             <=40               41-50      51-90           91-110      111-130    >=131
consciousness                                        alert                                  C/V/P/U
temperature degC       <=35.0             35.1-36.0  36.1-38.0       38.1-39.0   >=39.1
=====================  ======  =========  =========  ==============  ==========  =========  ======

Chart 4: aggregate 0 -> low; 1-4 -> low; a score of 3 in any single parameter (aggregate
below 5) -> low-medium, urgent ward-based response; 5-6 -> medium, urgent response (key
threshold); 7 or more -> high, emergency response.

**Rounding policy for values between bands.** Chart 1 is written in whole numbers for
respiration rate, SpO2, systolic BP and pulse and in tenths of a degree for temperature. A
measured value is first rounded to that resolution, half away from zero toward the higher
value (``ROUND_HALF_UP`` on its decimal representation: 20.5/min -> 21, 20.49 -> 20,
38.05 degC -> 38.1, 35.04 -> 35.0), then scored. Rounding happens in decimal arithmetic, so a
float such as 38.05 (stored as 38.04999...) rounds as written.

SpO2 scale 2 is for patients with a prescribed target of 88-92% (hypercapnic respiratory
failure), a clinical decision recorded per patient; scale 1 is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ..errors import MedmmError

__all__ = [
    "NEWS2Error",
    "News2Result",
    "news2",
    "score_respiration_rate",
    "score_spo2",
    "score_air_or_oxygen",
    "score_systolic_bp",
    "score_pulse",
    "score_consciousness",
    "score_temperature",
    "response_band",
    "round_to_chart",
    "parse_on_oxygen",
    "OXYGEN_WORDS",
    "PARAMETERS",
    "BANDS",
]

PARAMETERS = ("resp_rate", "spo2", "air_or_oxygen", "sbp", "pulse", "consciousness", "temperature")

#: Chart 4: band -> (clinical risk, minimum monitoring frequency, clinical response); ordered by urgency
BANDS: dict[str, tuple[str, str, str]] = {
    "none": ("low", "minimum 12-hourly", "continue routine NEWS monitoring"),
    "low": ("low", "minimum 4-6-hourly",
            "inform registered nurse, who must assess the patient and decide on the frequency of monitoring "
            "and escalation"),
    "low-medium": ("low-medium", "minimum 1-hourly",
                   "registered nurse to inform medical team caring for the patient, who will review and decide "
                   "whether escalation of care is necessary (urgent ward-based response)"),
    "medium": ("medium", "minimum 1-hourly",
               "registered nurse to immediately inform the medical team caring for the patient; urgent "
               "assessment by a clinician or team with core competencies in the care of acutely ill patients "
               "(key threshold for urgent response)"),
    "high": ("high", "continuous monitoring of vital signs",
             "registered nurse to immediately inform the medical team - at least at specialist registrar level; "
             "emergency assessment by a team with critical care competencies, usually including practitioners "
             "with advanced airway management skills; consider transfer to a higher-dependency care area "
             "(emergency response)"),
}
#: escalation level of each band (0 = none ... 4 = emergency)
BAND_LEVEL = {"none": 0, "low": 1, "low-medium": 2, "medium": 3, "high": 4}

_CONSCIOUSNESS = {
    "a": "A", "alert": "A",
    "c": "C", "confusion": "C", "new confusion": "C", "confused": "C", "new-onset confusion": "C",
    "v": "V", "voice": "V", "responds to voice": "V",
    "p": "P", "pain": "P", "responds to pain": "P",
    "u": "U", "unresponsive": "U",
}


class NEWS2Error(MedmmError, ValueError):
    """A vital-sign value that NEWS2 cannot score (not a number, unknown ACVPU level ...)."""


#: how the monitor's parser reads ``on_oxygen`` (case and spaces ignored)
OXYGEN_WORDS: dict[str, bool] = {
    **{w: True for w in ("1", "true", "yes", "y", "oxygen", "o2", "on", "supplemental oxygen", "on oxygen")},
    **{w: False for w in ("0", "false", "no", "n", "air", "room air", "ra", "off", "on air")},
}


def parse_on_oxygen(value: Any) -> bool | None:
    """Whether the patient is on supplemental oxygen, from a bool, 0/1 or a word (``'yes'``,
    ``'no'``, ``'air'``, ``'O2'`` ...); ``None`` stays ``None`` (not recorded).

    Anything else (``'maybe'``, 2, NaN) is a :class:`NEWS2Error`, never a guess.
    """
    import numpy as np

    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        key = " ".join(value.strip().lower().split())
        if key in OXYGEN_WORDS:
            return OXYGEN_WORDS[key]
    elif isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    raise NEWS2Error(f"on_oxygen {value!r} is neither oxygen nor air", column="on_oxygen",
                     hint="give True/False, 1/0, 'yes'/'no', 'oxygen'/'air', or None if not recorded")


def _measurement(name: str, value: Any) -> float:
    """A measured value as a float: numbers and numeric strings; bools and NaN are refused."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        raise NEWS2Error(f"{name}={value!r} is a bool, not a measurement", column=name,
                         hint=f"give the measured {name} as a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise NEWS2Error(f"{name} {value!r} is not a number", column=name,
                         hint=f"give the measured {name} as a number") from None
    if not math.isfinite(x):
        raise NEWS2Error(f"{name} {x:g} is not a finite number", column=name,
                         hint=f"give the measured {name}, or None if it was not observed")
    return x


def round_to_chart(value: float, decimals: int = 0) -> Decimal:
    """Round ``value`` half up to ``decimals`` places, in decimal arithmetic on its repr."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise NEWS2Error(f"{value!r} is a bool, not a measurement", hint="give the measured value as a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise NEWS2Error(f"{value!r} is not a number", hint="give the measured value as a number") from None
    if not math.isfinite(x):
        raise NEWS2Error(f"{value!r} is not a finite number", hint="give the measured value as a number")
    q = Decimal(1).scaleb(-decimals)
    return Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP)


def _check_range(name: str, v: Decimal, lo: float, hi: float) -> None:
    if not lo <= v <= hi:
        raise NEWS2Error(f"{name} {v} is outside the possible range [{lo}, {hi}]", column=name,
                         hint="check the unit and the value")


def score_respiration_rate(value: float) -> int:
    """Respiration rate (breaths/min): <=8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >=25: 3."""
    v = round_to_chart(value)
    _check_range("resp_rate", v, 0, 150)
    if v <= 8:
        return 3
    if v <= 11:
        return 1
    if v <= 20:
        return 0
    if v <= 24:
        return 2
    return 3


def score_spo2(value: float, *, scale: int = 1, on_oxygen: bool = False) -> int:
    """SpO2 (%) on scale 1 (default) or scale 2 (target 88-92%, hypercapnic respiratory failure)."""
    v = round_to_chart(value)
    _check_range("spo2", v, 0, 100)
    if scale == 1:
        if v <= 91:
            return 3
        if v <= 93:
            return 2
        if v <= 95:
            return 1
        return 0
    if scale != 2:
        raise NEWS2Error(f"SpO2 scale {scale!r} does not exist", column="spo2_scale", hint="use scale 1 or 2")
    if v <= 83:
        return 3
    if v <= 85:
        return 2
    if v <= 87:
        return 1
    if v <= 92 or not on_oxygen:  # 88-92, or >=93 on air
        return 0
    if v <= 94:
        return 1
    if v <= 96:
        return 2
    return 3


def score_air_or_oxygen(on_oxygen: bool) -> int:
    """Supplemental oxygen: 2; air: 0."""
    return 2 if on_oxygen else 0


def score_systolic_bp(value: float) -> int:
    """Systolic BP (mmHg): <=90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >=220: 3."""
    v = round_to_chart(value)
    _check_range("sbp", v, 0, 400)
    if v <= 90:
        return 3
    if v <= 100:
        return 2
    if v <= 110:
        return 1
    if v <= 219:
        return 0
    return 3


def score_pulse(value: float) -> int:
    """Pulse (beats/min): <=40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, >=131: 3."""
    v = round_to_chart(value)
    _check_range("pulse", v, 0, 350)
    if v <= 40:
        return 3
    if v <= 50:
        return 1
    if v <= 90:
        return 0
    if v <= 110:
        return 1
    if v <= 130:
        return 2
    return 3


def normalise_consciousness(value: Any) -> str:
    """ACVPU letter from a letter or a phrase (``'alert'``, ``'new confusion'``, ``'V'`` ...)."""
    key = str(value).strip().lower()
    if key not in _CONSCIOUSNESS:
        raise NEWS2Error(f"consciousness {value!r} is not an ACVPU level", column="consciousness",
                         hint="give one of A (alert), C (new confusion), V (voice), P (pain), U (unresponsive)")
    return _CONSCIOUSNESS[key]


def score_consciousness(value: Any) -> int:
    """Alert: 0; new confusion, voice, pain or unresponsive (CVPU): 3."""
    return 0 if normalise_consciousness(value) == "A" else 3


def score_temperature(value: float) -> int:
    """Temperature (degC, to 0.1): <=35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, >=39.1: 2."""
    v = round_to_chart(value, 1)
    _check_range("temperature", v, 15, 46)
    if v <= Decimal("35.0"):
        return 3
    if v <= Decimal("36.0"):
        return 1
    if v <= Decimal("38.0"):
        return 0
    if v <= Decimal("39.0"):
        return 1
    return 2


def response_band(total: int, max_single: int) -> str:
    """Chart 4 band: ``none`` (0), ``low`` (1-4), ``low-medium`` (a single 3, total < 5),
    ``medium`` (5-6), ``high`` (>= 7)."""
    if total >= 7:
        return "high"
    if total >= 5:
        return "medium"
    if max_single >= 3:
        return "low-medium"
    if total >= 1:
        return "low"
    return "none"


@dataclass
class News2Result:
    """A NEWS2 score with its parts.

    ``complete`` is False when a Chart 1 parameter was not observed: the aggregate then
    covers only the observed ones (a lower bound of the full score) and ``missing`` names
    the others.
    """

    total: int
    band: str
    scores: dict[str, int]
    values: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    spo2_scale: int = 1
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def risk(self) -> str:
        return BANDS[self.band][0]

    @property
    def level(self) -> int:
        return BAND_LEVEL[self.band]

    @property
    def monitoring(self) -> str:
        return BANDS[self.band][1]

    @property
    def response(self) -> str:
        return BANDS[self.band][2]

    @property
    def red_parameters(self) -> list[str]:
        """Parameters scoring 3 (a 'red score')."""
        return [p for p, s in self.scores.items() if s >= 3]

    def explain(self) -> list[str]:
        """One line per parameter that scored, e.g. ``'resp_rate 26/min scores 3'``."""
        units = {"resp_rate": "/min", "spo2": "%", "sbp": " mmHg", "pulse": "/min", "temperature": " degC"}
        out = []
        for p, s in sorted(self.scores.items(), key=lambda kv: -kv[1]):
            if s > 0:
                v = self.values.get(p)
                num = f"{v:g}" if isinstance(v, float) else v
                shown = ("oxygen" if v else "air") if p == "air_or_oxygen" else f"{num}{units.get(p, '')}"
                src = f" (from {self.sources[p]})" if p in self.sources else ""
                out.append(f"{p} {shown}{src} scores {s}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "band": self.band, "risk": self.risk, "level": self.level,
                "monitoring": self.monitoring, "response": self.response, "scores": dict(self.scores),
                "values": dict(self.values), "missing": list(self.missing), "complete": self.complete,
                "spo2_scale": self.spo2_scale, "sources": dict(self.sources), "red_parameters": self.red_parameters,
                "explanation": self.explain()}


def news2(
    *,
    resp_rate: float | None = None,
    spo2: float | None = None,
    on_oxygen: bool | str | None = None,
    sbp: float | None = None,
    pulse: float | None = None,
    consciousness: Any = None,
    temperature: float | None = None,
    spo2_scale: int = 1,
    sources: dict[str, str] | None = None,
) -> News2Result:
    """NEWS2 of one set of observations.

    Unobserved parameters (``None``) are listed in ``missing`` and contribute nothing
    (``on_oxygen=None`` is read as air, and listed). Measurements are numbers or numeric
    strings; a bool, NaN or infinity is a :class:`NEWS2Error` (NaN is not "not observed":
    give ``None``). ``on_oxygen`` is read by :func:`parse_on_oxygen` (``'no'`` is air).
    ``sources`` names the signal each parameter came from (``{'pulse': 'heart_rate (ECG)'}``).
    """
    if isinstance(spo2_scale, bool) or spo2_scale not in (1, 2):
        raise NEWS2Error(f"SpO2 scale {spo2_scale!r} does not exist", column="spo2_scale", hint="use scale 1 or 2")
    oxygen = parse_on_oxygen(on_oxygen)
    scores: dict[str, int] = {}
    values: dict[str, Any] = {}
    missing: list[str] = []

    def put(name: str, value: Any, fn) -> None:
        if value is None:
            missing.append(name)
            return
        x = _measurement(name, value)
        scores[name] = fn(x)
        values[name] = value if isinstance(value, (int, float)) else x

    put("resp_rate", resp_rate, score_respiration_rate)
    put("spo2", spo2, lambda v: score_spo2(v, scale=spo2_scale, on_oxygen=bool(oxygen)))
    if oxygen is None:
        missing.append("air_or_oxygen")
    else:
        scores["air_or_oxygen"] = score_air_or_oxygen(oxygen)
        values["air_or_oxygen"] = oxygen
    put("sbp", sbp, score_systolic_bp)
    put("pulse", pulse, score_pulse)
    if consciousness is None:
        missing.append("consciousness")
    else:
        scores["consciousness"] = score_consciousness(consciousness)
        values["consciousness"] = normalise_consciousness(consciousness)
    put("temperature", temperature, score_temperature)
    total = sum(scores.values())
    return News2Result(total, response_band(total, max(scores.values(), default=0)), scores, values,
                       missing, spo2_scale, dict(sources or {}))
