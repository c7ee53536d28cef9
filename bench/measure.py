"""One timed cycle of a system (start -> all running -> first GET -> graceful delete), the
A B A B ... alternation between systems, the statistics, and the memory snapshot."""

import statistics
import sys
import time

from systems import POLL, BenchError, smaps_rollup

SETTLE_S = 0.3  # before a delete that does not follow a GET: the pods' shells install their
#                 SIGTERM traps first (a PID 1 with no handler ignores SIGTERM)
MEMORY_SETTLE_S = 1.0


def cycle(system, run, http, memory=False):
    """Times one run of `system`; returns {"running": s, "http": s, "teardown": s, "memory": {}}."""
    out = {}
    system.setup(run)
    try:
        t0 = time.perf_counter()
        system.start(run)
        out["running"] = time.perf_counter() - t0
        if http:
            deadline = time.monotonic() + run.deadline_s
            while not system.http_ok(run):
                if time.monotonic() > deadline:
                    raise BenchError("%s: no HTTP 200 on the echo port" % system.name)
                time.sleep(POLL)
            out["http"] = time.perf_counter() - t0
        else:
            time.sleep(SETTLE_S)
        if hasattr(system, "check_running"):
            system.check_running(run)
        if memory:
            time.sleep(MEMORY_SETTLE_S)
            out["memory"] = snapshot(system.processes(run), len(run.names))
        t2 = time.perf_counter()
        system.stop(run)
        out["teardown"] = time.perf_counter() - t2
    except BaseException:
        system.cleanup()
        raise
    if hasattr(system, "check_clean"):
        system.check_clean()
    return out


def alternate(systems, n, make_run, http, warmup=1, memory_last=False, label=""):
    """Runs `warmup + n` rounds of every system in turn (A B C A B C ...); the warm-up round is
    discarded. Returns {system name: [cycle results]}."""
    results = {s.name: [] for s in systems}
    rounds = warmup + n
    for i in range(rounds):
        for s in systems:
            r = cycle(s, make_run(s), http, memory=memory_last and i == rounds - 1)
            if i >= warmup:
                results[s.name].append(r)
            print("bench: %s %s round %d/%d: %s" % (label, s.name, i + 1, rounds, brief(r)),
                  file=sys.stderr, flush=True)
    return results


def brief(r):
    return " ".join("%s=%.0fms" % (k, v * 1000) for k, v in r.items() if isinstance(v, float))


def stats(samples):
    """Median, min, max and n of a list of seconds, in milliseconds."""
    ms = [s * 1000 for s in samples]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms)}


def snapshot(procs, npods):
    """Sums RSS, PSS and USS (KiB) over the processes a system keeps for `npods` pods."""
    out = {"pods": npods}
    for group in ("fixed", "per_container", "per_pod"):
        total = {"count": len(procs[group]), "rss": 0, "pss": 0, "uss": 0}
        for pid in procs[group]:
            for k, v in smaps_rollup(pid).items():
                total[k] += v
        out[group] = total
    return out
