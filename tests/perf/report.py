#!/usr/bin/env python3
# Turns tests/perf/run's raw measurements into results.md (medians, ratios, goals) and a plot.
#
#   report.py raw.tsv results.md results.png date machine [README.md]
#
# With a README, the block between its results markers becomes a copy of results.md (the readme
# test checks that they agree).
#
# raw.tsv lines: benchmark, server, round, then "key=value key=value ..." (wrk's rps, or the
# load generator's own line).
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict

raw_path, md_path, png_path, date, machine = sys.argv[1:6]
readme_path = sys.argv[6] if len(sys.argv) > 6 else None
BEGIN = "<!-- tests/perf/run writes what follows, up to the end marker: a copy of tests/perf/results.md -->\n"
END = "\n<!-- end of tests/perf/run's results -->"

runs = defaultdict(list)  # (benchmark, server) -> [ {key: value} ]
for line in open(raw_path):
    bench, server, _round, fields = line.rstrip("\n").split("\t", 3)
    values = {}
    for pair in fields.split():
        key, _, value = pair.partition("=")
        try:
            values[key] = float(value)
        except ValueError:
            values[key] = value
    runs[(bench, server)].append(values)


def median(bench, server, key):
    vs = [r[key] for r in runs.get((bench, server), []) if isinstance(r.get(key), float)]
    return statistics.median(vs) if vs else None


def rounds(bench, server):
    return len(runs.get((bench, server), []))


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def goal(ok, text):
    return ("met: " if ok else "**missed**: ") + text


out = []
out.append(f"Measured on {date}, {machine}, by `tests/perf/run` (medians of "
           f"{rounds('hello_50', 'plinth')} rounds, of {rounds('latency', 'plinth')} runs for resume latency; servers alternate within each round, pinned to CPU 0, "
           f"load generators to CPU 1). The machine is shared: compare ratios, not absolute figures.")
out.append("")

servers = ["plinth", "nginx", "restinio", "beast"]
names = {"plinth": "plinth", "nginx": "nginx (1 worker)", "restinio": "RESTinio", "beast": "minimal Beast",
         "base": "plinth before (A/B)"}
ab = rounds("hello_50", "base") > 0  # PLINTH_PERF_BASE was given
scenarios = [("hello_50", "GET /hello, 50 connections"), ("hello_1000", "GET /hello, 1,000 connections"),
             ("pipelined_16", "GET /hello, 50 connections, pipelined depth 16")]
out.append("### Throughput (requests/s; one server thread, wrk with one thread)")
out.append("")
shown = servers + (["base"] if ab else [])
peers = ["nginx", "restinio", "beast"] + (["base"] if ab else [])
out.append("| | " + " | ".join(names[s] for s in shown) + " | plinth / nginx | plinth / RESTinio | plinth / Beast |"
           + (" plinth / before |" if ab else ""))
out.append("|---|" + "---:|" * (len(shown) + len(peers)))
ratios = {}
for bench, title in scenarios:
    m = {s: median(bench, s, "rps") for s in shown}
    row = [fmt(m[s]) for s in shown]
    for peer in peers:
        r = m["plinth"] / m[peer] if m["plinth"] and m[peer] else None
        ratios[(bench, peer)] = r
        row.append(fmt(r, 2) + "x" if r else "n/a")
    out.append(f"| {title} | " + " | ".join(row) + " |")
out.append("")

out.append("### Suspended requests (plinth, one server thread)")
out.append("")
out.append("| | figure | goal |")
out.append("|---|---:|---|")
for n in (1000, 10000, 19000):
    b = f"capacity_{n}"
    per = median(b, "plinth", "bytes_per_request")
    answered = median(b, "plinth", "answered")
    text = f"{fmt(per)} B ({fmt(per / 1024 if per else None, 2)} KiB) per request, {fmt(answered)} of {n:,} answered"
    g = goal(per is not None and per <= 1.5 * 1024 and answered == n, "<= 1.5 KiB at 19,000") if n == 19000 else ""
    out.append(f"| server RSS held for {n:,} suspended requests | {text} | {g} |")
b_per = median("capacity_19000", "beast", "bytes_per_request")
b_answered = median("capacity_19000", "beast", "answered")
p_per = median("capacity_19000", "plinth", "bytes_per_request")
b_ratio = f" (plinth {fmt(p_per / b_per, 2)}x)" if p_per and b_per else ""
out.append(f"| the same, 19,000 held by the minimal Beast server (a coroutine waiting on a timer per request) "
           f"| {fmt(b_per)} B ({fmt(b_per / 1024 if b_per else None, 2)} KiB) per request{b_ratio}, "
           f"{fmt(b_answered)} of 19,000 answered | |")
p50, p99, p999 = (median("latency", "plinth", k) for k in ("p50_us", "p99_us", "p999_us"))
out.append(f"| resume latency, 10,000 suspended resumed 10,000/s by a worker thread (resume call to last byte) "
           f"| p50 {fmt(p50, 1)} µs, p99 {fmt(p99, 1)} µs, p99.9 {fmt(p999, 1)} µs "
           f"| {goal(p99 is not None and p99 <= 100, 'p99 <= 100 µs')} |")
bp50, bp99, bp999 = (median("latency", "beast", k) for k in ("p50_us", "p99_us", "p999_us"))
out.append(f"| the same, minimal Beast server (its worker cancels the waiting coroutine's timer on the strand) "
           f"| p50 {fmt(bp50, 1)} µs, p99 {fmt(bp99, 1)} µs, p99.9 {fmt(bp999, 1)} µs | |")
for cpu, title in (("server_cpu", "the server's CPU"), ("load_cpu", "the load generator's CPU")):
    st = {k: median("stalls", cpu, k) for k in ("stalls_per_s", "over_100us_per_s", "stalled_ms_per_s", "max_us")}
    out.append(f"| this machine's stalls of {title}: gaps over 20 µs in a thread spinning on it for 2 s "
               f"(both CPUs at once) | {fmt(st['stalls_per_s'])} per s, {fmt(st['over_100us_per_s'], 1)} per s "
               f"over 100 µs, {fmt(st['stalled_ms_per_s'], 1)} ms per s stalled, longest {fmt(st['max_us'])} µs | |")
spread = median("timeouts", "plinth", "spread_ms")
late50 = median("timeouts", "plinth", "p50_ms")
out.append(f"| timeout precision, 10,000 suspended with a 1 s timeout: spread of the 503s' lateness (sent 10,000/s) "
           f"| {fmt(spread, 2)} ms (median lateness {fmt(late50, 2)} ms) "
           f"| {goal(spread is not None and spread <= 50, '<= 50 ms')} |")
waits = median("waits", "plinth", "elapsed_ms")
out.append(f"| 1,000 concurrent requests that each wait 1 s, plinth on one thread | {fmt(waits)} ms "
           f"| {goal(waits is not None and waits <= 1100, '<= 1,100 ms')} |")
h = runs.get(("waits", "httplib"), [{}])[0]
h_answered, h_elapsed = h.get("answered"), h.get("elapsed_ms")
out.append(f"| the same against cpp-httplib, its default thread pool (one round, 15 s deadline) "
           f"| {fmt(h_answered)} of 1,000 answered in {fmt(h_elapsed)} ms | |")
c_beast = median("compile", "beast", "ms")
for what, title, target in (("plinth", "`examples/hello`", 1.3),
                            ("routes_only", "a file of handlers and routes only (`tests/perf/routes_only.cpp`)", None),
                            ("example", "the example server (`examples/server/main.cpp`)", None)):
    c = median("compile", what, "ms")
    c_ratio = c / c_beast if c and c_beast else None
    g = goal(c_ratio is not None and c_ratio <= target, f"<= {target}x") if target else ""
    out.append(f"| compile time, {title} vs the minimal Beast server (g++ -O2) "
               f"| {fmt(c)} ms vs {fmt(c_beast)} ms ({fmt(c_ratio, 2)}x) | {g} |")
out.append("")

out.append("### Memory held (one server thread; server RSS growth, read from /proc)")
out.append("")
out.append("| | plinth | nginx (1 worker) | minimal Beast | goal |")
out.append("|---|---:|---:|---:|---|")
idle = {s: median("idle_10000", s, "bytes_per_connection") for s in ("plinth", "nginx", "beast")}
out.append(f"| an idle keep-alive connection after one GET /hello, 10,000 held | {fmt(idle['plinth'])} B "
           f"| {fmt(idle['nginx'])} B | {fmt(idle['beast'])} B "
           f"| {goal(idle['plinth'] is not None and idle['plinth'] <= 600, '<= 600 B')} |")
idle_1ms = median("idle_10000", "plinth-release-1ms", "bytes_per_connection")
out.append(f"| the same, the connection giving back what serving takes after 1 ms (`idle_release`) "
           f"| {fmt(idle_1ms)} B | | | |")
out.append(f"| a suspended request, 19,000 held | {fmt(p_per)} B | | {fmt(b_per)} B "
           f"| {goal(p_per is not None and p_per <= 1536, '<= 1,536 B')} |")
sse = median("sse_5000", "plinth", "bytes_per_connection")
out.append(f"| an open event stream (the example server's `/events?interval_ms=100000`), 5,000 held | {fmt(sse)} B | | "
           f"| {goal(sse is not None and sse <= 2048, '<= 2,048 B')} |")
out.append("")

out.append("### Throughput goals")
out.append("")
for bench, peer, target in (("hello_50", "restinio", 1.05), ("hello_50", "nginx", 0.9), ("pipelined_16", "nginx", 0.9)):
    r = ratios.get((bench, peer))
    out.append(f"- {dict(scenarios)[bench]}: plinth / {names[peer]} = {fmt(r, 2)}x, "
               + goal(r is not None and r >= target, f">= {target}x"))
out.append("")
out.append("![GET /hello, requests/s](results.png)")

with open(md_path, "w") as f:
    f.write("\n".join(out) + "\n")

if readme_path:
    readme = open(readme_path).read()
    begin, end = readme.find(BEGIN), readme.find(END)
    if begin == -1 or end < begin:
        sys.exit(f"{readme_path}: the results markers are missing")
    block = "\n".join(out).replace("](results.png)", "](tests/perf/results.png)")
    with open(readme_path, "w") as f:
        f.write(readme[:begin + len(BEGIN)] + block + readme[end:])

# The plot: one group of bars per throughput scenario.
with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as data:
    data.write("scenario " + " ".join(f'"{names[s]}"' for s in servers) + "\n")
    for bench, title in scenarios:
        label = title.replace("GET /hello, ", "").replace(" connections", " conn.")
        data.write(f'"{label}" ' + " ".join(str(median(bench, s, "rps") or 0) for s in servers) + "\n")
script = f"""
set terminal pngcairo size 900,480 font ",10"
set output "{png_path}"
set title "GET /hello, requests/s (one server thread; {date}, {machine})" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set key top left autotitle columnhead noenhanced
set ylabel "requests/s"
set yrange [0:*]
set grid ytics
set format y "%.0s%c"
plot for [i=2:{len(servers) + 1}] "{data.name}" using i:xtic(1)
"""
subprocess.run(["gnuplot"], input=script, text=True, check=True)
