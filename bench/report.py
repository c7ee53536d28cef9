"""Renders the results as Markdown tables and writes them into docs/perf.md between two marker
lines, keeping the hand-written text around them."""

import os
import statistics

from measure import stats

BEGIN = "<!-- bench/run: generated from here -->"
END = "<!-- bench/run: generated up to here -->"
PEERS = (("podman", "podman kube play"), ("crun", "2 × `crun run -d` (floor)"))


def write(path, results):
    block = BEGIN + "\n" + render(results) + END + "\n"
    text = open(path).read() if os.path.exists(path) else "# Performance\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def ms(v):
    return "%.1f" % v if v < 10 else "%.0f" % v


def cell(st):
    return "**%s** (%s–%s)" % (ms(st["median"]), ms(st["min"]), ms(st["max"]))


def timing_rows(results, rows):
    """rows: (label, measurement key, metric key). One line per row, systems side by side."""
    head = "| | peapod | " + " | ".join(p[1] for p in PEERS) + " | peapod/podman | peapod/crun |\n"
    head += "|---|---|---|---|---|---|\n"
    lines = []
    for label, key, metric in rows:
        if key not in results:
            continue
        st = {}
        for name, runs in results[key].items():
            samples = [r[metric] for r in runs if metric in r]
            if samples:
                st[name] = stats(samples)
        if "peapod" not in st:
            continue
        cells = [cell(st[n]) if n in st else "—" for n in ("peapod", "podman", "crun")]
        ratios = []
        for n in ("podman", "crun"):
            x = paired_ratio(results[key], n, metric)
            ratios.append("%.2f×" % x if x is not None else "—")
        lines.append("| %s | %s | %s |\n" % (label, " | ".join(cells), " | ".join(ratios)))
    return head + "".join(lines) if lines else ""


def paired_ratio(runs, peer, metric):
    """Median over rounds of peapod's time over the peer's in the same round: runs alternate,
    so both sides of a pair saw the same state of the machine."""
    pairs = [a[metric] / b[metric] for a, b in zip(runs.get("peapod", []), runs.get(peer, []))
             if metric in a and metric in b and b[metric] > 0]
    return statistics.median(pairs) if pairs else None


def median(results, key, system, metric):
    runs = results.get(key, {}).get(system, [])
    samples = [r[metric] for r in runs if metric in r]
    return stats(samples)["median"] if samples else None


def memory(results, key, system):
    for r in reversed(results.get(key, {}).get(system, [])):
        if "memory" in r:
            return r["memory"]
    return None


def mib(kib):
    return "%.2f" % (kib / 1024)


def memory_table(results):
    rows = []
    for key in ("start", "scale50"):
        pp, pm = memory(results, key, "peapod"), memory(results, key, "podman")
        if not pp:
            continue
        npods = pp["pods"]

        def per_pod(m, what):
            if not m:
                return "—"
            return mib((m["per_container"][what] + m["per_pod"][what]) / m["pods"])

        def per_ctr(m, what):
            c = m["per_container"] if m else None
            return mib(c[what] / c["count"]) if c and c["count"] else "—"

        for what, label in (("pss", "PSS"), ("rss", "RSS"), ("uss", "USS (private pages)")):
            rows.append("| %d pod%s: kept per pod, %s | %s | %s |" % (
                npods, "s" if npods > 1 else "", label, per_pod(pp, what), per_pod(pm, what)))
        rows.append("| %d pod%s: per monitor / per conmon, PSS | %s | %s |" % (
            npods, "s" if npods > 1 else "", per_ctr(pp, "pss"), per_ctr(pm, "pss")))
        rows.append("| %d pod%s: processes kept | %d monitors | %s |" % (
            npods, "s" if npods > 1 else "", pp["per_container"]["count"],
            "%d conmon + %d catatonit" % (pm["per_container"]["count"], pm["per_pod"]["count"])
            if pm else "—"))
        rows.append("| %d pod%s: `peapod run` itself (fixed cost), PSS / RSS | %s / %s | no daemon |" % (
            npods, "s" if npods > 1 else "", mib(pp["fixed"]["pss"]), mib(pp["fixed"]["rss"])))
    if not rows:
        return ""
    return "| MiB | peapod | podman |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def api_table(results):
    """peapod only: podman and crun have no API server, so no peer column and no ratio."""
    a = results.get("api")
    if not a:
        return ""
    n = a["pods"]
    rows = []

    def row(label, samples):
        if samples:
            rows.append("| %s | %s | %d |" % (label, cell(stats(samples)), len(samples)))

    row("`peapod serve` spawn → `GET /readyz` answers `ok`, new root (creates the certificates)",
        a["ready_new"])
    row("`peapod serve` spawn → `GET /readyz` answers `ok`, restart of an existing root",
        a["ready_restart"])
    row("`peapod serve` SIGINT → exit, no pods", a["stop"])
    row("`kubectl get pods`, 0 pods", a["get0"])
    row("`kubectl get pods`, %d running pods" % n, a["get50"])
    row("`kubectl version --client` (kubectl's own start-up, no request; floor of the two rows "
        "above)", a["floor"])
    if "apply_running" in a:
        rows.append("| `kubectl apply -f` of %d one-container pods → all Running (of which the "
                    "apply command) | **%s** (%s) | 1 |" % (n, ms(a["apply_running"] * 1000),
                                                          ms(a["apply"] * 1000)))
    if "delete_gone" in a:
        rows.append("| `kubectl delete pods --all --wait=false` → none listed | **%s** | 1 |"
                    % ms(a["delete_gone"] * 1000))
    head = ("| peapod only (no peer has an API server) | ms: **median** (min–max) | n |\n"
            "|---|---|---|\n")
    out = head + "\n".join(rows) + "\n"
    mem = []
    for key, label in (("memory0", "0 pods"), ("memory", "%d running pods" % n)):
        m = a.get(key)
        if not m:
            continue
        f = m["fixed"]
        mem.append("| `peapod serve` itself (fixed cost), %s | %s | %s | %s |" % (
            label, mib(f["pss"]), mib(f["rss"]), mib(f["uss"])))
        c = m["per_container"]
        if c["count"]:
            mem.append("| %d monitors (one per pod), per pod, %s | %s | %s | %s |" % (
                c["count"], label, mib(c["pss"] / m["pods"]), mib(c["rss"] / m["pods"]),
                mib(c["uss"] / m["pods"])))
    if mem:
        out += ("\n| MiB (peapod serve) | PSS | RSS | USS |\n|---|---|---|---|\n"
                + "\n".join(mem) + "\n")
    return out


def targets(results):
    out = []

    def row(name, value, ok):
        status = "—" if ok is None else ("met" if ok else "**missed**")
        out.append("| %s | %s | %s |" % (name, value, status))

    start = results.get("start", {})
    x = paired_ratio(start, "podman", "http")
    if x:
        pp, pm = (median(results, "start", s, "http") for s in ("peapod", "podman"))
        row("start to first GET ≥ 10× faster than podman kube play",
            "%.1f× faster (ratio of the medians: %.1f×)" % (1 / x, pm / pp), 1 / x >= 10)
    x = paired_ratio(start, "crun", "http")
    if x:
        row("start to first GET within 3× of the raw crun floor", "%.2f× the floor" % x, x <= 3)
    s50 = median(results, "scale50", "peapod", "running")
    if s50 is not None:
        row("50 pods all running in under 3 s", "%s ms" % ms(s50), s50 < 3000)
    for key in ("start", "scale50"):
        m = memory(results, key, "peapod")
        if m:
            per = (m["per_container"]["pss"] + m["per_pod"]["pss"]) / m["pods"]
            row("kept per pod ≤ 2 MiB PSS (%d pod%s)" % (m["pods"], "s" if m["pods"] > 1 else ""),
                "%s MiB" % mib(per), per <= 2048)
    td = median(results, "start", "peapod", "teardown")
    if td is not None:
        row("graceful teardown of a well-behaved pod under 100 ms", "%s ms" % ms(td), td < 100)
    ig = median(results, "ignore_term", "peapod", "teardown")
    if ig is not None:
        row("SIGTERM-ignoring pod honours terminationGracePeriodSeconds: 1",
            "%s ms" % ms(ig), 1000 <= ig < 1500)
    if not out:
        return ""
    return "| target (issue 3) | measured (median) | |\n|---|---|---|\n" + "\n".join(out) + "\n"


def render(results):
    env = results["env"]
    n1, ns = results["n_single"], results["n_scale"]
    parts = ["## Results\n",
             "- Date: %s; the run took %s s." % (env["date"], env.get("duration_s", "?")),
             "- Command: `%s`" % env["command"],
             "- Machine: %d cores, %d GiB, kernel %s; load average %s at the start, %s at the end."
             % (env["nproc"], env["memory_gib"], env["kernel"], env["loadavg_start"],
                env.get("loadavg_end", "?")),
             "- Cgroups: %s. Creating a cgroup in every v1 hierarchy and moving a process "
             "into it takes %s ms here (see \"The cgroup attach\" below)."
             % (", ".join("`%s`" % c for c in env["cgroups"]), env.get("cgroup_attach_ms", "?")),
             "- peapod: %s; %s with %s; %s. The harness and every system ran at nice %s."
             % (env["peapod"], env["podman"], env["podman_runtime"], env["crun"],
                env.get("nice", 0)),
             "- Times in ms: **median** (min–max). Runs alternate between systems (peapod, "
             "podman, crun, peapod, ...) after one discarded warm-up round; a ratio is the median "
             "over rounds of peapod's time over the peer's in the same round.",
             ""]
    if "error" in results:
        parts += ["**The run stopped early:** %s\n" % results["error"]]
    t = timing_rows(results, [
        ("command → all containers running", "start", "running"),
        ("command → first HTTP 200 from the echo port", "start", "http"),
    ])
    if t:
        parts += ["### 1. Two-container pod start (n=%d each)\n" % n1, t]
    t = timing_rows(results, [
        ("well-behaved pod (exits on SIGTERM)", "start", "teardown"),
        ("SIGTERM-ignoring pod, terminationGracePeriodSeconds: 1", "ignore_term", "teardown"),
    ])
    if t:
        parts += ["### 2. Graceful teardown (n=%d each)\n" % n1, t]
    t = timing_rows(results, [
        ("10 pods: command → all running", "scale10", "running"),
        ("10 pods: teardown of all", "scale10", "teardown"),
        ("50 pods: command → all running", "scale50", "running"),
        ("50 pods: teardown of all", "scale50", "teardown"),
    ])
    if t:
        parts += ["### 3. Scale: N two-container pods, no host ports (n=%d each)\n" % ns, t]
    t = memory_table(results)
    if t:
        parts += ["### 4. Memory kept beside the containers' own processes\n", t]
    t = api_table(results)
    if t:
        parts += ["### 5. Kubernetes API: `peapod serve` and kubectl (n=%d each)\n" % n1, t]
    t = targets(results)
    if t:
        parts += ["### Targets\n", t]
    return "\n".join(parts) + "\n"
