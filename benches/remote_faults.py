"""The fault phase both remote-member benchmarks run (remote_triton.py, remote_mlserver.py): callers
predict on an ensemble with a local member and a remote one while the remote server is killed, and
every answer must come back — degraded once the server is gone — within the ensemble's latency budget.
"""

import threading
import time

import quorum


def kill_under_load(engine, ensemble, rows, kill, callers, budget_ms, before_s=0.3, after_s=1.0):
    """Calls `kill()` `before_s` into the load (it returns once the server is gone: a call started
    later must find it gone) and keeps the load on `after_s` longer. Returns a summary line and the
    problem found, if any."""
    calls, failed = [], []  # (started, degraded, ms)
    kill_at = time.perf_counter() + before_s
    stop_at = kill_at + after_s

    def caller(k):
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                p = engine.predict_row(ensemble, rows[i % len(rows)])
            except quorum.QuorumError as e:
                failed.append(repr(e))
                continue
            calls.append((t, p.degraded, (time.perf_counter() - t) * 1e3))
            i += callers

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, kill_at - time.perf_counter()))
    kill()
    # Calls that started before this instant (while the kill was under way too) may have been
    # answered: only later ones are judged, once all are in (a caller comparing with `kill_at` as
    # it ran would have judged those started during the kill as well).
    killed_at = time.perf_counter()
    for t in threads:
        t.join()
    after = [c for c in calls if c[0] > killed_at]
    late = [c for c in calls if c[2] > budget_ms + 50]
    line = (f"{len(calls)} answered (slowest {max(c[2] for c in calls):.1f} ms, budget {budget_ms:.0f} ms), "
            f"{len(failed)} failed, {len(late)} past the budget by 50 ms; "
            f"{sum(c[1] for c in after)} of {len(after)} calls started after the kill answered degraded")
    ok = not failed and not late and after and all(c[1] for c in after)
    return line, None if ok else f"not every answer came back degraded and on time after the kill: {failed[:3]}"
