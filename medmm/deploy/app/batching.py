"""Micro-batching of ``/predict`` requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import MedmmError
from .conversion import Unprocessable

if TYPE_CHECKING:
    import asyncio

    import numpy as np

    from ...records import PatientRecord
    from ..runtime import Predictor

    Scored = tuple[np.ndarray, dict[str, np.ndarray | None]]  # probabilities, the preprocessed record


class Batcher:
    """Micro-batching: requests that arrive within ``max_wait_ms`` of each other are preprocessed and
    scored together (up to ``max_batch``) in one worker thread, off the event loop."""

    def __init__(self, predictor: Predictor, *, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.queue: asyncio.Queue[tuple[PatientRecord, asyncio.Future[Scored]]] | None = None
        self.task: asyncio.Task[None] | None = None

    async def submit(self, record: PatientRecord) -> Scored:
        import asyncio

        queue = self.queue
        if queue is None or self.task is None or self.task.done():
            queue = self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop(queue))
        fut = asyncio.get_running_loop().create_future()
        await queue.put((record, fut))
        return await fut

    async def _loop(self, queue: asyncio.Queue[tuple[PatientRecord, asyncio.Future[Scored]]]) -> None:
        import asyncio

        while True:
            batch = [await queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            results = await asyncio.to_thread(self._run, [r for r, _ in batch])
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _run(self, records: list[PatientRecord]) -> list[Scored | BaseException]:
        try:
            items = self.predictor.preprocessor.transform_many(records)
            probs = self.predictor.predict_values(items)
            return [(probs[i], items[i]) for i in range(len(records))]
        except Exception:  # noqa: BLE001 - one bad record must not fail the others: score them one by one
            out: list[Scored | BaseException] = []
            for r in records:
                try:
                    it = self.predictor.preprocessor.transform_many([r])
                    out.append((self.predictor.predict_values(it)[0], it[0]))
                except MedmmError as exc:
                    out.append(exc)
                except (ValueError, TypeError, KeyError) as exc:
                    out.append(Unprocessable(f"the record cannot be preprocessed: {type(exc).__name__}: {exc}"))
                except Exception as exc:  # noqa: BLE001
                    out.append(exc)
            return out
