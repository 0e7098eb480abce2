"""A consultation assistant that answers questions about one patient from the record.

Every statement of an answer cites the record items it rests on (a vital-sign row, an EHR
event or FHIR resource, a note sentence's span, a monitor alert, a model input), and what the
record does not hold is refused in plain words ("The record has no HbA1c results")::

    from medmm.assistant import Assistant

    bot = Assistant.from_manifest("cohort/manifest.csv", "P00012")
    answer = bot.ask("highest temperature in the past 24 h")
    print(answer.format())

The default engine is deterministic and offline (:mod:`medmm.assistant.engine`); an optional
language model (:class:`~medmm.assistant.llm.LLMPhraser`, any OpenAI-compatible endpoint)
may rephrase an answer from its evidence only, and its reply is used only when every number,
date and citation in it checks out (:mod:`medmm.assistant.verify`).
"""

from __future__ import annotations

from .answer import ANSWERED, PARTIAL, REFUSED, Answer, Citation, Statement
from .core import Assistant, AssistantError, events_from_fhir, load_patient
from .engine import CAPABILITIES, QuestionError
from .llm import LLMError, LLMPhraser
from .verify import check_answer

__all__ = ["Assistant", "Answer", "Statement", "Citation", "AssistantError", "QuestionError", "LLMPhraser",
           "LLMError", "check_answer", "load_patient", "events_from_fhir", "ANSWERED", "PARTIAL", "REFUSED",
           "CAPABILITIES"]
