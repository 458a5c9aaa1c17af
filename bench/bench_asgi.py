#!/usr/bin/env python3
"""ASGI server benchmark: erlpy against uvicorn and hypercorn, in one run.

Run with `make bench-asgi`, or from the repository root (after `make build`):

    /usr/bin/python3 bench/bench_asgi.py [--duration 5] [--plot docs/asgi_bench.png]

Every server serves bench/asgi_bench_app.py on 127.0.0.1, each started as its
own OS process in its own session and stopped by its process group:

    erlpy      bin/erlpy serve asgi_bench_app:app (defaults: 8 contexts, 7 loops)
    erlpy-1    the same with --contexts 2 (one event loop)
    erlpy-w2   --contexts 2 --workers 2: one event loop on each of 2 worker nodes
    uvicorn    python3 -m uvicorn --loop uvloop --http httptools (1 worker)
    uvicorn-2  the same with --workers 2
    hypercorn  hypercorn -k uvloop (1 worker)

Measured per server (a server is started, measured, stopped):

  * requests/s of GET / with `wrk -t2 -c50` and `-c1000` (after a 1 s
    warm-up), for the plain ASGI app and for a FastAPI app, with the CPU
    time the server's processes used per request (/proc/PID/stat);
  * a 1 GiB upload read through receive() (`curl -T FILE -H 'Expect:'`):
    MB/s and the server's CPU seconds per GiB;
  * the latency of GET / (median and 90th percentile of 50 sequential
    requests) idle, then while 500 clients trickle upload bodies.

The figures that matter are the ratios against uvicorn measured in the same
run (the machine is shared and noisy).  Options: --duration (wrk seconds),
--size (upload bytes), --servers (a subset), --json FILE, --plot PNG.
"""
import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_servers import describe, free_port, session_cpu, stop_group  # noqa: E402

PY = "/usr/bin/python3"
SERVERS = ("erlpy", "erlpy-1", "erlpy-w2", "uvicorn", "uvicorn-2", "hypercorn")


def command(kind, app, port):
    bind = "127.0.0.1:%d" % port
    if kind == "erlpy":
        return ["bin/erlpy", "serve", app, "--bind", bind, "--python-path", "bench"]
    if kind == "erlpy-1":
        return ["bin/erlpy", "serve", app, "--bind", bind, "--python-path", "bench", "--contexts", "2"]
    if kind == "erlpy-w2":
        return ["bin/erlpy", "serve", app, "--bind", bind, "--python-path", "bench", "--contexts", "2",
                "--workers", "2"]
    if kind.startswith("uvicorn"):
        cmd = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
               "--http", "httptools", "--no-access-log", "--log-level", "warning", "--app-dir", "bench"]
        return cmd + (["--workers", "2"] if kind == "uvicorn-2" else [])
    if kind == "hypercorn":
        return [PY, "-m", "hypercorn", "-k", "uvloop", "--bind", bind, "--log-level", "warning", app]
    raise ValueError(kind)


class Server:
    def __init__(self, kind, app):
        self.kind, self.app = kind, app
        self.log = tempfile.TemporaryFile()

    def __enter__(self):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=HERE)
        self.proc = subprocess.Popen(command(self.kind, self.app, self.port), cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit("%s exited: %s" % (self.kind, self.log.read().decode()[-2000:]))
            try:
                if get(self.port)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit("%s did not answer within 90 s" % self.kind)

    def cpu(self):
        """CPU seconds (user + system) of the server's processes so far."""
        return session_cpu(self.proc.pid)

    def __exit__(self, *exc):
        stop_group(self.proc, signal.SIGTERM)


def get(port, path="/"):
    """One GET on a new connection: (status, seconds)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1]), time.perf_counter() - t0


def wrk(server, conns, duration):
    url = "http://127.0.0.1:%d/" % server.port
    subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d1s", url], capture_output=True)
    c0 = server.cpu()
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % duration, url],
                         capture_output=True, text=True).stdout
    cpu = server.cpu() - c0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "cpu_us_per_req": cpu / max(total, 1) * 1e6,
            "errors": (int(errors.group(1)) if errors else 0), "socket_errors": sock.group(1) if sock else ""}


def upload(server, path, size):
    c0, t0 = server.cpu(), time.perf_counter()
    out = subprocess.run(["curl", "-s", "--max-time", "600", "-X", "POST", "-H", "Expect:", "-T", path,
                          "http://127.0.0.1:%d/upload" % server.port], capture_output=True, text=True).stdout
    secs, cpu = time.perf_counter() - t0, server.cpu() - c0
    if out.strip() != str(size):
        return {"error": "answered %r" % out[:100]}
    return {"mb_s": size / secs / 1e6, "cpu_s_per_gib": cpu * (1 << 30) / size}


class Tricklers(threading.Thread):
    """n clients each sending an upload body 1 KiB every 100 ms."""

    def __init__(self, port, n):
        super().__init__(daemon=True)
        self.port, self.n = port, n
        self.ready = threading.Event()
        self.connected = 0
        self.loop = asyncio.new_event_loop()

    def run(self):
        self.loop.run_until_complete(self.main())

    async def one(self):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return
        w.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        self.connected += 1
        try:
            while not self.stopping.is_set():
                w.write(b"x" * 1024)
                await w.drain()
                await asyncio.sleep(0.1)
        except OSError:
            pass
        w.close()

    async def main(self):
        self.stopping = asyncio.Event()
        tasks = []
        for _ in range(self.n):
            tasks.append(asyncio.ensure_future(self.one()))
            await asyncio.sleep(0.002)
        self.ready.set()
        await asyncio.gather(*tasks)

    def stop(self):
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.join(30)


def latency(port, n=50):
    times = []
    for _ in range(n):
        status, secs = get(port)
        if status == 200:
            times.append(secs * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9)], "ok": len(times)}


def run(args):
    results = {}
    upload_file = None
    if args.size:
        upload_file = os.path.join(tempfile.gettempdir(), "erlpy_asgi_bench_%d.bin" % os.getpid())
        with open(upload_file, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size >> 20):
                f.write(block)
    try:
        for kind in args.servers:
            r = results[kind] = {}
            with Server(kind, "asgi_bench_app:app") as s:
                for conns in (50, 1000):
                    r["hello_c%d" % conns] = wrk(s, conns, args.duration)
                    print(kind, "hello c%d" % conns, r["hello_c%d" % conns], flush=True)
                if upload_file:
                    r["upload"] = upload(s, upload_file, args.size)
                    print(kind, "upload", r["upload"], flush=True)
                r["latency_idle"] = latency(s.port)
                t = Tricklers(s.port, 500)
                t.start()
                t.ready.wait(60)
                time.sleep(1)
                r["latency_busy"] = latency(s.port)
                r["latency_busy"]["tricklers"] = t.connected
                t.stop()
                print(kind, "latency idle", r["latency_idle"], "with 500 slow uploads", r["latency_busy"],
                      flush=True)
            if args.fastapi:
                with Server(kind, "asgi_bench_app:fastapi_app") as s:
                    for conns in (50, 1000):
                        r["fastapi_c%d" % conns] = wrk(s, conns, args.duration)
                        print(kind, "fastapi c%d" % conns, r["fastapi_c%d" % conns], flush=True)
    finally:
        if upload_file:
            os.unlink(upload_file)
    return results


def report(results):
    base = results.get("uvicorn-2") or results.get("uvicorn")
    lines = ["| server | hello c50 req/s | CPU us/req | hello c1000 | FastAPI c50 | CPU us/req | FastAPI c1000 "
             "| upload MB/s | CPU s/GiB | GET idle ms | GET, 500 slow uploads ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def g(r, k, f):
        v = r.get(k, {}).get(f)
        return v

    for kind, r in results.items():
        def cell(k, f, fmt="%.0f", ratio=True):
            v = g(r, k, f)
            if v is None:
                return "-"
            b = g(base, k, f) if base else None
            return fmt % v + (" (%.2fx)" % (v / b) if ratio and b else "")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            kind, cell("hello_c50", "rps"), cell("hello_c50", "cpu_us_per_req", ratio=False),
            cell("hello_c1000", "rps"), cell("fastapi_c50", "rps"),
            cell("fastapi_c50", "cpu_us_per_req", ratio=False), cell("fastapi_c1000", "rps"),
            cell("upload", "mb_s"), cell("upload", "cpu_s_per_gib", "%.2f", ratio=False),
            cell("latency_idle", "median_ms", "%.2f", ratio=False),
            cell("latency_busy", "median_ms", "%.2f", ratio=False)))
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = list(results)
    panels = [("hello_c50", "rps", "plain ASGI, wrk -c50 (req/s)"),
              ("hello_c1000", "rps", "plain ASGI, wrk -c1000 (req/s)"),
              ("fastapi_c50", "rps", "FastAPI, wrk -c50 (req/s)"),
              ("upload", "cpu_s_per_gib", "1 GiB upload: CPU s/GiB (lower is better)"),
              ("latency_busy", "median_ms", "GET with 500 slow uploads: ms (lower is better)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(17, 3.8))
    colors = ["#a2003d", "#d9668e", "#2a5d9f", "#6c95cc", "#3b7d3b"]
    for ax, (k, f, title) in zip(axes, panels):
        vals = [results[kind].get(k, {}).get(f) or 0 for kind in kinds]
        ax.bar(range(len(kinds)), vals, color=colors[:len(kinds)])
        for i, v in enumerate(vals):
            ax.annotate("%.3g" % v, (i, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels(kinds, fontsize=7, rotation=20)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("ASGI servers, one run: " + describe(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--size", type=int, default=1 << 30)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--no-fastapi", dest="fastapi", action="store_false")
    p.add_argument("--json")
    p.add_argument("--plot")
    args = p.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit("bench_asgi: %s is missing (scripts/setup installs it)" % tool)
    results = run(args)
    print()
    print(describe())
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": describe(), "results": results}, f, indent=1)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
