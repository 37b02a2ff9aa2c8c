#!/usr/bin/env python3
"""Turns one bench/run.sh run (a directory with meta.txt, results.txt, memory.txt) into the
markdown that BENCHMARKS.md quotes: a table of medians across rounds, ratios to the ceiling
measured in the same round, and the issue's targets met or missed.

Ratios are computed per round (scenario / its baseline in that round), then the median of those
is taken, so a noisy round moves both sides of a ratio together.
"""

import statistics
import sys
from collections import defaultdict
from pathlib import Path

DESCRIPTIONS = {
    "ceiling": "empty axum server, direct",
    "quotagate-10k": "quotagate, 10,000 tokens (80 % allowed)",
    "quotagate-hot": "quotagate, one hot token (denied)",
    "quotagate-1m": "quotagate, 1,000,000 tokens (random, allowed)",
    "quotagate-redis-10k": "quotagate on Redis, 10,000 tokens (one round trip each)",
    "quotagate-redis-hot": "quotagate on Redis, one hot token (denied)",
    "quotagate-redis-local-hot": "quotagate on Redis with local = true, one hot token",
    "traefik-plain": "Traefik -> backend, no middleware",
    "traefik-ratelimit": "Traefik built-in rateLimit (per Authorization)",
    "traefik-fa-ceiling": "Traefik forwardAuth -> empty server",
    "traefik-fa-quotagate": "Traefik forwardAuth -> quotagate",
    "traefik-fa-quotagate-tls": "Traefik forwardAuth over TLS/h2 -> quotagate",
}


def kv(line):
    return dict(part.split("=", 1) for part in line.split())


def load(path):
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(kv(line))
    return rows


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(out):
    meta = {}
    for line in (out / "meta.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        meta[key] = value
    rows = load(out / "results.txt")
    by = defaultdict(dict)  # round -> scenario -> row
    order = []
    for r in rows:
        by[r["round"]][r["scenario"]] = {k: float(v) for k, v in r.items() if k not in ("round", "scenario")}
        if r["scenario"] not in order:
            order.append(r["scenario"])
    rounds = sorted(by, key=int)

    def series(scenario, field):
        return [by[r][scenario][field] for r in rounds if scenario in by[r]]

    def ratio(scenario, base, field):
        xs = []
        for r in rounds:
            a, b = by[r].get(scenario), by[r].get(base)
            if a and b and b[field] > 0:
                xs.append(a[field] / b[field])
        return xs

    print(f"quotagate benchmarks, {meta.get('mode')} run, {meta.get('date')}, commit {meta.get('commit')}")
    print()
    print(
        f"{meta.get('cpus')} CPUs ({meta.get('cpu')}); servers on CPUs {meta.get('server_cpus')}, "
        f"wrk on CPUs {meta.get('load_cpus')}; {meta.get('rounds')} rounds, {meta.get('duration_s')} s per "
        f"scenario per round, {meta.get('connections')} connections; Traefik {meta.get('traefik')}."
    )
    print()
    print("| scenario | what | req/s | p50 ms | p99 ms | non-2xx | x ceiling req/s | x ceiling p99 | req/s per round |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for s in order:
        rps = series(s, "rps")
        p50 = series(s, "p50_us")
        p99 = series(s, "p99_us")
        total = sum(series(s, "requests"))
        non2xx = sum(series(s, "non2xx"))
        errors = sum(series(s, "errors"))
        share = f"{100 * non2xx / total:.0f} %" if total else "-"
        if errors:
            share += f" (+{errors:.0f} socket errors)"
        per_round = " / ".join(f"{x:,.0f}" for x in rps)
        if s == "ceiling":
            xr, xp = "1", "1"
        else:
            xr = f"{median(ratio(s, 'ceiling', 'rps')):.2f}"
            xp = f"{median(ratio(s, 'ceiling', 'p99_us')):.2f}"
        print(
            f"| {s} | {DESCRIPTIONS.get(s, '')} | {median(rps):,.0f} | {median(p50) / 1000:.2f} | "
            f"{median(p99) / 1000:.2f} | {share} | {xr} | {xp} | {per_round} |"
        )
    print()

    mem = load(out / "memory.txt")
    keys_row = next((m for m in mem if m["kind"] == "keys"), None)
    flood_row = next((m for m in mem if m["kind"] == "flood"), None)
    per_key = None
    if keys_row:
        idle, rss, peak, live = (float(keys_row[k]) for k in ("idle_kib", "rss_kib", "peak_kib", "live_keys"))
        per_key = (rss - idle) * 1024 / live if live else float("nan")
        print(
            f"Memory, {int(float(keys_row['tokens'])):,} distinct tokens, one request each "
            f"(store.max_keys {int(float(keys_row['max_keys'])):,}): idle RSS {idle / 1024:.1f} MiB, "
            f"RSS after {rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, live keys {int(live):,}, "
            f"**{per_key:.0f} B per live key** ((RSS - idle RSS) / live keys)."
        )
        print()
    if flood_row:
        idle, rss, peak, live = (float(flood_row[k]) for k in ("idle_kib", "rss_kib", "peak_kib", "live_keys"))
        print(
            f"Memory, {int(float(flood_row['tokens'])):,} distinct tokens against store.max_keys "
            f"{int(float(flood_row['max_keys'])):,}: idle RSS {idle / 1024:.1f} MiB, RSS after "
            f"{rss / 1024:.1f} MiB, **peak {peak / 1024:.1f} MiB**, live keys {int(live):,}."
        )
        print()

    print("| target | measured (median of per-round ratios) | met |")
    print("|---|---:|---|")

    def target(label, values, ok):
        if not values:
            return
        m = median(values)
        met = "-" if ok is None else ("yes" if ok(m) else "no")
        print(f"| {label} | {m:.2f} | {met} |")

    target("quotagate-10k req/s >= 0.90x ceiling", ratio("quotagate-10k", "ceiling", "rps"), lambda m: m >= 0.90)
    target("quotagate-10k p99 <= 1.25x ceiling", ratio("quotagate-10k", "ceiling", "p99_us"), lambda m: m <= 1.25)
    target(
        "forwardAuth->quotagate >= 0.95x forwardAuth->ceiling",
        ratio("traefik-fa-quotagate", "traefik-fa-ceiling", "rps"),
        lambda m: m >= 0.95,
    )
    target(
        "stretch: forwardAuth->quotagate >= 0.60x Traefik rateLimit",
        ratio("traefik-fa-quotagate", "traefik-ratelimit", "rps"),
        lambda m: m >= 0.60,
    )
    target(
        "stretch, over TLS/h2: forwardAuth->quotagate >= 0.60x Traefik rateLimit",
        ratio("traefik-fa-quotagate-tls", "traefik-ratelimit", "rps"),
        lambda m: m >= 0.60,
    )
    target(
        "(for reference) forwardAuth over TLS/h2 -> quotagate / plain forwardAuth -> quotagate",
        ratio("traefik-fa-quotagate-tls", "traefik-fa-quotagate", "rps"),
        None,
    )
    target(
        "(for reference) forwardAuth->ceiling / Traefik rateLimit",
        ratio("traefik-fa-ceiling", "traefik-ratelimit", "rps"),
        None,
    )
    if per_key is not None:
        print(f"| <= 200 B per live key | {per_key:.0f} B | {'yes' if per_key <= 200 else 'no'} |")
    if flood_row and keys_row:
        bound = float(flood_row["max_keys"])
        # Bounded: peak RSS with 5x the bound in distinct tokens stays near what `bound` live
        # keys cost (idle RSS + bound * bytes per key), allowing 50 % for the shards' growth by doubling.
        expected = float(flood_row["idle_kib"]) * 1024 + bound * per_key
        peak = float(flood_row["peak_kib"]) * 1024
        print(
            f"| RSS bounded: peak at {int(float(flood_row['tokens'])):,} tokens <= 1.5x "
            f"(idle + max_keys x B/key) | {peak / expected:.2f}x | {'yes' if peak <= 1.5 * expected else 'no'} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
