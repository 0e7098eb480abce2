"""``medmm fhir import DIR OUT``: a folder of FHIR R4 bundles to a medmm cohort."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fhir_command", metavar="ACTION", required=True)
    imp = sub.add_parser(
        "import",
        help="convert a folder of FHIR bundles (one patient each, e.g. Synthea) to a cohort",
        description="Convert a folder of FHIR R4 bundles (one patient each, as Synthea writes them) "
        "into a medmm cohort: manifest.csv, notes/, vitals/, events/, ehr.csv, problems.csv and "
        "import_report.json.",
    )
    imp.add_argument("src", metavar="DIR", help="folder of *.json bundles (searched recursively)")
    imp.add_argument("out", metavar="OUT", help="output cohort folder")
    imp.add_argument("--index-time", default="last-encounter-end",
                     help="last-encounter-end (default: the close of the last encounter, its notes and results "
                     "included), last-encounter-start, last-event, an ISO time for every patient, or a CSV with "
                     "patient_id,index_time")
    imp.add_argument("--lookback", default="365D", help="EHR feature window before the index time (default 365D)")
    imp.add_argument("--label", action="append", default=[], metavar="NAME=CODE[,CODE...]",
                     help="a label: 1 when a condition with one of these codes starts within --horizon "
                     "after the index time (repeatable)")
    imp.add_argument("--horizon", default="365D", help="label horizon after the index time (default 365D)")
    imp.add_argument("--survival", default=None, metavar="NAME",
                     help="also a time-to-death task NAME: label_NAME.time (days from the index time) and "
                     "label_NAME.event from Patient.deceasedDateTime, else censored at the last contact; declared "
                     "as a survival task in the manifest's sidecar")
    imp.add_argument("--survival-horizon", default="1825D",
                     help="administrative censoring of --survival (default 1825D)")
    imp.add_argument("--min-patients", type=int, default=5,
                     help="keep a code as an EHR feature when at least this many training patients have it")
    imp.add_argument("--scrub-phi", action="store_true", help="scrub names, dates, phones and IDs from notes")
    imp.add_argument("--validate", action="store_true",
                     help="validate every used resource with fhir.resources (slower; reports invalid fields)")
    imp.add_argument("--site", default="", help="value of the manifest's site column")
    imp.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    imp.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count, at most 4)")
    imp.add_argument("--limit", type=int, default=None, help="import at most this many bundles")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")


def _labels(specs: list[str]) -> dict[str, list[str]]:
    from medmm.errors import ConfigError

    out = {}
    for spec in specs:
        name, sep, codes = spec.partition("=")
        if not sep or not name.strip() or not codes.strip():
            raise ConfigError(f"bad --label {spec!r}", hint="write --label NAME=CODE[,CODE...]")
        out[name.strip()] = [c.strip() for c in codes.split(",") if c.strip()]
    return out


def run(args: argparse.Namespace) -> int:
    from medmm.io.fhir_cohort import ImportConfig, import_fhir_cohort

    cfg = ImportConfig(index_time=args.index_time, lookback=args.lookback, horizon=args.horizon,
                       labels=_labels(args.label), min_patients=args.min_patients, scrub_phi=args.scrub_phi,
                       validate=args.validate, site=args.site, seed=args.seed, survival=args.survival,
                       survival_horizon=args.survival_horizon)
    res = import_fhir_cohort(args.src, args.out, cfg, workers=args.workers, progress=not args.quiet,
                             limit=args.limit)
    print(f"{res.n_patients} patient(s) from {res.n_files} bundle(s) "
          f"({res.n_bytes / 1e6:.1f} MB in {res.seconds:.1f} s, {res.mb_per_s:.1f} MB/s); "
          f"{res.n_failed} bundle(s) skipped, {res.n_problems} problem(s) in {args.out}/problems.csv")
    print(f"manifest: {res.manifest}")
    return 0 if res.n_patients else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
