"""`await engine.predict_async(...)` from asyncio: the answers of `predict`, errors as exceptions,
many requests at once (queued and batched) and a slow member that does not block the event loop."""

import asyncio
import time
from typing import Awaitable, Dict, List, Tuple

import pytest

import quorum


def test_predict_async_answers_as_predict_does(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    requests = [{n: r[n] for n in names} for r in rows[:50]]
    expected = [engine.predict("market", f).prediction for f in requests]

    async def one_by_one() -> List[quorum.Prediction]:
        return [await engine.predict_async("market", f) for f in requests]

    async def all_at_once() -> List[quorum.Prediction]:
        return await asyncio.gather(*(engine.predict_async("market", f) for f in requests))

    for answers in (asyncio.run(one_by_one()), asyncio.run(all_at_once())):
        # A batched run may round differently from a one-row one.
        assert [p.prediction for p in answers] == pytest.approx(expected, abs=1e-5)
        assert len({p.request_id for p in answers}) == len(requests)


def test_predict_async_raises_the_typed_errors(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}

    async def run(coroutine: Awaitable[object]) -> object:
        return await coroutine

    with pytest.raises(quorum.InvalidInputError):
        asyncio.run(run(engine.predict_async("market", {**good, names[0]: "high"})))  # type: ignore[dict-item]  # deliberately not a number
    with pytest.raises(quorum.NotFoundError):
        asyncio.run(run(engine.predict_async("nope", good)))
    with pytest.raises(quorum.DeadlineExceededError):
        asyncio.run(run(engine.predict_async("market", good, deadline_ms=0)))


def test_a_slow_prediction_leaves_the_event_loop_free(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}
    engine.inject_fault("sentiment", "slow", 80)  # under the 100 ms latency budget

    async def main() -> Tuple[quorum.Prediction, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        started = time.monotonic()
        # The first slow run teaches the engine that its runs are slow; the second is queued.
        await engine.predict_async("market", good)
        before = ticks
        p = await engine.predict_async("market", good)
        t.cancel()
        return p, ticks - before, time.monotonic() - started

    p, ticks, elapsed = asyncio.run(main())
    assert not p.degraded and elapsed >= 0.15
    # 80 ms on a dispatcher: the loop ticked meanwhile (every 5 ms), rather than once at the end.
    assert ticks >= 5, ticks
