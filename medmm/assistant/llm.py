"""Optional phrasing of an answer by a language model behind an OpenAI-compatible endpoint.

The model sees only the question and the answer's evidence, each item with its id
(``[V12]``, ``[N0:40-75]``, ``[T[labs]:crp]`` for a declared modality), and must cite an id in every sentence. Its reply is checked:
every sentence cites at least one id of the evidence, and every number and date in a
sentence is in the evidence it cites (or the answer's derived figures). A reply that fails,
or an endpoint that is down, leaves the deterministic answer in place with a notice saying
why. Nothing is downloaded; the endpoint is whatever URL the user gives (a local vLLM,
llama.cpp or Ollama server, say).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..errors import MedmmError
from .answer import Answer, Statement
from .verify import unsupported

__all__ = ["LLMPhraser", "LLMError", "SYSTEM_PROMPT"]

SYSTEM_PROMPT = (
    "You rephrase answers about one patient's medical record for a clinician. Use ONLY the evidence given; "
    "never add a fact, number, date, diagnosis or advice that is not in it. Every sentence must end with the "
    "ids of the evidence it uses in square brackets, e.g. [V12] or [N0:40-75] or [T[labs]:crp]. Copy numbers, units and dates "
    "exactly as the evidence writes them. If a finding is negated in the evidence, say it is absent."
)
_ID = r"[A-Za-z](?:\[[a-z][a-z0-9_]*\])?:?[\w:.\-]*"  # V12, T:crp, T[labs]:crp, N[radiology]0:5-40
_CITE = re.compile(r"\[(" + _ID + r"(?:\s*,\s*" + _ID + r")*)\]")
_SPLIT = re.compile(r"(?<=[.!?\]])\s+(?=[A-Z\[])")


class LLMError(MedmmError):
    """The language-model endpoint failed or replied with something unusable."""


class LLMPhraser:
    """Rephrase answers with a chat model behind an OpenAI-compatible ``/chat/completions``.

    Parameters
    ----------
    base_url:
        The API root, e.g. ``http://localhost:8000/v1``.
    model:
        The model name the server expects.
    api_key:
        Sent as a bearer token when given.
    timeout:
        Seconds to wait for the reply.
    transport:
        An ``httpx`` transport (tests pass :class:`httpx.MockTransport`).
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 20.0,
                 transport: Any = None, max_evidence: int = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.transport = transport
        self.max_evidence = max_evidence

    def messages(self, answer: Answer) -> list[dict[str, str]]:
        lines = []
        for c in answer.citations[: self.max_evidence]:
            lines.append(f"[{c.ref}] {c.label}" + (f" | {c.text}" if c.text and c.text not in c.label else ""))
        derived = "; ".join(f"{k} = {v}" for st in answer.statements for k, v in st.derived.items())
        user = (f"Question: {answer.question}\n\nEvidence:\n" + "\n".join(lines)
                + (f"\n\nComputed from the evidence: {derived}" if derived else "")
                + f"\n\nDraft answer (correct, but terse): {answer.text}\n\nRewrite the draft answer in plain clinical "
                "English, citing evidence ids in every sentence.")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The endpoint's reply text (raises :class:`LLMError`)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with httpx.Client(transport=self.transport, timeout=self.timeout) as client:
                r = client.post(f"{self.base_url}/chat/completions", headers=headers,
                                json={"model": self.model, "messages": messages, "temperature": 0})
        except httpx.HTTPError as exc:
            raise LLMError(f"the language-model endpoint {self.base_url} cannot be reached ({type(exc).__name__}: "
                           f"{exc})", hint="check --llm-url, or leave it out to use the deterministic answer") from None
        if r.status_code != 200:
            raise LLMError(f"the language-model endpoint answered HTTP {r.status_code}: {r.text[:200]}",
                           hint="check the URL, the model name and the API key")
        try:
            return str(r.json()["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError("the language-model endpoint's reply is not an OpenAI chat completion",
                           hint="point --llm-url at an OpenAI-compatible /v1 root") from None

    def verify(self, reply: str, answer: Answer) -> tuple[list[Statement], list[str]]:
        """The reply's sentences as statements citing the answer's evidence, and the problems
        found (empty when the reply may be used)."""
        by_ref = {c.ref: c for c in answer.citations}
        derived = {f"{k}_{i}": v for i, st in enumerate(answer.statements) for k, v in st.derived.items()}
        derived.update(answer.context)
        out, problems = [], []
        sentences: list[str] = []
        for part in _SPLIT.split(reply.strip()):
            part = part.strip()
            if not part:
                continue
            if sentences and _CITE.sub("", part).strip(" .") == "":  # "... 38.6 degC. [V3]"
                sentences[-1] += " " + part
            else:
                sentences.append(part)
        if not sentences:
            return [], ["the reply is empty"]
        for s in sentences:
            refs = [r.strip() for m in _CITE.findall(s) for r in m.split(",")]
            if not refs:
                problems.append(f"uncited sentence: {s[:80]!r}")
                continue
            unknown = [r for r in refs if r not in by_ref]
            if unknown:
                problems.append(f"cites {', '.join(unknown)}, which is not in the evidence")
                continue
            text = _CITE.sub("", s).strip()
            st = Statement(text, [by_ref[r] for r in refs], {})
            bad = unsupported(text, st, extra=derived)
            if bad:
                problems.append(f"{', '.join(bad)} in {text[:80]!r} is not in the cited evidence")
                continue
            out.append(st)
        cited = {c.ref for st in out for c in st.citations}
        for pol_ref, c in by_ref.items():
            if c.status == "negated" and pol_ref in cited:
                st = next(st for st in out if any(x.ref == pol_ref for x in st.citations))
                if not re.search(r"\b(?:no|not|without|absent|negative|denies|denied|ruled out|free of)\b", st.text,
                                 re.I):
                    problems.append(f"a negated finding ({pol_ref}) is phrased as present: {st.text[:80]!r}")
        return out, problems

    def phrase(self, answer: Answer) -> Answer:
        """``answer`` rephrased by the model, or ``answer`` itself with a notice when the endpoint
        fails or the reply does not verify."""
        try:
            reply = self.complete(self.messages(answer))
        except LLMError as exc:
            return replace(answer, notices=[*answer.notices, f"language model not used: {exc}"])
        statements, problems = self.verify(reply, answer)
        if problems:
            return replace(answer, notices=[*answer.notices, "language-model reply rejected ("
                                            + "; ".join(problems[:3]) + "); the verified answer is shown"])
        return replace(answer, text=" ".join(s.text for s in statements), statements=statements,
                       phrased_by=self.model)
