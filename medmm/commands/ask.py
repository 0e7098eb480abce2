"""``medmm ask MANIFEST --patient ID "question"``: answer from one patient's record, with citations."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Answer a question about one patient from the record: vital signs and labs (latest, lowest, highest, "
        "mean, trend in a window), NEWS2, conditions, medications, encounters, what the notes say about a "
        "finding (negation honoured), the model's risk (--model) and summaries. Every statement cites the "
        "record; what the record lacks is refused.")
    p.add_argument("words", nargs="*", metavar="MANIFEST [QUESTION]",
                   help="the cohort manifest (CSV or Parquet), then the question (omit it with --interactive)")
    # nargs="+": argparse does not return to positionals after an option, so the question written after
    # --patient ID is collected here and moved back in run()
    p.add_argument("--patient", "-p", required=True, nargs="+", metavar="ID", help="the patient_id of the manifest row")
    p.add_argument("--interactive", "-i", action="store_true", help="ask questions one per line until EOF or 'quit'")
    p.add_argument("--model", default=None, help="a trained model folder, for risk questions")
    p.add_argument("--json", action="store_true", help="print each answer as JSON")
    p.add_argument("--no-evidence", action="store_true", help="print the answer without its evidence list")
    p.add_argument("--now", default=None, help="the time questions are asked at (default: the index time)")
    p.add_argument("--llm-url", default=None, help="an OpenAI-compatible API root (e.g. http://localhost:8000/v1) "
                                                   "to phrase answers; replies are verified against the evidence")
    p.add_argument("--llm-model", default="default", help="the model name for --llm-url")
    p.add_argument("--llm-key-env", default="MEDMM_LLM_API_KEY",
                   help="environment variable holding the endpoint's API key (default MEDMM_LLM_API_KEY)")


def _print(answer, args: argparse.Namespace) -> None:
    import json

    if args.json:
        print(json.dumps(answer.to_dict(), default=str))
    else:
        print(answer.format(evidence=not args.no_evidence))


def run(args: argparse.Namespace) -> int:
    import os

    from ..assistant import Assistant, QuestionError
    from ..errors import MedmmError

    words = [*args.words, *args.patient[1:]]
    args.patient = args.patient[0]
    if not words:
        from ..errors import MedmmError

        raise MedmmError("no manifest given", hint='medmm ask MANIFEST --patient ID "question"')
    args.manifest = words[0]
    args.question = " ".join(words[1:]) or None
    if args.question is None and not args.interactive:
        raise QuestionError("no question given", hint='ask one, e.g. medmm ask manifest.csv -p P00001 "last SpO2", '
                                                      "or use --interactive")
    model = None
    if args.model:
        from .predict import load_model

        model = load_model(args.model)
    phraser = None
    if args.llm_url:
        from ..assistant import LLMPhraser

        phraser = LLMPhraser(args.llm_url, args.llm_model, api_key=os.environ.get(args.llm_key_env))
    bot = Assistant.from_manifest(args.manifest, args.patient, model=model, now=args.now, phraser=phraser)
    if args.question is not None:
        _print(bot.ask(args.question), args)
        if not args.interactive:
            return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("ask> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip().lower() in ("quit", "exit", "q"):
            return 0
        if not line.strip():
            continue
        try:
            _print(bot.ask(line.strip()), args)
        except MedmmError as exc:  # one bad question does not end the session
            print(f"medmm ask: error: {exc}", file=sys.stderr)
        print()
