#!/usr/bin/env python3
"""Turns a bench/compare.sh run directory (raw.txt, meta.txt, evidence.txt) into results.md,
results.csv and ratios.png (gnuplot).

Each figure is the median over the repetitions, taken per metric. Its ratio compares it with the
best of the other proxies in the same run and scenario: for req/s and MB/s the highest, for
latencies the lowest, so a req/s ratio above 1 and a latency ratio below 1 both mean "better than
every other proxy".
"""
import csv
import os
import statistics
import subprocess
import sys

ORDER = ["hit-1k", "hit-256k", "hit-4m", "nokeep-1k", "reval", "miss"]
PROXIES = ["cdnode", "nginx", "varnish", "ats"]
HIGHER = {"rps": True, "mbps": True, "p50_ms": False, "p99_ms": False, "p999_ms": False}
ANON_LIMIT_MB = 64


def parse_kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ordered(items, order):
    return sorted(items, key=lambda x: order.index(x) if x in order else len(order))


def main(run):
    runs = {}
    with open(os.path.join(run, "raw.txt")) as f:
        for line in f:
            kv = parse_kv(line)
            if "scenario" in kv:
                runs.setdefault((kv["scenario"], kv["proxy"]), []).append(kv)
    meta = {}
    with open(os.path.join(run, "meta.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v

    # medians
    med = {}
    for key, rs in runs.items():
        m = {"client": rs[0]["client"], "reps": len(rs)}
        for k in list(HIGHER) + ["errors", "sother", "origin_200", "origin_304", "requests",
                                 "rss_anon_kb", "rss_file_kb", "rss_shmem_kb", "proxy_cpu",
                                 "cpu0_busy", "cpu1_busy"]:
            vals = [num(r.get(k)) for r in rs if num(r.get(k)) is not None]
            m[k] = statistics.median(vals) if vals else None
        # requests per second of the proxy's own CPU time: comparable even when other processes
        # took part of CPU 0
        eff = [num(r["rps"]) * 100 / num(r["proxy_cpu"]) for r in rs
               if num(r.get("rps")) and num(r.get("proxy_cpu"))]
        m["req_per_cpu_s"] = statistics.median(eff) if eff else None
        rps = [num(r.get("rps")) or 0 for r in rs]
        m["rps_min"], m["rps_max"] = min(rps), max(rps)
        med[key] = m
    scenarios = ordered({s for s, _ in med}, ORDER)
    proxies = ordered({p for _, p in med}, PROXIES)

    # A proxy that answered reval without revalidating (the origin sent it full 200s, not 304s)
    # did a different job: it is not a peer for the ratios of that scenario.
    for (s, p), m in med.items():
        m["not_peer"] = (s == "reval" and m["requests"] is not None and
                         (m["origin_304"] or 0) < 0.5 * m["requests"])

    # ratios to the best other proxy
    for s in scenarios:
        for p in proxies:
            if (s, p) not in med:
                continue
            m = med[(s, p)]
            for k, higher in HIGHER.items():
                others = [med[(s, q)][k] for q in proxies
                          if q != p and (s, q) in med and med[(s, q)][k] and
                          not med[(s, q)]["not_peer"]]
                best = (max if higher else min)(others) if others else None
                m[k + "_ratio"] = m[k] / best if best and m[k] is not None else None

    def f(v, digits=0):
        return "" if v is None else f"{v:,.{digits}f}"

    def r(v):
        return "" if v is None else f"{v:.2f}"

    md = []
    md.append(f"# cdnode, nginx, Varnish and Traffic Server in one run ({meta.get('date', '')})")
    md.append("")
    md.append(f"- CPU: {meta.get('cpu', '')}; kernel {meta.get('kernel', '')}")
    md.append(f"- versions: cdnode {meta.get('cdnode', '')}, nginx {meta.get('nginx', '')}, "
              f"Varnish {meta.get('varnish', '')}, Traffic Server {meta.get('ats', '')}, "
              f"wrk {meta.get('wrk', '')}")
    md.append(f"- {meta.get('reps', '')} repetition(s) of {meta.get('duration_s', '')} s, "
              f"{meta.get('connections', '')} connections, {meta.get('reval_urls', '')} distinct "
              "reval URLs; proxy on CPU 0, origin (nginx) and client on CPU 1; caches and logs "
              f"under {meta.get('workdir', '')}")
    md.append(f"- load average before {meta.get('load_before', '')}, after "
              f"{meta.get('load_after', '')}; {meta.get('fuzz_or_other_load', '')}")
    if meta.get("no_hit_evidence"):
        md.append(f"- **no HIT evidence for:{meta['no_hit_evidence']}**")
    md.append("")
    md.append("Medians over the repetitions. `×` columns: the figure divided by the best of the "
              "other proxies in this run (throughput: higher is better; latency: lower is "
              "better). `client`: which load generator produced the row (wrk 4.1, or "
              "bench/loadgen, which reads 256 KiB per call). MB = 10^6 bytes received, heads "
              "included. CPU %: the proxy's processes over the run, and how busy CPU 0 (proxy) and "
              "CPU 1 (origin and client) were, whoever used them: a proxy below ~95 % with CPU 1 "
              "near 100 % was limited by the client or the origin, not by itself. req per proxy "
              "CPU-s: req/s divided by the proxy's CPU share, the cost per request whatever else "
              "ran.")
    md.append("")
    md.append("| scenario | proxy | client | req/s | × | MB/s | × | p50 ms | × | p99 ms | × | "
              "p99.9 ms | × | errors | non-2xx/304 | CPU % proxy / cpu0 / cpu1 | "
              "req per proxy CPU-s |")
    md.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in scenarios:
        for p in proxies:
            if (s, p) not in med:
                continue
            m = med[(s, p)]
            name = f"{p} (did not revalidate: not a peer)" if m["not_peer"] else p
            md.append(f"| {s} | {name} | {m['client']} | {f(m['rps'])} | {r(m['rps_ratio'])} | "
                      f"{f(m['mbps'], 1)} | {r(m['mbps_ratio'])} | {f(m['p50_ms'], 2)} | "
                      f"{r(m['p50_ms_ratio'])} | {f(m['p99_ms'], 2)} | {r(m['p99_ms_ratio'])} | "
                      f"{f(m['p999_ms'], 2)} | {r(m['p999_ms_ratio'])} | {f(m['errors'])} | "
                      f"{f(m['sother'])} | {f(m['proxy_cpu'])} / {f(m['cpu0_busy'])} / "
                      f"{f(m['cpu1_busy'])} | {f(m['req_per_cpu_s'])} |")
    md.append("")

    if "cdnode" in proxies:
        md.append("## cdnode against the best other proxy")
        md.append("")
        md.append("| scenario | req/s ratio | p99 ratio | best other by req/s | req/s spread "
                  "(min–max of runs) |")
        md.append("|---|---:|---:|---|---|")
        for s in scenarios:
            m = med.get((s, "cdnode"))
            if not m:
                continue
            others = [(med[(s, q)]["rps"] or 0, q) for q in proxies
                      if q != "cdnode" and (s, q) in med and not med[(s, q)]["not_peer"]]
            best = max(others)[1] if others else ""
            md.append(f"| {s} | {r(m['rps_ratio'])} | {r(m['p99_ms_ratio'])} | {best} | "
                      f"{f(m['rps_min'])}–{f(m['rps_max'])} |")
        md.append("")

    if any(med.get(("hit-4m", p), {}).get("rss_anon_kb") is not None for p in proxies):
        md.append("## Memory under hit-4m (peak over the run, whole process tree)")
        md.append("")
        md.append("| proxy | RssAnon MB | RssFile MB | RssShmem MB |")
        md.append("|---|---:|---:|---:|")
        for p in proxies:
            m = med.get(("hit-4m", p))
            if m and m["rss_anon_kb"] is not None:
                md.append(f"| {p} | {f(m['rss_anon_kb'] / 1024, 1)} | "
                          f"{f(m['rss_file_kb'] / 1024, 1)} | "
                          f"{f((m['rss_shmem_kb'] or 0) / 1024, 1)} |")
        m = med.get(("hit-4m", "cdnode"))
        if m and m["rss_anon_kb"] is not None:
            mb = m["rss_anon_kb"] / 1024
            verdict = "within" if mb < ANON_LIMIT_MB else "OVER"
            md.append("")
            md.append("cdnode anonymous memory (RssAnon: RSS without the store's mapped file "
                      "pages, which are RssFile, or RssShmem on tmpfs) under hit-4m: "
                      f"**{mb:.1f} MB**, {verdict} the {ANON_LIMIT_MB} MB budget.")
        md.append("")

    if any(s in ("reval", "miss") for s in scenarios):
        md.append("## What reached the origin in reval and miss (medians per run)")
        md.append("")
        md.append("Each reval request should cost one origin 304; each miss request one "
                  "origin 200. A proxy whose reval requests mostly reached the origin as full "
                  "fetches (200) did not revalidate; its reval row is marked and left out of the "
                  "other proxies' ratios.")
        md.append("")
        md.append("| scenario | proxy | responses | origin 200 | origin 304 |")
        md.append("|---|---|---:|---:|---:|")
        for s in ("reval", "miss"):
            for p in proxies:
                m = med.get((s, p))
                if m:
                    md.append(f"| {s} | {p} | {f(m['requests'])} | {f(m['origin_200'])} | "
                              f"{f(m['origin_304'])} |")
        md.append("")

    ev = os.path.join(run, "evidence.txt")
    if os.path.exists(ev):
        md.append("## HIT evidence (the header each proxy sent on a repeated request)")
        md.append("")
        md.append("```")
        with open(ev) as fh:
            md.extend(line.rstrip("\n") for line in fh)
        md.append("```")
        md.append("")
    md.append("![ratios](ratios.png)")
    md.append("")
    with open(os.path.join(run, "results.md"), "w") as fh:
        fh.write("\n".join(md))

    cols = ["client", "reps", "rps", "rps_ratio", "mbps", "mbps_ratio", "p50_ms", "p50_ms_ratio",
            "p99_ms", "p99_ms_ratio", "p999_ms", "p999_ms_ratio", "rps_min", "rps_max", "errors",
            "sother", "origin_200", "origin_304", "rss_anon_kb", "rss_file_kb", "rss_shmem_kb",
            "proxy_cpu", "cpu0_busy", "cpu1_busy", "req_per_cpu_s"]
    with open(os.path.join(run, "results.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scenario", "proxy"] + cols)
        for s in scenarios:
            for p in proxies:
                m = med.get((s, p))
                if m:
                    w.writerow([s, p] + ["" if m.get(c) is None else
                                         (round(m[c], 4) if isinstance(m[c], float) else m[c])
                                         for c in cols])

    chart(run, scenarios, proxies, med)


def chart(run, scenarios, proxies, med):
    dat = os.path.join(run, "ratios.dat")
    with open(dat, "w") as fh:
        for k in ("rps_ratio", "p99_ms_ratio"):
            for s in scenarios:
                vals = []
                for p in proxies:
                    v = med.get((s, p), {}).get(k)
                    vals.append("0" if v is None else f"{v:.4f}")
                fh.write(s + " " + " ".join(vals) + "\n")
            fh.write("\n\n")
    plot = ", ".join(f"'{dat}' index {{i}} using {c + 2}:xtic(1) title '{p}'"
                     for c, p in enumerate(proxies))
    gp = f"""
set terminal pngcairo size 1100,800 font ',10'
set output '{os.path.join(run, "ratios.png")}'
set multiplot layout 2,1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set yrange [0:*]
set key top left horizontal
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lw 1.5 front
set title 'req/s divided by the best other proxy (higher is better)'
plot {plot.format(i=0)}
set title 'p99 latency divided by the best other proxy (lower is better, log scale)'
set logscale y
set yrange [*:*]
plot {plot.format(i=1)}
unset multiplot
"""
    try:
        subprocess.run(["gnuplot"], input=gp, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"report: no chart ({e})", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
