"""Where erlpy's CPU per request goes: bench/bench_floor.erl's steps of the
request path against erlpy itself and uWSGI, same app, same run.

    floor     a keep-alive hello server in plain Erlang (no Python)
    call      plus one py:call(operator, add, [1, 2]) per request
    environ   plus the WSGI environ built and passed to Python
    wsgi      plus the app run by py_wsgi:run/5 (bench/wsgi_bench_app.py)
    erlpy     bin/erlpy serve wsgi_bench_app:app (the whole server)
    uwsgi     uWSGI, 2 processes (as bench/bench_wsgi.py starts it)

Each server is started in its own session, warmed up with wrk for 1 s and
measured with `wrk -t2 -c50 -d5s` (GET /; with --close, `Connection: close`
on every request: a new connection each), in rounds (--rounds, default 3),
every server once per round in turn.  Printed per server: requests/s and the
CPU time of all its processes per request, the median over the rounds, with
the split of the BEAM's threads (schedulers, Python workers, the rest, from
/proc/PID/task) and its ratio to uWSGI's in the same round.

    make bench-floor                # or: python3 bench/bench_floor.py --rounds 3
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import bench_servers
import bench_wsgi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EBIN = os.path.join(ROOT, "_build", "default", "lib", "erlpy", "ebin")
KINDS = ("floor", "call", "environ", "wsgi", "erlpy", "uwsgi")


def command(kind, port):
    if kind == "erlpy":
        return [os.path.join(ROOT, "bin", "erlpy"), "serve", "wsgi_bench_app:app",
                "--bind", "127.0.0.1:%d" % port]
    if kind == "uwsgi":
        return ["uwsgi", "--plugin", "python3", "--http-socket", "127.0.0.1:%d" % port,
                "--processes", "2", "--wsgi-file", os.path.join(HERE, "wsgi_bench_app.py"),
                "--callable", "app", "--master", "--disable-logging"]
    mode = "none" if kind == "floor" else kind
    return ["erl", "-noshell", "-pa", EBIN, "-pa", os.path.join(HERE, "ebin"),
            "-run", "bench_floor", "main", str(port), mode]


def wait_ready(port, proc):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def measure(kind, duration, extra):
    port = bench_wsgi.free_port()
    env = dict(os.environ, PYTHONPATH=HERE)
    proc = subprocess.Popen(command(kind, port), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(port, proc)
        bench_wsgi.run_wrk(port, 1, extra=extra)
        beams = [p for p in bench_servers.session_pids(proc.pid) if bench_servers.comm(p) == "beam.smp"]
        t0 = bench_wsgi.thread_cpu(beams[0]) if beams else {}
        c0 = bench_servers.session_cpu(proc.pid)
        w = bench_wsgi.run_wrk(port, duration, extra=extra)
        c1 = bench_servers.session_cpu(proc.pid)
        t1 = bench_wsgi.thread_cpu(beams[0]) if beams else {}
        n = w["requests"]
        split = {k: v / n * 1e6 for k, v in bench_wsgi.split_cpu(t0, t1).items()} if beams else None
        return {"rps": w["rps"], "us": (c1 - c0) / n * 1e6, "split": split}
    finally:
        bench_servers.stop_group(proc, signal.SIGTERM)


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--servers", default=",".join(KINDS))
    ap.add_argument("--close", action="store_true", help="a new connection per request")
    args = ap.parse_args()
    kinds = [k for k in args.servers.split(",") if k]
    subprocess.run(["erlc", "-o", os.path.join(HERE, "ebin"), os.path.join(HERE, "bench_floor.erl")], check=True)
    extra = ("-H", "Connection: close") if args.close else ()
    print("The request path, step by step (GET / -c50, %s): %s"
          % ("Connection: close" if args.close else "keep-alive", bench_servers.describe()))
    results = {k: [] for k in kinds}
    for rnd in range(args.rounds):
        for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
            r = measure(kind, args.duration, extra)
            results[kind].append(r)
            print("  round %d %-8s %8.0f requests/s %6.1f us CPU per request" % (rnd + 1, kind, r["rps"], r["us"]),
                  flush=True)
    print("\n%-8s %12s %10s %22s %12s" % ("server", "requests/s", "CPU/req", "sched/python/rest", "CPU/uWSGI"))
    for kind in kinds:
        rs = results[kind]
        split = "/".join("%.0f" % med([r["split"][p] for r in rs]) for p in ("sched", "python", "rest")) \
            if rs[0]["split"] else ""
        ratio = ""
        if "uwsgi" in results and kind != "uwsgi":
            ratio = "%.2fx" % med([r["us"] / u["us"] for r, u in zip(rs, results["uwsgi"])])
        print("%-8s %12.0f %8.1f us %22s %12s" % (kind, med([r["rps"] for r in rs]), med([r["us"] for r in rs]),
                                                  split, ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
