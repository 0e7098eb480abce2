"""The Ray engine: scoring a manifest and mapping rows on a Ray cluster (``pip install medmm[ray]``).

Scoring streams the manifest's batches through the cluster with backpressure, in one of two
shapes:

* **without GPUs** (the CPUs do everything)::

      manifest batch --(one task: read + preprocess + score)--> table

  Each worker process loads the model once (torch, MONAI and scikit-learn imported once) and
  keeps it for every later batch of the job, so a second split costs only its reads; nothing
  but the rows and the small prediction tables crosses the object store. When there are too
  few batches to keep every CPU busy, a batch's reads are split over several tasks and the
  batch is scored whole in one more task. ``medmm evaluate`` calls :func:`prepare` first, so
  the workers import and load the model while the command loads its own copy.
* **with GPUs**: Ray Data reads and preprocesses in CPU tasks (the preprocessing alone is
  loaded there) and streams the tensors to an actor per GPU that holds the model::

      manifest batches --(tasks: read + preprocess)--> entries --(actor pool: the model)--> tables

Batches are the local engine's batches (``batch_size`` manifest rows, in order) and every one
is scored whole by :func:`medmm.evaluate.scoring.score_batch`, so the predictions equal the
local engine's. Each scored batch is written as a Parquet part next to ``out`` as soon as it is
back; a re-run of the same job skips the parts already there, and the final Parquet file is
assembled from the parts in cohort order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..errors import EngineError, MedmmError

__all__ = ["connect", "prepare", "manifest_batches", "score_manifest", "map_rows_ray"]

log = logging.getLogger(__name__)

_MASKED = "__masked__"
_models: dict[str, Any] = {}  # bundle digest -> model, per Ray worker process
_preprocessors: dict[str, Any] = {}  # bundle digest -> its preprocessor alone (a read worker of the GPU pipeline)
_loads = 0  # models this worker process loaded (each costs the imports of torch, MONAI, scikit-learn once)


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EngineError("the ray engine needs Ray", hint="pip install 'medmm[ray]', or use --engine local") from exc
    return ray


def _where(address: str | None) -> str:
    return address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"


def _reachable(address: str) -> None:
    """Refuse quickly a ``host:port`` or ``ray://host:port`` nothing listens on (Ray itself
    retries for a minute or more)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"cannot parse the Ray address {address!r}", hint="give auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise EngineError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                          hint="start it (ray start --head), check the host and port, or use --engine local") from exc


def connect(address: str | None = None) -> str:
    """Join the Ray cluster at ``address`` (an already connected Ray is used as it is); its
    address, for messages."""
    ray = _ray()
    if ray.is_initialized():
        return _where(address)
    if address not in (None, "auto"):
        _reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        raise EngineError(f"cannot connect to the Ray cluster at {_where(address)}: {exc}",
                          hint="start it (ray start --head), check --address, or use --engine local") from exc
    return _where(address)


# --------------------------------------------------------------------------- the model on the workers


def _bundle(model: Any) -> dict[str, bytes]:
    """The files of a model folder, in memory: what the workers load the model from."""
    if isinstance(model, (str, Path)):
        folder = Path(model)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    with tempfile.TemporaryDirectory(prefix="medmm-model-") as tmp:
        model.save(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _digest(bundle: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(bundle.items()):
        h.update(name.encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _fetch(bundle: Any) -> dict[str, bytes]:
    """The files of a bundle given as themselves or as ``(object reference,)``: a reference in a
    tuple is not resolved by Ray before the task runs, so a process that has the model loaded
    never fetches its files again."""
    if isinstance(bundle, tuple):
        bundle = _ray().get(bundle[0])
    return bundle


def _load(bundle: Any, digest: str) -> Any:
    """The model of ``bundle``, loaded once per worker process through the one model loader
    (the bundle, an object reference, is fetched only when the process has not loaded it yet)."""
    if digest not in _models:
        from ..models.multimodal import MultimodalModel

        files = _fetch(bundle)
        with tempfile.TemporaryDirectory(prefix="medmm-model-") as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            model = MultimodalModel.load(tmp)
        global _loads
        _loads += 1
        _models.clear()
        _preprocessors.clear()
        _models[digest] = model
    return _models[digest]


def _load_preprocessor(bundle: Any, digest: str) -> Any:
    """The fitted preprocessing of ``bundle`` alone (what a read needs: no network is built),
    once per worker process; a process that holds the whole model uses its preprocessor."""
    if digest in _models:
        return _models[digest].preprocessor
    if digest not in _preprocessors:
        from ..preprocess.state import STATE_JSON, read_state

        files = _fetch(bundle)
        if STATE_JSON not in files:  # a folder of an old format: the one loader reads it
            return _load(files, digest).preprocessor
        with tempfile.TemporaryDirectory(prefix="medmm-model-") as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            pre = read_state(tmp)
        _preprocessors.clear()
        _preprocessors[digest] = pre
    return _preprocessors[digest]


def _warm(bundle: Any, digest: str, whole: bool) -> int:
    """Ray task: import what reading and scoring need and load the model (or only its
    preprocessing) into this worker process, ahead of the batches (see :func:`prepare`)."""
    from ..cohort import row_to_record  # noqa: F401 - the read path's imports, paid here
    from ..evaluate.scoring import record_entry  # noqa: F401

    if whole:
        _load(bundle, digest)
    else:
        _load_preprocessor(bundle, digest)
    return os.getpid()


# --------------------------------------------------------------------------- pipeline stages


def _entries(blob: bytes, *, base: str, pre: Any, modalities: tuple[str, ...]) -> tuple[list[dict], list]:
    """Manifest rows (pickled ``(row index, row)`` pairs) -> scoring entries and the rows' problems."""
    from ..cohort import ProblemReport, row_to_record
    from ..evaluate.scoring import record_entry

    rep = ProblemReport()
    entries = [record_entry(row_to_record(raw, base=Path(base), report=rep, row_index=int(i), modalities=modalities),
                            pre, rep.problems)
               for i, raw in pickle.loads(blob)]
    return entries, rep.problems


def _score_entries(model: Any, entries: list[dict], subsets: Any, device: Any, cache_encoders: bool) -> tuple:
    import torch

    from ..evaluate.scoring import score_batch, scoring_setup

    mods, tasks, cols, shapes, subset_list = scoring_setup(model, subsets)
    with torch.inference_mode():
        return score_batch(model, entries, mods=mods, shapes=shapes, subset_list=subset_list, tasks=tasks, cols=cols,
                           device=device, cache_encoders=cache_encoders)


def _on_device(model: Any, device: str) -> tuple[Any, Any]:
    from ..train.trainer import resolve_device

    dev = resolve_device(device)
    return model.to(dev).eval(), dev


def _score_rows(blob: bytes, *, base: str, bundle: Any, digest: str, modalities: tuple[str, ...], subsets: Any,
                device: str, cache_encoders: bool) -> bytes:
    """Ray task: one batch of manifest rows read, preprocessed and scored in this worker (the
    model loaded once per process): the pickled ``(rows, masked, problems)`` of the batch."""
    model, dev = _on_device(_load(bundle, digest), device)
    entries, problems = _entries(blob, base=base, pre=model.preprocessor, modalities=modalities)
    rows, masked = _score_entries(model, entries, subsets, dev, cache_encoders)
    return pickle.dumps((rows, masked, problems), protocol=5)


def _read_rows(blob: bytes, *, base: str, bundle: Any, digest: str, modalities: tuple[str, ...]) -> bytes:
    """Ray task: part of a batch read and preprocessed (for :func:`_score_read`): the pickled
    ``(entries, problems)``."""
    pre = _load_preprocessor(bundle, digest)
    return pickle.dumps(_entries(blob, base=base, pre=pre, modalities=modalities), protocol=5)


def _score_read(*parts: bytes, bundle: Any, digest: str, subsets: Any, device: str, cache_encoders: bool) -> bytes:
    """Ray task: a batch whose parts :func:`_read_rows` read, scored whole (as :func:`_score_rows`)."""
    entries, problems = [], []
    for blob in parts:
        e, p = pickle.loads(blob)
        entries.extend(e)
        problems.extend(p)
    model, dev = _on_device(_load(bundle, digest), device)
    rows, masked = _score_entries(model, entries, subsets, dev, cache_encoders)
    return pickle.dumps((rows, masked, problems), protocol=5)


def _read_batch(batch: dict[str, Any], *, base: str, bundle: Any, digest: str, modalities: tuple[str, ...]) -> dict:
    """Ray Data task: manifest rows -> preprocessed scoring entries (and the rows' problems)."""
    pre = _load_preprocessor(bundle, digest)
    out_k, out_e = [], []
    for k, blob in zip(batch["k"], batch["rows"]):
        out_k.append(k)
        out_e.append(pickle.dumps(_entries(blob, base=base, pre=pre, modalities=modalities), protocol=5))
    return {"k": np.asarray(out_k), "entries": np.array(out_e, dtype=object)}


class _Scorer:
    """Ray Data actor: scores batches of entries with the model (on its GPU when it has one)."""

    def __init__(self, bundle: Any, digest: str, subsets: Any, device: str, cache_encoders: bool) -> None:
        self.model, self.device = _on_device(_load(bundle, digest), device)
        self.subsets, self.cache_encoders = subsets, cache_encoders

    def __call__(self, batch: dict[str, Any]) -> dict:
        out_k, out_p = [], []
        for k, blob in zip(batch["k"], batch["entries"]):
            entries, problems = pickle.loads(blob)
            rows, masked = _score_entries(self.model, entries, self.subsets, self.device, self.cache_encoders)
            out_k.append(k)
            out_p.append(pickle.dumps((rows, masked, problems), protocol=5))
        return {"k": np.asarray(out_k), "part": np.array(out_p, dtype=object)}


# --------------------------------------------------------------------------- parts on disk


def _part_path(parts: Path, k: int) -> Path:
    return parts / f"part-{k:06d}.parquet"


def _write_part(parts: Path, k: int, rows: list[dict], masked: dict[str, Any], tasks: tuple[str, ...]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for name, probs in masked.items():
        for j, t in enumerate(tasks):
            frame[f"{_MASKED}{name}{_MASKED}{t}"] = probs[:, j]
    tmp = parts / f".part-{k:06d}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, _part_path(parts, k))


def _read_part(path: Path, tasks: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(path)
    mcols = [c for c in frame.columns if c.startswith(_MASKED)]
    names = list(dict.fromkeys(c[len(_MASKED):].split(_MASKED)[0] for c in mcols))
    masked = {n: np.stack([frame[f"{_MASKED}{n}{_MASKED}{t}"].to_numpy() for t in tasks], axis=1) for n in names}
    return frame.drop(columns=mcols), masked


def _job_state(parts: Path, job: dict[str, Any]) -> set[int]:
    """Batches already written for this very job; parts of another job are removed."""
    meta = parts / "job.json"
    if parts.exists():
        try:
            same = json.loads(meta.read_text()) == job
        except (OSError, ValueError):
            same = False
        if same:
            return {int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")}
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    meta.write_text(json.dumps(job, indent=1))
    return set()


def _medmm_cause(exc: BaseException) -> MedmmError | None:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MedmmError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _cluster_failed(exc: BaseException, where: str, what: str, progress: str) -> NoReturn:
    """Re-raise the medmm error a Ray task died of, or an EngineError saying what was saved."""
    cause = _medmm_cause(exc)
    if cause is not None:
        raise cause from exc
    raise EngineError(f"the Ray cluster at {where} failed{what} ({type(exc).__name__}: {str(exc)[:300]}); {progress}",
                      hint="run the same command again to resume from them") from exc


# --------------------------------------------------------------------------- scoring


def score_manifest(
    model: Any,
    manifest: Any,
    *,
    split: str | None = "test",
    batch_size: int = 64,
    subsets: Any = False,
    out: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
    report: Any = None,
    cache_encoders: bool = True,
    address: str | None = None,
    actors: int | None = None,
    fused: bool | None = None,
) -> Any:
    """:func:`medmm.evaluate.scoring.score_cohort` of a manifest on a Ray cluster.

    ``model`` is a model or its folder; the workers load it from its files. ``fused`` (default:
    when the cluster has no GPU) reads, preprocesses and scores in Ray tasks whose worker
    processes keep the model loaded (a task per batch; with too few batches to fill the CPUs,
    several read tasks and a scoring task per batch); otherwise Ray Data streams the read
    batches to ``actors`` scoring actors (default: one per GPU, else half the cluster's CPUs),
    a pool started at that size. With ``out``,
    scored batches are kept in ``<out>.parts/`` until the job is done, so a re-run after a
    failure resumes from them.
    """
    import time

    import pandas as pd
    from tqdm.auto import tqdm

    from ..cohort import Cohort
    from ..evaluate.scoring import ScoredCohort, ParquetAppender, collect_scored, scoring_setup
    from ..models.multimodal import MultimodalModel

    if not isinstance(manifest, (str, Path)):
        raise EngineError("the ray engine scores a manifest file", hint="give the manifest's path, or use engine='local'")
    t0 = time.perf_counter()
    manifest = Path(manifest)
    if isinstance(model, (str, Path)):
        model = MultimodalModel.load(model)
    mods, tasks, _, shapes, subset_list = scoring_setup(model, subsets)
    cohort = Cohort.from_manifest(manifest, modalities=mods, progress=False)
    if report is not None:
        report.problems.extend(cohort.report.problems)  # the manifest's own problems
    if split not in (None, "all"):
        cohort = cohort.split(split)
    rows = cohort.rows
    index = [int(r["_row"]) for r in rows]
    starts = list(range(0, len(rows), batch_size))
    bundle = _bundle(model)
    digest = _digest(bundle)
    job = {"manifest": str(manifest.resolve()), "manifest_mtime_ns": manifest.stat().st_mtime_ns,
           "model": digest, "split": split, "batch_size": batch_size, "patients": len(rows),
           "subsets": [list(s) for s in subset_list], "cache_encoders": cache_encoders}
    tmp_parts = out is None
    parts = Path(tempfile.mkdtemp(prefix="medmm-parts-")) / "parts" if tmp_parts else Path(f"{out}.parts")
    done = _job_state(parts, job)
    todo = [k for k in range(len(starts)) if k not in done]
    where = address
    bar = tqdm(total=len(rows), desc="score (ray)", unit="pt", disable=not progress,
               initial=sum(len(rows[starts[k]:starts[k] + batch_size]) for k in done))
    problems: list = []
    try:
        if todo:
            where = connect(address)
            _run(todo, starts, rows, index, batch_size, manifest, bundle, digest, mods, shapes, subset_list, device,
                 cache_encoders, actors, parts, tasks, problems, bar, where, len(starts) - len(todo), fused)
    finally:
        bar.close()
    if report is not None:
        report.problems.extend(problems)
    frames, masked = [], {}
    writer = ParquetAppender(out)
    try:
        for k in range(len(starts)):
            frame, m = _read_part(_part_path(parts, k), tasks)
            frames.append(frame)
            writer.add(frame)
            for name, v in m.items():
                masked.setdefault(name, []).append(v)
    finally:
        writer.close()
    shutil.rmtree(parts.parent if tmp_parts else parts, ignore_errors=True)
    from ..evaluate.scoring import subset_name

    masked = {subset_name(s): masked.get(subset_name(s), []) for s in subset_list}
    scored: ScoredCohort = collect_scored(frames, masked, tasks, mods, time.perf_counter() - t0, out)
    if not len(frames):
        scored.predictions = pd.DataFrame(columns=scored.predictions.columns)
    return scored


def _node_slots(share: float = 1.0) -> list[str]:
    """The alive nodes' ids, once per task of ``share`` CPUs each runs at once, taken round-robin
    (the first of every node, then the second ...)."""
    ray = _ray()
    per_node = [(n["NodeID"], int(float(n.get("Resources", {}).get("CPU", 0)) // share))
                for n in ray.nodes() if n.get("Alive")]
    out: list[str] = []
    for r in range(max((k for _, k in per_node), default=0)):
        out.extend(node for node, k in per_node if k > r)
    return out


def _slots(resources: dict[str, float]) -> int:
    """How many one-CPU tasks the cluster runs at once."""
    return max(1, len(_node_slots()) or int(resources.get("CPU", 1)))


def _read_share(cpus: float) -> float:
    """The CPUs a Ray Data read task reserves beside the quarter-CPU scoring actors (see :func:`_run_data`)."""
    return 1.0 if cpus >= 4 else 0.75


def _task_memory(batch_size: int, shapes: dict, model_bytes: int) -> int:
    """The memory a read (and score) task reserves: a worker with torch (~400 MiB), the model
    twice (its files and its tensors) and a batch of raw and preprocessed inputs."""
    per_patient = sum(int(np.prod(s)) for s in shapes.values()) * 4 * 8
    return 400 * 2**20 + 2 * model_bytes + batch_size * per_patient


def _run(todo, starts, rows, index, batch_size, manifest, bundle, digest, mods, shapes, subset_list, device, cache_encoders,
         actors, parts, tasks, problems, bar, where, written, fused=None) -> None:
    """Score the batches ``todo`` on the cluster, writing each scored batch as it comes.

    Without GPUs (``fused``), each batch is one task that reads, preprocesses and scores it in
    the worker process that has the model loaded (a process per CPU, reused by every batch and
    by every later call of this job, warmed ahead by :func:`prepare`), or, when the batches are
    too few to keep the CPUs busy, several read tasks and one scoring task (:func:`_run_tasks`);
    with GPUs, Ray Data reads and preprocesses in CPU tasks and streams the tensors to an actor
    per GPU."""
    ray = _ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if fused is None:
        fused = not gpus
    ref = _bundle_ref(bundle, digest)
    items = [(k, list(zip(index[starts[k]:starts[k] + batch_size], rows[starts[k]:starts[k] + batch_size]))) for k in todo]
    memory = _task_memory(batch_size, shapes, sum(len(v) for v in bundle.values()))

    def write(k: int, blob: bytes) -> None:
        nonlocal written
        batch_rows, masked, probs = pickle.loads(blob)
        _write_part(parts, int(k), batch_rows, masked, tasks)
        problems.extend(probs)
        written += 1
        bar.update(len(batch_rows))

    try:
        if fused:
            _run_tasks(items, write, base=str(manifest.parent), ref=ref, digest=digest, mods=mods, subsets=subset_list,
                       device=device, cache_encoders=cache_encoders, memory=memory, slots=_slots(resources))
        else:
            _run_data(items, write, base=str(manifest.parent), ref=ref, digest=digest, mods=mods, subsets=subset_list,
                      device=device, cache_encoders=cache_encoders, memory=memory, gpus=gpus, actors=actors,
                      cpus=float(resources.get("CPU", 1)))
    except MedmmError:
        raise
    except Exception as exc:
        _cluster_failed(exc, where, f" while scoring {manifest}",
                        f"{written} of {len(starts)} batches of {batch_size} patients are written in {parts}")
    finally:
        _settle_warm()


#: the fewest patients a read task of a split batch gets
_MIN_CHUNK = 4


def _reads_per_batch(n_batches: int, slots: int, batch_size: int) -> int:
    """Read tasks per batch: one (read and scored in the same task) when the batches keep every
    CPU busy twice over; else as many as spread the reads over the CPUs (a cohort or a split of
    a few batches on a larger cluster), the batch then scored as a whole in one more task."""
    if slots <= 1 or n_batches >= 2 * slots:
        return 1
    return max(1, min(-(-2 * slots // max(1, n_batches)), batch_size // _MIN_CHUNK))


def _run_tasks(items, write, *, base, ref, digest, mods, subsets, device, cache_encoders, memory, slots) -> None:
    """Ray tasks, spread over the nodes, at most twice the cluster's CPUs' worth of batches in
    flight: one task per batch (read + preprocess + score), or, when there are too few batches
    to fill the CPUs, its reads split over several tasks and the batch scored whole after them
    (the same batches as the local engine). A task lost with its node is retried by Ray."""
    ray = _ray()
    opts = {"num_cpus": 1, "memory": memory, "max_retries": 3}
    fused = ray.remote(scheduling_strategy="SPREAD", **opts)(_score_rows)
    read = ray.remote(scheduling_strategy="SPREAD", **opts)(_read_rows)
    score = ray.remote(**opts)(_score_read)  # placed where most of its batch was read
    common = {"bundle": ref, "digest": digest}
    per = _reads_per_batch(len(items), slots, max((len(rows) for _, rows in items), default=1))
    queue = list(items)
    pending: dict[Any, int] = {}
    reads: list[Any] = []
    try:
        while queue or pending:
            while queue and len(pending) < 2 * slots:
                k, pairs = queue.pop(0)
                if per == 1 or len(pairs) < 2 * _MIN_CHUNK:
                    done = fused.remote(pickle.dumps(pairs, protocol=5), base=base, modalities=mods, subsets=subsets,
                                        device=device, cache_encoders=cache_encoders, **common)
                else:
                    size = max(_MIN_CHUNK, -(-len(pairs) // per))
                    chunks = [read.remote(pickle.dumps(pairs[s:s + size], protocol=5), base=base, modalities=mods,
                                          **common) for s in range(0, len(pairs), size)]
                    reads.extend(chunks)
                    done = score.remote(*chunks, subsets=subsets, device=device, cache_encoders=cache_encoders,
                                        **common)
                pending[done] = k
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                write(pending.pop(r), ray.get(r))
    finally:
        # a failure: the batches still running are not needed any more; their workers are ended
        # (a task interrupted in the middle of an import would leave its process unusable)
        for r in [*pending, *reads]:
            ray.cancel(r, force=True)


def _run_data(items, write, *, base, ref, digest, mods, subsets, device, cache_encoders, memory, gpus, actors,
              cpus) -> None:
    """Ray Data: read + preprocess tasks -> scoring actors (a GPU each) -> the driver."""
    ray = _ray()
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    n_actors = min(len(items), actors or (gpus or max(1, int(cpus) // 2)))
    # Reads (file I/O, decoding, resampling) are the work; scoring a batch on CPU is a small part of
    # it. So a CPU scoring actor reserves a quarter of a CPU and sits beside the reads of its node; on
    # a small cluster a read reserves three quarters, so that a node of one CPU runs a read next to the
    # actor (a whole CPU each would leave the reads never starting beside an actor holding the only
    # CPU: a deadlock)
    share = _read_share(cpus)
    ds = ray.data.from_items([{"k": k, "rows": pickle.dumps(pairs, protocol=5)} for k, pairs in items],
                             override_num_blocks=len(items))
    # the reads' memory reservation also keeps them in tasks, out of the actors (Ray Data fuses
    # stages whose remote arguments agree)
    ds = ds.map_batches(_read_batch, batch_size=1, memory=memory, num_cpus=share,
                        fn_kwargs={"base": base, "bundle": ref, "digest": digest, "modalities": mods})
    ds = ds.map_batches(_Scorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n_actors),
                        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 0.25,
                        fn_constructor_kwargs={"bundle": ref, "digest": digest, "subsets": subsets,
                                               "device": device, "cache_encoders": cache_encoders})
    for out in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
        for k, blob in zip(out["k"], out["part"]):
            write(int(k), blob)


# --------------------------------------------------------------------------- warming the workers ahead

_prepared: dict[str, Any] = {}  # digest -> {"ref": the bundle in the object store, "warm": warm-up tasks}


def _bundle_ref(bundle: dict[str, bytes], digest: str) -> Any:
    """The bundle in the object store: the one :func:`prepare` put there for the same files, else put now."""
    ray = _ray()
    got = _prepared.get(digest)
    if got is not None and got.get("session") == _session():
        return (got["ref"],)
    return (ray.put(bundle),)


def _session() -> Any:
    ray = _ray()
    try:
        return ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - not connected
        return None


def _settle_warm() -> None:
    """Collect the warm-up tasks that have finished (a failed one is only a cold worker: the batch
    that lands there loads the model itself and reports any real error)."""
    ray = _ray()
    for got in _prepared.values():
        warm = got.get("warm") or []
        if not warm:
            continue
        ready, rest = ray.wait(warm, num_returns=len(warm), timeout=0)
        for r in ready:
            try:
                ray.get(r)
            except Exception as exc:  # noqa: BLE001
                log.debug("a warm-up task failed: %s", exc)
        got["warm"] = rest


def manifest_batches(manifest: str | Path, splits: Any, batch_size: int) -> int | None:
    """How many batches of ``batch_size`` scoring the ``splits`` of ``manifest`` takes (``None``
    or ``'all'`` in ``splits``: every row; a row without a split counts for each); ``None``
    when the manifest cannot be read here (its own reader reports why later)."""
    from ..cohort import read_manifest

    try:
        frame = read_manifest(manifest)
    except MedmmError:
        return None
    total = 0
    col = frame["split"].astype(str).str.strip().str.lower() if "split" in frame.columns else None
    for sp in splits:
        if sp in (None, "all") or col is None:
            n = len(frame)
        else:
            n = int(((col == str(sp).lower()) | frame["split"].isna() | (col == "")).sum())
        total += -(-n // max(1, int(batch_size)))
    return total


def prepare(model: str | Path, *, address: str | None = None, batches: int | None = None,
            fused: bool | None = None) -> int:
    """Start the cluster's side of :func:`score_manifest` early, while this process does its
    own start-up (loading the model, reading the manifest): connect, put the model folder's
    files in the object store and load the model into as many worker processes as will score
    at once (at most ``batches``), one Ray task each, spread over the nodes. A later
    :func:`score_manifest` of the same model (the same files) in this job finds them loaded;
    nothing else depends on it. Returns the number of warm-up tasks started (0 for a model
    that is not a folder)."""
    folder = Path(model)
    if not (folder / "medmm_model.json").is_file():
        return 0  # an MLflow URI or a bad path: the caller's own load says what is wrong
    ray = _ray()
    connect(address)
    bundle = _bundle(folder)
    digest = _digest(bundle)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    whole = (not gpus) if fused is None else fused
    share = 1.0 if whole else _read_share(float(resources.get("CPU", 1)))
    slots = _node_slots(share)  # one warm-up per task the nodes run at once, each on its node
    if batches is not None:
        slots = slots[:max(0, int(batches))]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ref = ray.put(bundle)
    warm = ray.remote(num_cpus=share, max_retries=0)(_warm)
    _prepared.clear()
    _prepared[digest] = {"ref": ref, "session": _session(), "warm": [
        warm.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)).remote((ref,), digest, whole)
        for node in slots]}
    return len(slots)


# --------------------------------------------------------------------------- rows


def _call(fn: Callable[[dict], Any], row: dict) -> Any:
    return fn(row)


def map_rows_ray(todo: list[tuple[str, dict]], fn: Callable[[dict], Any], done: Callable[[str, Any], None], *,
                 address: str | None, state_dir: Path) -> None:
    """Run ``fn`` on every row of ``todo`` as Ray tasks, at most twice the cluster's CPUs in
    flight; ``done(key, result)`` as each comes back (see :func:`medmm.engines.map_rows`)."""
    if not todo:
        return
    ray = _ray()
    where = connect(address)
    remote = ray.remote(num_cpus=1, max_retries=3)(_call)
    fn_ref = ray.put(fn)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, str] = {}
    queue = list(todo)
    n_done = 0
    try:
        while queue or pending:
            while queue and len(pending) < window:
                k, row = queue.pop(0)
                pending[remote.remote(fn_ref, row)] = k
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                done(pending.pop(r), ray.get(r))
                n_done += 1
    except MedmmError:
        raise
    except Exception as exc:
        _cluster_failed(exc, where, "", f"{n_done} of {len(todo)} rows were done and recorded in {state_dir}")
