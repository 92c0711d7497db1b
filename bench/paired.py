#!/usr/bin/env python3
"""bench/paired.py TSV [OURS] [THEIRS] — one proxy against another, round by round.
bench/paired.py --cpu TSV A A-OFF [B B-OFF] — what A costs over A-OFF in CPU per request.

Reads the raw runs the peer kit's compare.sh writes (one line per run: rep, name, spec, ...,
rps, p50_ms, p99_ms) and compares OURS (default weir) with THEIRS (default nginx) within each
round, where both ran minutes apart on the same machine: their requests/s ratio, and each one's
added p99 (its p99 less the direct run's in that round). The machine's drift between rounds
(this shared one moves 10-25 %) cancels out of a round's ratio, not out of a ratio of medians.
A run repeated because other processes were busy counts as its last repeat. Without a direct
run in the round (the TLS and HTTP/2 tables have none) the p99s are shown as they are.
"""
import csv
import re
import statistics
import sys


def cpu_costs(path, pairs):
    """`--cpu TSV A A-OFF B B-OFF`: per round, what A costs over A-OFF and B over B-OFF in CPU µs
    per request (say, each proxy with its access log on against the same proxy with it off)."""
    cpu = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            m = re.search(r"cpu_us/req=([0-9.]+)", row["extra"])
            if m:
                cpu[(row["rep"], row["name"])] = float(m.group(1))
    names = [f"{on}-{off}" for on, off in pairs]
    print("round  " + "  ".join(f"{n:>24}" for n in names))
    diffs = {n: [] for n in names}
    for rep in sorted({rep for rep, _ in cpu}, key=int):
        cells = []
        for (on, off), n in zip(pairs, names):
            if (rep, on) in cpu and (rep, off) in cpu:
                d = cpu[(rep, on)] - cpu[(rep, off)]
                diffs[n].append(d)
                cells.append(f"{d:>+21.1f} µs")
            else:
                cells.append(f"{'-':>24}")
        print(f"{rep:>5}  " + "  ".join(cells))
    print("median " + ", ".join(
        f"{n} {statistics.median(d):+.1f} µs" for n, d in diffs.items() if d))


if sys.argv[1] == "--cpu":
    args = sys.argv[3:]
    cpu_costs(sys.argv[2], list(zip(args[::2], args[1::2])))
    sys.exit(0)

path = sys.argv[1]
ours = sys.argv[2] if len(sys.argv) > 2 else "weir"
theirs = sys.argv[3] if len(sys.argv) > 3 else "nginx"

runs = {}
with open(path, newline="") as f:
    for row in csv.DictReader(f, delimiter="\t"):
        runs[(row["rep"], row["name"])] = (float(row["rps"]), float(row["p99_ms"]))
direct = any(name == "direct" for _, name in runs)

rounds = []
for rep in sorted({rep for rep, _ in runs}, key=int):
    got = [runs.get((rep, name), (0, 0) if name == "direct" and not direct else None)
           for name in (ours, theirs, "direct")]
    if None in got:
        continue
    (o_rps, o_p99), (t_rps, t_p99), (_, d_p99) = got
    rounds.append((rep, o_rps / t_rps, o_p99 - d_p99, t_p99 - d_p99))
if not rounds:
    sys.exit(f"no round in {path} has {ours}, {theirs} and direct")

added = "added p99" if direct else "p99"
print(f"round  req/s {ours}/{theirs}  {added} {ours}  {added} {theirs}")
for rep, ratio, o_add, t_add in rounds:
    print(f"{rep:>5}  {ratio:>15.2f}×  {o_add:>+11.2f} ms  {t_add:>+12.2f} ms")
ratios = [r[1] for r in rounds]
faster = sum(r >= 1 for r in ratios)
lower = sum(o <= t for _, _, o, t in rounds)
n = len(rounds)
print(
    f"median {statistics.median(ratios):.2f}× the requests/s ({ours} ahead in {faster} of {n} "
    f"rounds); {added} {statistics.median(r[2] for r in rounds):+.2f} ms against "
    f"{statistics.median(r[3] for r in rounds):+.2f} ms ({ours} lower in {lower} of {n})"
)
