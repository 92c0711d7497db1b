#!/usr/bin/env python3
"""Renders Weir's Grafana dashboards (manifests/observability/dashboards/*.json) as PNG charts
from a live Prometheus: one picture per dashboard, one chart per panel, each panel's queries
run over the last minutes exactly as Grafana would run them (its variables set to "All").

Run by tests/tests/observability.rs when WEIR_OBSERVABILITY_PICTURES is set, against the
Prometheus that scraped the test's processes: scripts/observability-pictures.sh.
"""
import argparse
import json
import math
import pathlib
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "manifests/observability/dashboards"
SCALE = {"percentunit": (100, "%"), "d": (1, "days"), "h": (1, "hours"), "s": (1000, "ms")}


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        return json.load(r)["data"]["result"]


def legend(fmt, labels):
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text.replace("spiffe://cluster.local/", "") or json.dumps(labels)


def render(prometheus, path, out, minutes, rate_window):
    dashboard = json.loads(path.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows), squeeze=False)
    end = time.time()
    start = end - 60 * minutes
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        factor, suffix = SCALE.get(unit, (1, {"reqps": "req/s", "ops": "/s", "cps": "conn/s"}.get(unit, "")))
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", rate_window)
                    .replace("$route", ".*").replace("$destination", ".*"))
            for series in query_range(prometheus, expr, start, end, 2):
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) * factor for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat"), series["metric"]), linewidth=1.3)
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_ylabel(suffix, fontsize=8)
        ax.set_xlabel("minutes ago", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(dashboard["title"], fontsize=14, x=0.01, ha="left")
    fig.tight_layout()
    target = out / f"{path.stem}.png"
    fig.savefig(target, dpi=80)
    plt.close(fig)
    print(f"wrote {target}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="http://HOST:PORT")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--rate-window", default="30s")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(DASHBOARDS.glob("*.json")):
        render(args.prometheus, path, args.out, args.minutes, args.rate_window)


if __name__ == "__main__":
    main()
