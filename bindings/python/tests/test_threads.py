import threading
from typing import Dict, List

import numpy

import quorum


def test_many_threads_predict_at_once_and_agree(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    requests = [{n: r[n] for n in names} for r in rows[:40]]
    expected = [engine.predict("market", f).prediction for f in requests]
    matrix = numpy.array([[f[n] for n in names] for f in requests], dtype=numpy.float32)
    failures = []

    def worker(t: int) -> None:
        try:
            for i in range(300):
                k = (i * 7 + t) % len(requests)
                if i % 10 == 0:
                    batch = engine.predict_batch("market", matrix)
                    numpy.testing.assert_allclose(batch.predictions, expected, atol=1e-6)
                else:
                    assert engine.predict("market", requests[k]).prediction == expected[k]
                if i % 3 == 0:
                    p = engine.predict("market", requests[k])
                    engine.record_outcome(p.request_id, float(k % 2))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert engine.metrics("market")["metrics"]["all_time"]["count"] == 8 * 100
