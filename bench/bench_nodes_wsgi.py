"""Serving from worker nodes (make bench-nodes; docs/performance.md, "Worker nodes").

bin/erlpy serve --workers 2 against gunicorn with 2 sync workers and uWSGI
with 2 processes, all serving bench/nodes_bench.py:app, with
`wrk -t2 -c50` on two paths:

    /burn  about 1 ms of pure Python per request (calibrated here)
    /      hello world

erlpy-c2 is erlpy with `--contexts 2` (two Python threads per worker node
instead of 8).  The servers all run at once, each in its own session on a
free port (stopped by its process group), and are measured in turns: a
round gives each server 1 s of warm-up and --duration seconds on each
path, so that the shared machine's load changes fall on all of them
alike.  Printed: requests/s over the rounds, the ratios against gunicorn
(and their spread over the rounds), the CPU per request of the whole
session (every process of it, from /proc), and the RSS of each erlpy
worker node after the runs.

    --duration SECONDS (default 3)   --rounds N (default 3)
    --servers erlpy,erlpy-c2,gunicorn,uwsgi
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_servers  # noqa: E402  (free_port, session_cpu, stop_group, erlpy_workers, describe)
import nodes_bench  # noqa: E402

APP = "nodes_bench:app"
# Python threads per worker node (--contexts): the app is CPU-bound, so
# more threads than cores only take turns at the node's GIL.
CONTEXTS = os.environ.get("ERLPY_BENCH_CONTEXTS", "8")


def command(kind, port):
    bind = "127.0.0.1:%d" % port
    if kind.startswith("erlpy"):
        contexts = "2" if kind == "erlpy-c2" else CONTEXTS
        return [os.path.join(ROOT, "bin", "erlpy"), "serve", APP, "--bind", bind, "--workers", "2",
                "--contexts", contexts, "--python-path", HERE]
    if kind == "gunicorn":
        return ["gunicorn", "-w", "2", "-k", "sync", "-b", bind, "--chdir", HERE, APP]
    if kind == "uwsgi":
        return ["uwsgi", "--plugin", "python3", "--http-socket", bind, "--processes", "2",
                "--wsgi-file", os.path.join(HERE, "nodes_bench.py"), "--callable", "app",
                "--master", "--disable-logging"]
    raise ValueError(kind)


def start(kind, env):
    port = bench_servers.free_port()
    log = open("/tmp/erlpy_bench_nodes_%s_%d.log" % (kind, os.getpid()), "wb")
    proc = subprocess.Popen(command(kind, port), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("%s exited: %s" % (kind, open(log.name).read()[-2000:]))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    return proc, port, log.name
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("%s did not answer" % kind)


def stop(kind, proc):
    bench_servers.stop_group(proc, signal.SIGTERM if kind.startswith("erlpy") else signal.SIGINT, 30)


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wrk(port, path, duration):
    out = subprocess.run(["wrk", "-t2", "-c50", "-d%ds" % duration, "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, reqs, (sum(map(int, errs.groups())) if errs else 0) + (int(non2xx.group(1)) if non2xx else 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="erlpy,erlpy-c2,gunicorn,uwsgi")
    args = ap.parse_args()
    kinds = args.servers.split(",")
    n = nodes_bench.calibrate(1)
    env = dict(os.environ, ERLPY_BENCH_BURN_N=str(n),
               PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
    print("bench_nodes_wsgi: %s; /burn runs burn(%d), about 1 ms; %d rounds of %d s" %
          (bench_servers.describe(), n, args.rounds, args.duration))
    servers = {}
    # (kind, path) -> per round [(requests/s, requests, CPU s, errors)]
    rounds = {(kind, path): [] for kind in kinds for path in ("/burn", "/")}
    try:
        for kind in kinds:
            servers[kind] = start(kind, env)
        for _ in range(args.rounds):
            for kind in kinds:
                proc, port, _ = servers[kind]
                for path in ("/burn", "/"):
                    wrk(port, path, 1)
                    cpu0 = bench_servers.session_cpu(proc.pid)
                    rps, reqs, errors = wrk(port, path, args.duration)
                    rounds[(kind, path)].append((rps, reqs, bench_servers.session_cpu(proc.pid) - cpu0, errors))
        for kind in kinds:
            if kind.startswith("erlpy"):
                workers = bench_servers.erlpy_workers(servers[kind][0].pid)
                print("  %s worker nodes' RSS after the runs: %s MB" %
                      (kind, ", ".join("%.1f" % rss_mb(p) for p in workers)))
    finally:
        for kind, (proc, _, log) in servers.items():
            stop(kind, proc)
            os.unlink(log)
    for path in ("/burn", "/"):
        base = rounds.get(("gunicorn", path))
        for kind in kinds:
            rs = rounds[(kind, path)]
            rps = sum(r[0] for r in rs) / len(rs)
            cpu = sum(r[2] for r in rs) * 1000 / max(sum(r[1] for r in rs), 1)
            ratio = ""
            if base:
                per = sorted(r[0] / b[0] for r, b in zip(rs, base))
                ratio = " %5.2fx gunicorn (rounds %.2f-%.2f)" % (rps / (sum(b[0] for b in base) / len(base)),
                                                                 per[0], per[-1])
            print("  %-5s %-9s %8.0f req/s%s  %.3f CPU ms/req  %d errors" %
                  (path, kind, rps, ratio, cpu, sum(r[3] for r in rs)))


if __name__ == "__main__":
    main()
