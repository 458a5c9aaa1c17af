#!/usr/bin/env python3
"""Plots the WSGI server benchmark (bench/bench_wsgi.py) to a PNG.

    /usr/bin/python3 bench/plot_wsgi.py RESULTS.json [docs/wsgi_bench.png]

RESULTS.json is what `bench_wsgi.py --json FILE` writes; `bench_wsgi.py
--plot FILE` calls plot() directly. Bars are the medians of the rounds, dots
the single rounds. Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

GIB = 1 << 30
ORDER = ("erlpy", "gunicorn", "uwsgi", "sink")
LABEL = {"erlpy": "erlpy", "gunicorn": "gunicorn", "uwsgi": "uWSGI", "sink": "null sink"}
COLOR = {"erlpy": "#a2003d", "gunicorn": "#3b7d3b", "uwsgi": "#2a5d9f", "sink": "#9a9a9a"}


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _bars(ax, groups, series, values, ylabel, title, fmt="%.0f"):
    """groups: x labels; series: [(name, color)]; values[g][s] = [per-round]."""
    width = 0.8 / max(len(series), 1)
    for i, (name, color) in enumerate(series):
        for j, g in enumerate(groups):
            rounds = values.get(g, {}).get(name) or []
            med = _median(rounds)
            if med is None:
                continue
            x = j + (i - (len(series) - 1) / 2) * width
            ax.bar(x, med, width * 0.92, color=color, label=name if j == 0 else None)
            ax.scatter([x] * len(rounds), rounds, s=9, color="black", zorder=3)
            ax.annotate(fmt % med, (x, med), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot(data, path):
    res = data["results"]
    size = data.get("size", GIB)
    kinds = [k for k in ORDER if k in res]
    servers = [k for k in kinds if k != "sink"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.6, 1.6]})

    # GET requests/s: one bar per server.
    get = {LABEL[k]: {"req/s": [w["rps"] for w in res[k].get("get", [])]} for k in servers}
    ax = axes[0]
    for j, k in enumerate(servers):
        rounds = get[LABEL[k]]["req/s"]
        med = _median(rounds)
        if med is None:
            continue
        ax.bar(j, med, 0.7, color=COLOR[k])
        ax.scatter([j] * len(rounds), rounds, s=9, color="black", zorder=3)
        ax.annotate("%.0f" % med, (j, med), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=7)
    ax.set_xticks(range(len(servers)))
    ax.set_xticklabels([LABEL[k] for k in servers], fontsize=8)
    ax.set_ylabel("requests/s (higher is better)", fontsize=8)
    ax.set_title("GET /, wrk -t2 -c50", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    # Upload MB/s, grouped by body framing.
    groups = ["Content-Length", "chunked"]
    keys = {"Content-Length": "length", "chunked": "chunked"}
    series = [(LABEL[k], COLOR[k]) for k in kinds]
    up = {g: {LABEL[k]: [u["mbps"] for u in res[k].get(keys[g], [])] for k in kinds} for g in groups}
    _bars(axes[1], groups, series, up, "MB/s (10^6 B/s; higher is better)",
          "1 GiB upload with curl -H 'Expect:', app reads 64 KiB chunks")
    top = max([max(v) for g in up.values() for v in g.values() if v] or [1])
    axes[1].set_ylim(0, top * 1.25)
    axes[1].legend(fontsize=7, loc="upper center", ncol=len(series))
    if "uwsgi" in res:
        axes[1].text(0.99, -0.13, "uWSGI chunked: uwsgi.chunked_read() (its wsgi.input reads 0 bytes)",
                     transform=axes[1].transAxes, ha="right", fontsize=7, style="italic")

    # Server CPU per GiB uploaded.
    cpu = {g: {LABEL[k]: [u["cpu"] * GIB / size for u in res[k].get(keys[g], [])] for k in kinds}
           for g in groups}
    _bars(axes[2], groups, series, cpu, "server CPU s per GiB (lower is better)",
          "CPU the server used for that upload (user + system)", fmt="%.2f")
    top = max([max(v) for g in cpu.values() for v in g.values() if v] or [1])
    axes[2].set_ylim(0, top * 1.15)

    fig.suptitle("WSGI servers, same app and machine, one run (%d rounds): %s"
                 % (data.get("rounds", 0), data.get("machine", "")), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    out = sys.argv[2] if len(sys.argv) == 3 else "docs/wsgi_bench.png"
    plot(data, out)
    print("plot: %s" % out)


if __name__ == "__main__":
    main()
