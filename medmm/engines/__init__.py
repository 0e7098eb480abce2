"""Where work runs: in this process, a local process pool (the default) or a Ray cluster.

The same pipeline runs on every engine and gives the same results (DESIGN.md, contract 11):

* ``local``: this machine; readers run in ``workers`` processes (0: inline).
* ``ray``: a Ray cluster (``pip install medmm[ray]``): on CPUs each batch of manifest rows is
  read, preprocessed and scored by one task, in worker processes that keep the model loaded;
  with GPUs Ray Data reads and preprocesses in tasks and scores in an actor per GPU. Both are
  streamed with backpressure; every batch's result is written as it comes, so a re-run after
  a lost node resumes from what was written. The files a manifest names must be readable at
  the same path on every node (a shared filesystem).

``address`` picks the Ray cluster: ``None`` (``$RAY_ADDRESS``, else a Ray started for this
process), ``'auto'`` (the cluster this machine belongs to), ``'host:port'`` (its GCS) or
``'ray://host:port'`` (Ray Client). Ray is imported only when the ``ray`` engine is used.

Training across nodes uses the same cache through torchrun or Ray Train's ``TorchTrainer``
(see :mod:`medmm.train.distributed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["ENGINES", "check_engine", "add_engine_arguments", "map_rows", "row_state_path"]

#: engine names, the default first
ENGINES = ("local", "ray")


def check_engine(name: str) -> str:
    """``name`` if it is an engine, else a :class:`~medmm.errors.ConfigError`."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}", column="engine", hint=f"use one of {', '.join(ENGINES)}")
    return name


def add_engine_arguments(p: Any) -> None:
    """``--engine`` and ``--address`` of a command."""
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="where the work runs: local (this machine, default) or ray (a Ray cluster; pip install "
                        "'medmm[ray]'); the results are the same")
    p.add_argument("--address", default=None,
                   help="Ray cluster for --engine ray: auto (the cluster this machine belongs to), host:port or "
                        "ray://host:port (default $RAY_ADDRESS, else a Ray started for this command)")


def row_state_path(state_dir: str | Path, key: str) -> Path:
    """Where :func:`map_rows` records that the row ``key`` is done (its result, as JSON)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))[:80]
    return Path(state_dir) / f"{safe}-{hashlib.sha1(str(key).encode()).hexdigest()[:10]}.json"


def _write_state(path: Path, key: str, result: Any) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "result": result}))
    os.replace(tmp, path)


def map_rows(
    rows: Iterable[dict[str, Any]],
    fn: Callable[[dict[str, Any]], Any],
    *,
    state_dir: str | Path,
    key: str = "patient_id",
    engine: str = "local",
    address: str | None = None,
    workers: int = 0,
    progress: bool = False,
) -> list[Any]:
    """``fn(row)`` for every manifest row, in row order, where ``engine`` says.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one) and
    return a JSON-serialisable result; it may write files of its own (a preprocessing cache).
    Each row's result is written to ``state_dir`` (:func:`row_state_path`) as soon as it is
    back, and rows already there are not run again, so a re-run after a failure resumes. On
    ``local``, ``workers`` > 0 runs rows in that many processes; on ``ray``, as Ray tasks.
    """
    check_engine(engine)
    rows = list(rows)
    keys = [str(r[key]) for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError(f"{key} {dup!r} appears more than once", column=key, hint="give every row its own key")
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for k in keys:
        p = row_state_path(state, k)
        if p.exists():
            results[k] = json.loads(p.read_text())["result"]
    todo = [(k, r) for k, r in zip(keys, rows) if k not in results]
    from tqdm.auto import tqdm

    with tqdm(total=len(rows), initial=len(rows) - len(todo), desc="rows", unit="row", disable=not progress) as bar:
        def done(k: str, result: Any) -> None:
            _write_state(row_state_path(state, k), k, result)
            results[k] = result
            bar.update(1)

        if engine == "ray":
            from .ray_engine import map_rows_ray

            map_rows_ray(todo, fn, done, address=address, state_dir=state)
        elif workers > 0 and todo:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("forkserver")) as pool:
                futures = {pool.submit(fn, r): k for k, r in todo}
                for f in as_completed(futures):
                    done(futures[f], f.result())
        else:
            for k, r in todo:
                done(k, fn(r))
    return [results[k] for k in keys]
