#!/usr/bin/env python3
"""numa_report.py: the report of the NUMA experiment (bench/numa-compare.sh).

  bench/numa_report.py RUNDIR --out FILE.md

RUNDIR holds what numa-compare.sh wrote: lab.json (machine, options,
commands), config_MODE.conf and plan_MODE.txt per mode, and per run NAME.json
(uring-bench), NAME.meta.json, NAME.threads_{pre,post}.tsv (per-thread
/proc facts before and after the measured part), NAME.numastat_{pre,post}.tsv
and NAME.numastat_p.txt. Writes FILE.md and, beside it,
day05_latency_percentiles.svg and day05_throughput.svg (hand-written SVG).

Every statement in the report is computed from those files. The decision
rule: with R_a and R_b runs, two modes differ in a metric only when their
ranges [min, max] do not overlap; for identically distributed runs that
happens by chance with probability 2 / C(R_a + R_b, R_a).

Standard library only.
"""
import argparse
import glob
import json
import math
import os
import re
import statistics
import sys
from xml.sax.saxutils import escape

MODE_ORDER = ["baseline", "numactl", "pinned"]
MODE_DESC = {
    "baseline": "pin = off, membind = off, no wrapper (OS scheduling, first-touch memory)",
    "numactl": "pin = off, membind = off, under numactl --cpunodebind/--membind and taskset",
    "pinned": "pin = on, membind = strict (the engine pins its threads and binds its memory)",
}
COLORS = {"baseline": "#d62728", "numactl": "#ff7f0e", "pinned": "#1f77b4"}
# metrics about the scheduler rather than performance
SCHED_KEYS = ("mig_compute", "nonvol_all")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- statistics and the decision rule --------------------------------------

def p_disjoint(ra, rb):
    """Chance that the ranges of ra and rb i.i.d. continuous runs do not overlap."""
    return 2.0 / math.comb(ra + rb, ra)


def ranges_overlap(a, b):
    return max(min(a), min(b)) <= min(max(a), max(b))


def verdict(a, b):
    """Compare per-run values b (a mode) against a (the baseline).

    Returns (differs, ratio): differs is True only when the ranges do not
    overlap; ratio is median(b) / median(a) (None when median(a) is 0)."""
    ma, mb = statistics.median(a), statistics.median(b)
    return (not ranges_overlap(a, b)), (mb / ma if ma else None)


def spread(vals, nd=1):
    """'median (min–max)' of the runs."""
    if not vals:
        return "–"
    f = "{:,.%df}" % nd
    m = f.format(statistics.median(vals))
    if len(vals) == 1:
        return m
    return "%s (%s–%s)" % (m, f.format(min(vals)), f.format(max(vals)))


def med(vals):
    return statistics.median(vals) if vals else None


# --- loading ----------------------------------------------------------------

def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    if not lines:
        return []
    head = lines[0]
    return [dict(zip(head, l)) for l in lines[1:]]


def to_int(s):
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def conf_value(path, section, key, default=None):
    sec = None
    if not os.path.exists(path):
        return default
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                sec = line.strip("[]")
            elif sec == section and re.match(r"%s\s*=" % re.escape(key), line):
                v = line.split("=", 1)[1]
                v = re.split(r"\s;", v)[0].strip()
                return v
    return default


def thread_roles(rows, pid, n_net):
    """tid -> role: from the engine's thread names (locus-net*, locus-disp*,
    locus-work*); for engines that do not name their threads (all 'engine'),
    from creation order: main thread, net threads, then per node the compute
    workers and last the dispatcher. io_uring's own workers are named iou-*."""
    tids = sorted(to_int(r["tid"]) for r in rows)
    comms = {to_int(r["tid"]): r["comm"] for r in rows}
    if any(c.startswith("locus-") for c in comms.values()):
        # engines that name their threads: locus-net<i>, locus-disp<node>, locus-work<i>
        named = {"locus-net": "net", "locus-disp": "dispatcher", "locus-work": "worker"}
        roles = {}
        for t in tids:
            c = comms[t]
            role = next((v for k, v in named.items() if c.startswith(k)), None)
            roles[t] = "main" if t == pid else "io_uring worker" if c.startswith("iou-") else role or "?"
        return roles
    roles = {}
    rest = []
    for t in tids:
        comm = comms[t]
        if t == pid:
            roles[t] = "main"
        elif comm.startswith("iou-"):
            roles[t] = "io_uring worker"
        else:
            rest.append(t)
    for i, t in enumerate(rest):
        if i < n_net:
            roles[t] = "net"
        elif i == len(rest) - 1:
            roles[t] = "dispatcher"
        else:
            roles[t] = "worker"
    return roles


def thread_facts(pre, post, pid, n_net):
    """Per thread of the post snapshot: role and the deltas over the measured run."""
    before = {to_int(r["tid"]): r for r in pre}
    roles = thread_roles(post, pid, n_net)
    out = []
    for r in post:
        tid = to_int(r["tid"])
        b = before.get(tid, {})

        def d(key):
            x, y = to_int(r.get(key)), to_int(b.get(key, "0"))
            return None if x is None or y is None else x - y

        out.append({
            "tid": tid, "role": roles.get(tid, "?"), "comm": r["comm"], "allowed": r["cpus_allowed"],
            "last_cpu": r["last_cpu"], "migrations": d("nr_migrations"),
            "vol": d("voluntary_ctxt_switches"), "nonvol": d("nonvoluntary_ctxt_switches"),
            "cpu_s": ((d("utime_ticks") or 0) + (d("stime_ticks") or 0)) / CLK_TCK,
            "migrations_total": to_int(r["nr_migrations"]),
        })
    return out


def numastat_delta(pre, post):
    """{counter: post - pre summed over nodes} and {node: {counter: delta}}."""
    b = {(r[0], r[1]): int(r[2]) for r in pre}
    total, per_node = {}, {}
    for node, key, val in post:
        dv = int(val) - b.get((node, key), int(val))
        total[key] = total.get(key, 0) + dv
        per_node.setdefault(node, {})[key] = dv
    return total, per_node


def read_procstat(path):
    """The 'cpu' line of /proc/stat: (busy ticks, steal ticks) or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        v = f.read().split()
    if not v or v[0] != "cpu":
        return None
    t = [int(x) for x in v[1:]] + [0] * 10
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return t[0] + t[1] + t[2] + t[5] + t[6], t[7]


def read_numastat_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.rstrip("\n").split("\t") for l in f if l.count("\t") == 2]


def numastat_p_nodes(path):
    """Per-node MB of the process from `numastat -p` (its Total row)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = f.read().splitlines()
    head = next((l for l in lines if "Node" in l and "Total" in l), None)
    tot = next((l for l in lines if l.startswith("Total")), None)
    if not head or not tot:
        return None
    nodes = re.findall(r"Node (\d+)", head)
    vals = tot.split()[1:]
    return {"node%s" % n: float(v) for n, v in zip(nodes, vals)}


def load_runs(rundir):
    runs = []
    for meta_path in sorted(glob.glob(os.path.join(rundir, "*.meta.json"))):
        with open(meta_path) as f:
            meta = json.load(f)
        base = meta_path[: -len(".meta.json")]
        if not os.path.exists(base + ".json"):
            continue
        with open(base + ".json") as f:
            js = json.load(f)
        mode = meta["mode"]
        n_net = to_int(conf_value(os.path.join(rundir, "config_%s.conf" % mode), "server", "net_threads", "1")) or 1
        pre = read_tsv(base + ".threads_pre.tsv")
        post = read_tsv(base + ".threads_post.tsv")
        pid = to_int(meta.get("pid")) or min((to_int(r["tid"]) for r in post), default=0)
        threads = thread_facts(pre, post, pid, n_net)
        ns_total, ns_nodes = numastat_delta(read_numastat_rows(base + ".numastat_pre.tsv"),
                                            read_numastat_rows(base + ".numastat_post.tsv"))
        lat = js.get("latency_ms", {})
        run = {
            "name": meta["name"], "mode": mode, "rep": meta.get("rep"), "index": meta.get("index"),
            "engine_exit": meta.get("engine_exit"), "js": js, "threads": threads,
            "numastat": ns_total, "numastat_nodes": ns_nodes,
            "numastat_p": numastat_p_nodes(base + ".numastat_p.txt"),
            "lat_avg": lat.get("avg"), "lat_p50": lat.get("p50"), "lat_p95": lat.get("p95"),
            "lat_p99": lat.get("p99"),
            "tok_s": js.get("throughput", {}).get("output_tokens_per_s"),
            "req_s": js.get("throughput", {}).get("req_per_s"),
            "ttft_p95": js.get("ttft_ms", {}).get("p95"), "itl_p95": js.get("itl_ms", {}).get("p95"),
            "ok": js.get("requests", {}).get("ok", 0), "errors": js.get("requests", {}).get("errors", 0),
            "wall_s": js.get("wall_s"),
            "client_cpu_s": (js.get("cpu", {}).get("user_s") or 0) + (js.get("cpu", {}).get("sys_s") or 0),
        }
        compute = [t for t in threads if t["role"] in ("dispatcher", "worker")]
        run["mig_compute"] = sum(t["migrations"] or 0 for t in compute)
        run["mig_all"] = sum(t["migrations"] or 0 for t in threads)
        run["vol_all"] = sum(t["vol"] or 0 for t in threads)
        run["nonvol_all"] = sum(t["nonvol"] or 0 for t in threads)
        run["engine_cpu_s"] = sum(t["cpu_s"] for t in threads)
        try:  # the window between the two thread snapshots (uring-bench's whole invocation)
            run["window_s"] = float(meta["bench_end"]) - float(meta["bench_start"])
        except (KeyError, TypeError, ValueError):
            run["window_s"] = None
        a_, b_ = read_procstat(base + ".procstat_pre.txt"), read_procstat(base + ".procstat_post.txt")
        run["other_cpus"] = run["steal_cpus"] = None
        if a_ and b_ and run["window_s"]:
            busy = (b_[0] - a_[0]) / CLK_TCK
            # what neither the engine nor uring-bench used: other processes, kernel threads, interrupts
            run["other_cpus"] = max(0.0, busy - run["engine_cpu_s"] - run["client_cpu_s"]) / run["window_s"]
            run["steal_cpus"] = (b_[1] - a_[1]) / CLK_TCK / run["window_s"]
        runs.append(run)
    return runs


def plan_text(rundir, mode):
    p = os.path.join(rundir, "plan_%s.txt" % mode)
    if not os.path.exists(p):
        return ""
    with open(p) as f:
        return f.read()


def modes_of(runs):
    present = {r["mode"] for r in runs}
    return [m for m in MODE_ORDER if m in present] + sorted(present - set(MODE_ORDER))


def vals(runs, mode, key):
    return [r[key] for r in runs if r["mode"] == mode and r.get(key) is not None]


def median_run(runs, mode):
    """The run whose p95 latency is the median of its mode (lower middle for even R)."""
    rs = sorted((r for r in runs if r["mode"] == mode and r.get("lat_p95") is not None), key=lambda r: r["lat_p95"])
    return rs[(len(rs) - 1) // 2] if rs else None


# --- SVG -------------------------------------------------------------------

def nice_ticks(hi, n=5):
    if hi <= 0:
        return [0, 1]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step)) + 1)]


def svg_doc(w, h, body, title):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="sans-serif" font-size="12">\n<title>%s</title>\n'
            '<rect width="100%%" height="100%%" fill="white"/>\n%s</svg>\n' % (w, h, w, h, escape(title), "".join(body)))


def fmt_tick(v):
    return ("%g" % v) if v < 10000 else "{:,.0f}".format(v)


def svg_percentiles(runs, modes, title):
    W, H, L, R, T, B = 760, 440, 70, 150, 40, 60
    pw, ph = W - L - R, H - T - B
    xs_p = [50, 75, 90, 95, 99, 99.9]
    xf = lambda p: -math.log10(1 - p / 100.0)
    x0, x1 = xf(50), xf(99.9)
    series = {}
    for m in modes:
        r = median_run(runs, m)
        pts = [] if r is None else r["js"].get("spectrum", {}).get("latency_ms", [])
        pts = sorted((float(p), float(v)) for p, v in pts if 50 <= float(p) <= 99.9)
        if pts:
            series[m] = (r["name"], pts)
    ymax = max((v for _, pts in series.values() for _, v in pts), default=1.0) * 1.08
    yt = nice_ticks(ymax)
    ymax = yt[-1]
    X = lambda p: L + (xf(p) - x0) / (x1 - x0) * pw
    Y = lambda v: T + ph - v / ymax * ph
    b = ['<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>\n' % (L, escape(title))]
    for v in yt:
        b.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>\n' % (L, L + pw, Y(v), Y(v)))
        b.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>\n' % (L - 6, Y(v) + 4, fmt_tick(v)))
    for p in xs_p:
        b.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>\n' % (X(p), X(p), T, T + ph))
        b.append('<text x="%.1f" y="%d" text-anchor="middle">p%g</text>\n' % (X(p), T + ph + 18, p))
    b.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>\n' % (L, T, pw, ph))
    b.append('<text x="%d" y="%d" text-anchor="middle">percentile (log scale of 1/(1-p))</text>\n' % (L + pw / 2, H - 18))
    b.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">request latency (ms)</text>\n'
             % (T + ph / 2, T + ph / 2))
    for i, m in enumerate(modes):
        if m not in series:
            continue
        name, pts = series[m]
        c = COLORS.get(m, "#2ca02c")
        b.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>\n'
                 % (c, " ".join("%.1f,%.1f" % (X(p), Y(v)) for p, v in pts)))
        for p, v in pts:
            b.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s p%g: %.1f ms</title></circle>\n'
                     % (X(p), Y(v), c, escape(name), p, v))
        ly = T + 14 + i * 20
        b.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"/>\n' % (L + pw + 12, L + pw + 32, ly, ly, c))
        b.append('<text x="%d" y="%d">%s</text>\n' % (L + pw + 38, ly + 4, escape(m)))
    if not series:
        b.append('<text x="%d" y="%d">no spectrum in the runs</text>\n' % (L + 20, T + 30))
    return svg_doc(W, H, b, title)


def svg_throughput(runs, modes, title):
    W, H, L, R, T, B = 560, 400, 80, 20, 40, 50
    pw, ph = W - L - R, H - T - B
    allv = [v for m in modes for v in vals(runs, m, "tok_s")]
    yt = nice_ticks(max(allv, default=1.0) * 1.12)
    ymax = yt[-1]
    Y = lambda v: T + ph - v / ymax * ph
    slot = pw / max(len(modes), 1)
    b = ['<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>\n' % (L, escape(title))]
    for v in yt:
        b.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>\n' % (L, L + pw, Y(v), Y(v)))
        b.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>\n' % (L - 6, Y(v) + 4, fmt_tick(v)))
    b.append('<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">output tokens/s</text>\n'
             % (T + ph / 2, T + ph / 2))
    for i, m in enumerate(modes):
        vs = vals(runs, m, "tok_s")
        cx = L + slot * (i + 0.5)
        c = COLORS.get(m, "#2ca02c")
        if vs:
            md = statistics.median(vs)
            b.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.35" stroke="%s">'
                     '<title>%s median %.1f tok/s</title></rect>\n'
                     % (cx - slot * 0.3, Y(md), slot * 0.6, T + ph - Y(md), c, c, escape(m), md))
            b.append('<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%.0f</text>\n' % (cx, T + ph - 8, md))
            for j, v in enumerate(vs):
                dx = (j - (len(vs) - 1) / 2.0) * 8
                b.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s" stroke="black" stroke-width="0.5">'
                         '<title>%s run %d: %.1f tok/s</title></circle>\n' % (cx + dx, Y(v), c, escape(m), j + 1, v))
        b.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>\n' % (cx, T + ph + 18, escape(m)))
    b.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>\n' % (L, L + pw, T + ph, T + ph))
    b.append('<text x="%d" y="%d" fill="#555">bar: median; dots: each run</text>\n' % (L, H - 10))
    return svg_doc(W, H, b, title)


# --- GPU -------------------------------------------------------------------

def dmon_summary(paths):
    """Average sm% and mem% over the samples of nvidia-smi dmon logs (None if none)."""
    sm, mem, cols = [], [], None
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.startswith("#"):
                    h = line.lstrip("#").split()
                    if "sm" in h:
                        cols = h
                    continue
                if not cols:
                    continue
                v = line.split()
                # -o TD puts date and time first; the header names them too
                if len(v) != len(cols):
                    continue
                for key, acc in (("sm", sm), ("mem", mem)):
                    try:
                        acc.append(float(v[cols.index(key)]))
                    except ValueError:
                        pass
    if not sm:
        return None
    return {"sm": statistics.mean(sm), "mem": statistics.mean(mem) if mem else None, "samples": len(sm)}


# --- the report --------------------------------------------------------------

def ratio_text(r):
    return "–" if r is None else "%.2fx" % r


def compare_lines(runs, base, m, metrics):
    """One bullet per metric: ratio, verdict and the ranges behind it."""
    out = []
    diffs = []
    for key, label, unit, better in metrics:
        a, b = vals(runs, base, key), vals(runs, m, key)
        if not a or not b:
            continue
        differs, ratio = verdict(a, b)
        if all(float(v).is_integer() for v in a + b):  # counts: whole numbers, a median may end in .5
            nd = 0 if all(float(statistics.median(x)).is_integer() for x in (a, b)) else 1
        else:
            nd = 2 if max(a + b) < 100 else 1
        f = lambda v: "%.*f" % (nd, v)
        rng = "%s: %s–%s, %s: %s–%s %s" % (base, f(min(a)), f(max(a)), m, f(min(b)), f(max(b)), unit)
        if differs:
            up = statistics.median(b) > statistics.median(a)
            good = up == (better == "higher")
            word = "higher" if up else "lower"
            chance = p_disjoint(len(a), len(b))
            out.append("- %s: %s %s (%s of %s, median %s vs %s %s) — a difference by the rule: the ranges do not "
                       "overlap (%s); %s. Chance of this from noise alone: %.1f%%%s." % (
                           label, m, word, ratio_text(ratio), base, f(statistics.median(b)),
                           f(statistics.median(a)), unit, rng, "better" if good else "worse", 100 * chance,
                           " (weak evidence: more runs, -R, would settle it)" if chance > 0.05 else ""))
            diffs.append((key, label, word, ratio, good))
        else:
            out.append("- %s: %s of %s (median %s vs %s %s) — no difference beyond run-to-run noise "
                       "(ranges overlap: %s)." % (label, ratio_text(ratio), base, f(statistics.median(b)),
                                                  f(statistics.median(a)), unit, rng))
    return out, diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rundir")
    ap.add_argument("--out", required=True, help="the Markdown report to write")
    a = ap.parse_args()
    rundir = os.path.abspath(a.rundir)
    with open(os.path.join(rundir, "lab.json")) as f:
        lab = json.load(f)
    runs = load_runs(rundir)
    if not runs:
        sys.exit("numa_report: no runs in %s" % rundir)
    modes = modes_of(runs)
    outdir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(outdir, exist_ok=True)
    rel_runs = os.path.relpath(rundir, outdir)
    svg_lat, svg_tp = "day05_latency_percentiles.svg", "day05_throughput.svg"
    conc = lab.get("c")
    R = {m: len(vals(runs, m, "tok_s")) for m in modes}
    stream = bool(lab.get("stream"))

    with open(os.path.join(outdir, svg_lat), "w") as f:
        f.write(svg_percentiles(runs, modes, "Request latency percentiles (median run per mode), c=%s" % conc))
    with open(os.path.join(outdir, svg_tp), "w") as f:
        f.write(svg_throughput(runs, modes, "Output tokens/s per mode, c=%s" % conc))

    L = []
    w = L.append
    w("# NUMA baseline vs pinned: the engine under placement modes (day 05)\n")
    w("Generated by `bench/numa_report.py` from the raw runs in [`%s/`](%s/) (`bench/numa-compare.sh`). "
      "Date %s, commit `%s`%s.\n" % (rel_runs, rel_runs, lab.get("date"), lab.get("commit"),
                                    " (with uncommitted changes)" if lab.get("dirty") == "yes" else ""))

    # machine
    nodes = [n for n in str(lab.get("numa_nodes", "")).split(",") if n]
    w("## Machine\n")
    w("| | |\n|---|---|")
    w("| CPU | %s |" % lab.get("cpu_model"))
    w("| kernel | %s |" % lab.get("kernel"))
    w("| CPUs online | %s (%s) |" % (lab.get("ncpu"), lab.get("online_cpus")))
    w("| NUMA nodes | %d (%s); served node %s: CPUs %s |" % (len(nodes), ", ".join(nodes), lab.get("node"),
                                                         lab.get("node_cpus")))
    node_mem = [kv.split(":") for kv in str(lab.get("node_mem_kib", "")).split(",") if ":" in kv]
    w("| memory | %.1f GiB (MemTotal)%s |" % (lab.get("mem_total_kib", 0) / 1048576.0, "".join(
        "; %s %.1f GiB (its meminfo)" % (n, int(k) / 1048576.0) for n, k in node_mem)))
    w("| GPU | %s |" % ("NVIDIA (nvidia-smi present)" if lab.get("gpu") else "none (no nvidia-smi / no NVIDIA device)"))
    w("")
    summary = os.path.join(os.path.dirname(rundir), "summary.md")
    if lab.get("topo_capture") == "ran" and os.path.exists(summary):
        w("Topology capture (`topo-capture --out`, its `summary.md`):\n")
        with open(summary) as f:
            text = f.read().strip()
        # demote its headings below this section's
        w("\n".join(("##" + l) if l.startswith("#") else l for l in text.splitlines()))
        w("")
    elif lab.get("topo_capture") == "failed":
        w("`topo-capture` ran but failed (see `%s/topo-capture.log`); no topology capture.\n" % rel_runs)
    else:
        w("`build/bin/topo-capture` was not built when this ran: no topology capture beyond the lines above "
          "and the plans below.\n")

    # commands
    w("## What ran\n")
    w("%d runs per mode, interleaved (%s, repeated), each on a freshly started engine: `-n %s -c %s`, "
      "`--max-tokens %s` with EOS ignored (every request generates exactly that many tokens), %s, "
      "backend `%s`, competing load: %s.\n" % (
          lab.get("R"), " ".join(modes), lab.get("n"), conc, lab.get("max_tokens"),
          "streamed (TTFT and inter-token latency measured)" if stream else "whole responses",
          lab.get("backend"),
          "none" if lab.get("noise") == "none" else "`%s` via %s" % (lab.get("noise"), lab.get("noise_tool"))))
    w("```sh\n%s\n```\n" % lab.get("script_cmd"))
    w("Per mode, the engine (config derived from `configs/node0.conf`; the overridden lines are marked "
      "`; numa-compare`; PORT a free loopback port):\n")
    for m in modes:
        w("- **%s** — %s\n  ```sh\n  %s\n  ```" % (m, MODE_DESC.get(m, ""), lab.get("cmd_" + m, "?")))
        conf = os.path.join(rundir, "config_%s.conf" % m)
        if os.path.exists(conf):
            with open(conf) as f:
                over = [l.split(";")[0].strip() for l in f if "; numa-compare" in l]
            w("  overrides: `%s`; plan (`engine --check-config`, [`plan_%s.txt`](%s/plan_%s.txt)):" % (
                "`, `".join(over), m, rel_runs, m))
        plan = plan_text(rundir, m).strip()
        if plan:
            w("  ```\n" + "\n".join("  " + l for l in plan.splitlines()) + "\n  ```")
    w("\nThe load, per run (after one warm-up request):\n")
    w("```sh\n%s\n```\n" % lab.get("bench_cmd"))

    # the table
    w("## Results\n")
    w("Median over the %s runs of each mode, (min–max) across runs. Latency is whole-request latency; "
      "Throughput is output tokens/s and requests/s. Migrations and context switches are per-thread `/proc` "
      "deltas across uring-bench's invocation; \"compute\" is the dispatcher and its "
      "workers.\n" % ("/".join(str(R[m]) for m in modes) if len(set(R.values())) > 1 else R[modes[0]]))
    w("| Mode | Concurrency | Avg Latency (ms) | p95 Latency (ms) | Throughput | Notes |")
    w("|---|---:|---:|---:|---|---|")
    for m in modes:
        notes = []
        if stream and vals(runs, m, "ttft_p95"):
            notes.append("TTFT p95 %s ms, ITL p95 %s ms" % (spread(vals(runs, m, "ttft_p95")),
                                                             spread(vals(runs, m, "itl_p95"), 2)))
        notes.append("migrations: compute %s, all threads %s" % (spread(vals(runs, m, "mig_compute"), 0),
                                                                  spread(vals(runs, m, "mig_all"), 0)))
        notes.append("ctx switches: %s voluntary, %s involuntary" % (spread(vals(runs, m, "vol_all"), 0),
                                                                     spread(vals(runs, m, "nonvol_all"), 0)))
        errs = sum(vals(runs, m, "errors"))
        if errs:
            notes.append("**%d failed requests**" % errs)
        w("| %s | %s | %s | %s | %s tok/s; %s req/s | %s |" % (
            m, conc, spread(vals(runs, m, "lat_avg")), spread(vals(runs, m, "lat_p95")),
            spread(vals(runs, m, "tok_s")), spread(vals(runs, m, "req_s"), 2), "; ".join(notes)))
    w("")
    w("![latency percentiles](%s)\n" % svg_lat)
    w("![throughput](%s)\n" % svg_tp)
    w("Plots: [%s](%s) (p50..p99.9 of the median run of each mode, from uring-bench's spectrum), "
      "[%s](%s) (each run a dot, the median a bar).\n" % (svg_lat, svg_lat, svg_tp, svg_tp))

    # observations
    w("## Observations\n")
    base = "baseline" if "baseline" in modes else modes[0]
    metrics = [("lat_avg", "avg latency", "ms", "lower"), ("lat_p95", "p95 latency", "ms", "lower"),
               ("tok_s", "throughput", "tok/s", "higher")]
    if stream:
        metrics += [("ttft_p95", "TTFT p95", "ms", "lower"), ("itl_p95", "ITL p95", "ms", "lower")]
    metrics += [("mig_compute", "compute-thread migrations", "per run", "lower"),
                ("nonvol_all", "involuntary context switches", "per run", "lower")]
    rs = sorted(set(R.values()))
    w("Decision rule: with R runs per mode, a difference is called only when the two modes' ranges "
      "[min, max] do not overlap. For two modes whose runs come from the same distribution, that happens "
      "by chance with probability 2 / C(R_a + R_b, R_a): here %s. Otherwise: no difference beyond "
      "run-to-run noise. Ratios are median(mode) / median(%s).\n" % (
          ", ".join("R = %d per mode: 2/C(%d,%d) = %.1f%%" % (r, 2 * r, r, 100 * p_disjoint(r, r)) for r in rs),
          base))
    all_diffs = {}
    for m in modes:
        if m == base:
            continue
        lines, diffs = compare_lines(runs, base, m, metrics)
        all_diffs[m] = diffs
        w("**%s vs %s**\n" % (m, base))
        w("\n".join(lines))
        w("")
    bad = [r for r in runs if r["errors"] or r["engine_exit"] not in (0, None)]
    if bad:
        w("Runs with failed requests or a non-zero engine exit: %s.\n" % ", ".join(
            "%s (%d errors, exit %s)" % (r["name"], r["errors"], r["engine_exit"]) for r in bad))
    else:
        w("Every request of every run succeeded (%d), and every engine exited 0 on SIGTERM.\n"
          % sum(r["ok"] for r in runs))

    oth = [r["other_cpus"] for r in runs if r.get("other_cpus") is not None]
    if oth:
        st = [r["steal_cpus"] for r in runs if r.get("steal_cpus") is not None]
        noisy = lab.get("noise") not in (None, "none")
        busy_runs = [] if noisy else [r["name"] for r in runs if (r.get("other_cpus") or 0) > 0.2]
        w("Other load on the machine (from `/proc/stat` around each run: CPU time used by neither the engine nor "
          "uring-bench, per second): median %.2f CPUs (%.2f–%.2f), hypervisor steal %.2f CPUs (%.2f–%.2f). %s\n" % (
              statistics.median(oth), min(oth), max(oth), statistics.median(st) if st else 0,
              min(st) if st else 0, max(st) if st else 0,
              ("This includes the competing load asked for (`--noise %s`)." % lab.get("noise")) if noisy else
              ("Runs with more than 0.2 CPUs of other load, whose figures are disturbed by it: %s." % ", ".join(busy_runs))
              if busy_runs else "No run had more than 0.2 CPUs of other load."))

    # threads
    w("### Threads: migrations and context switches\n")
    w("Per thread, from the snapshots taken just before and just after uring-bench (its 4 warm-up requests "
      "included), median (min–max) over runs. Roles come from the engine's thread names (`locus-net*`, "
      "`locus-disp*`, `locus-work*`; the main thread keeps `engine`). "
      "Allowed CPUs and last CPU are from the last run.\n")
    w("| Mode | Thread | Allowed CPUs | Last CPU | Migrations | Voluntary ctx sw | Involuntary ctx sw | CPU s |")
    w("|---|---|---|---|---:|---:|---:|---:|")
    role_order = ["main", "net", "dispatcher", "worker", "io_uring worker", "?"]
    for m in modes:
        mr = [r for r in runs if r["mode"] == m]
        keys = []
        for r in mr:
            cnt = {}
            for t in r["threads"]:
                cnt[t["role"]] = cnt.get(t["role"], 0) + 1
                k = (t["role"], cnt[t["role"]])
                if k not in keys:
                    keys.append(k)
        keys.sort(key=lambda k: (role_order.index(k[0]) if k[0] in role_order else 99, k[1]))
        for role, i in keys:
            per = []
            for r in mr:
                ts = [t for t in r["threads"] if t["role"] == role]
                if len(ts) >= i:
                    per.append(ts[i - 1])
            if not per:
                continue
            label = role + ("" if sum(1 for k in keys if k[0] == role) == 1 else " %d" % i)
            w("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                m, label, per[-1]["allowed"], per[-1]["last_cpu"],
                spread([t["migrations"] for t in per if t["migrations"] is not None], 0),
                spread([t["vol"] for t in per if t["vol"] is not None], 0),
                spread([t["nonvol"] for t in per if t["nonvol"] is not None], 0),
                spread([t["cpu_s"] for t in per], 2)))
    w("")
    mig_lines = []
    for m in modes:
        mc = vals(runs, m, "mig_compute")
        pinned_threads = [t for r in runs if r["mode"] == m for t in r["threads"]
                          if t["role"] in ("dispatcher", "worker") and re.fullmatch(r"\d+", t["allowed"] or "")]
        compute_threads = [t for r in runs if r["mode"] == m for t in r["threads"] if t["role"] in ("dispatcher", "worker")]
        pin_note = ("each confined to one CPU" if compute_threads and len(pinned_threads) == len(compute_threads)
                    else "allowed on %s" % ", ".join(sorted({t["allowed"] for t in compute_threads})) if compute_threads
                    else "none found")
        mig_lines.append("- %s: compute threads (%s) migrated %s times per run (median, (min–max) over %d runs); "
                         "all threads %s; involuntary context switches, all threads, %s per run." % (
                             m, pin_note, spread(mc, 0), len(mc), spread(vals(runs, m, "mig_all"), 0),
                             spread(vals(runs, m, "nonvol_all"), 0)))
    w("\n".join(mig_lines))
    w("")

    # numastat
    w("### Memory locality (numastat)\n")
    w("Deltas of `/sys/devices/system/node/node*/numastat` around each measured run, summed over the nodes. "
      "These counters are system-wide (every process's page allocations, the load generator's included), "
      "so they bound what the engine did rather than isolate it. Median (min–max) over runs.\n")
    keys = ["numa_hit", "numa_miss", "local_node", "other_node"]
    w("| Mode | " + " | ".join(keys) + " | local share | engine memory by node (`numastat -p`, MB, last run) |")
    w("|---|" + "---:|" * len(keys) + "---:|---|")
    for m in modes:
        mr = [r for r in runs if r["mode"] == m]
        cells = [spread([r["numastat"].get(k, 0) for r in mr], 0) for k in keys]
        loc = [r["numastat"].get("local_node", 0) for r in mr]
        oth = [r["numastat"].get("other_node", 0) for r in mr]
        share = sum(loc) / float(sum(loc) + sum(oth)) if sum(loc) + sum(oth) else None
        npn = next((r["numastat_p"] for r in reversed(mr) if r["numastat_p"]), None)
        w("| %s | %s | %s | %s |" % (m, " | ".join(cells), "–" if share is None else "%.1f%%" % (100 * share),
                                     ", ".join("%s %.1f" % kv for kv in sorted(npn.items())) if npn else "–"))
    w("")
    remote = sum(r["numastat"].get("other_node", 0) + r["numastat"].get("numa_miss", 0) for r in runs)

    # GPU
    w("### GPU\n")
    dmon_paths = sorted(glob.glob(os.path.join(os.path.dirname(rundir), "nvidia_dmon_*_day05.log")))
    gpu_lines = []
    if lab.get("gpu") and dmon_paths:
        for p in dmon_paths:
            m = os.path.basename(p)[len("nvidia_dmon_"):-len("_day05.log")]
            s = dmon_summary([p])
            if s:
                gpu_lines.append("- %s: SM utilisation %.1f%% and memory utilisation %s averaged over %d samples "
                                 "([%s](%s))." % (m, s["sm"], "%.1f%%" % s["mem"] if s["mem"] is not None else "?",
                                                   s["samples"], os.path.basename(p), os.path.basename(p)))
            else:
                gpu_lines.append("- %s: dmon log [%s](%s) holds no samples." % (m, os.path.basename(p), os.path.basename(p)))
        w("\n".join(gpu_lines) + "\n")
    else:
        w("No GPU on this machine (no `nvidia-smi`, or it lists no device): no `nvidia-smi dmon` logs; the runs "
          "used the `%s` backend.\n" % lab.get("backend"))

    # what we learned
    w("## What we learned\n")
    learned = []
    if lab.get("gpu"):
        learned.append("**GPU.** A GPU was present; the engine ran the `%s` backend%s." % (
            lab.get("backend"), " and the dmon logs above show its utilisation" if gpu_lines else ""))
    else:
        learned.append("**GPU.** None on this machine, so nothing here says anything about GPU utilisation or "
                       "GPU-to-NUMA-node locality; every token was computed on the CPU (`%s` backend)."
                       % lab.get("backend"))
    if len(nodes) <= 1:
        learned.append("**NUMA node.** One NUMA node: every page is local by construction. The numastat deltas "
                       "show %s remote allocations (numa_miss + other_node) over all %d runs, so `membind = "
                       "strict` and `numactl --membind` had nothing to change here; whatever differs between "
                       "modes comes from CPU placement, not memory placement. The experiment only becomes a test "
                       "of memory locality on a machine with two or more nodes." % ("{:,}".format(remote), len(runs)))
    else:
        learned.append("**NUMA nodes.** %d nodes; remote allocations (numa_miss + other_node, system-wide) "
                       "over all runs: %s. See the locality table per mode." % (len(nodes), "{:,}".format(remote)))
    ncpu = lab.get("ncpu")
    shared = [m for m in modes if "shares CPU" in plan_text(rundir, m)]
    cores = ["**Cores.** %s CPUs (%s) carry everything: the engine's net thread, dispatcher and compute workers%s, "
             "and the load generator itself." % (
                 ncpu, lab.get("online_cpus"),
                 " (the plans say the net thread shares a CPU with compute: %s)" % ", ".join(shared) if shared else "")]
    cl = [r["client_cpu_s"] / r["window_s"] for r in runs if r.get("window_s")]
    en = [r["engine_cpu_s"] / r["window_s"] for r in runs if r.get("window_s")]
    if cl and en:
        cores.append("While uring-bench ran, the engine used %.2f CPUs and uring-bench itself %.2f (medians over all "
                     "runs, CPU time / elapsed time), of the %s there are." % (
                         statistics.median(en), statistics.median(cl), ncpu))
    if "pinned" in modes and base in modes and base != "pinned":
        mb, mp = vals(runs, base, "mig_compute"), vals(runs, "pinned", "mig_compute")
        if mb and mp:
            cores.append("Compute-thread migrations per run: %s %g (%g–%g), pinned %g (%g–%g)%s." % (
                base, med(mb), min(mb), max(mb), med(mp), min(mp), max(mp),
                ": pinned threads never moved" if max(mp) == 0 else ""))
    if "numactl" in modes:
        mn = vals(runs, "numactl", "mig_compute")
        if mn and lab.get("node_cpus") == lab.get("online_cpus"):
            cores.append("numactl/taskset confined the process to node %s's CPUs %s, which on this machine are all "
                         "of them, so the confinement excluded no CPU: its compute threads still migrated %g times "
                         "per run (median)." % (lab.get("node"), lab.get("node_cpus"), med(mn)))
    for m, diffs in all_diffs.items():
        d = [x for x in diffs if x[0] in SCHED_KEYS]
        if d:
            cores.append("By the decision rule, %s differs from %s in %s." % (m, base, " and ".join(
                "%s (%s, %s)" % (lab_, word, ratio_text(ratio)) for _, lab_, word, ratio, _ in d)))
    learned.append(" ".join(cores))
    perf = []
    perf_labels = ", ".join(lab_ for key, lab_, _, _ in metrics if key not in SCHED_KEYS)
    for m, diffs in all_diffs.items():
        d = [x for x in diffs if x[0] not in SCHED_KEYS]
        if not d:
            perf.append("%s performed like %s (%s) within run-to-run noise%s" % (
                m, base, perf_labels, "; its fewer migrations and context switches did not show in latency or "
                "throughput at this load" if any(x[0] in SCHED_KEYS for x in diffs) else ""))
        else:
            perf.append("%s differed from %s in %s" % (m, base, ", ".join(
                "%s (%s, %s, %s)" % (lab_, word, ratio_text(ratio), "better" if good else "worse")
                for _, lab_, word, ratio, good in d)))
    disturbed = [] if lab.get("noise") not in (None, "none") else [
        r["name"] for r in runs if (r.get("other_cpus") or 0) > 0.2]
    if disturbed:
        perf.append("the comparisons include %d run(s) disturbed by other load on the machine (%s), which widen "
                    "the ranges" % (len(disturbed), ", ".join(disturbed)))
    if perf:
        r0 = min(R.values())
        learned.append("**Performance.** " + "; ".join(perf) + " (decision rule above, %d runs per mode: a "
                       "non-overlap happens by chance %.1f%% of the time)." % (r0, 100 * p_disjoint(r0, r0)))
    if lab.get("noise") != "none":
        learned.append("These runs had competing `%s` load (%s) for their whole measured part." % (
            lab.get("noise"), lab.get("noise_tool")))
    w("\n\n".join(learned) + "\n")

    # per run
    w("## Every run\n")
    w("| # | Run | Mode | Avg ms | p95 ms | p99 ms | tok/s | req/s | TTFT p95 ms | ITL p95 ms | ok | errors | "
      "compute migrations | other load (CPUs) | engine exit |")
    w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    f1 = lambda v: "–" if v is None else "%.1f" % v
    for r in sorted(runs, key=lambda r: r["index"] or 0):
        w("| %s | [%s](%s/%s.json) | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s |" % (
            r["index"], r["name"], rel_runs, r["name"], r["mode"], f1(r["lat_avg"]), f1(r["lat_p95"]), f1(r["lat_p99"]),
            f1(r["tok_s"]), "–" if r["req_s"] is None else "%.2f" % r["req_s"], f1(r["ttft_p95"]),
            "–" if r["itl_p95"] is None else "%.2f" % r["itl_p95"], r["ok"], r["errors"], r["mig_compute"],
            "–" if r["other_cpus"] is None else "%.2f" % r["other_cpus"], r["engine_exit"]))
    w("")
    with open(a.out, "w") as f:
        f.write("\n".join(L))
    print("numa_report: wrote %s, %s, %s" % (a.out, os.path.join(outdir, svg_lat), os.path.join(outdir, svg_tp)))


if __name__ == "__main__":
    main()
