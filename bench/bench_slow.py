#!/usr/bin/env python3
"""Slow-client benchmark: how many slow clients of each kind a server holds
before a normal GET takes more than 1 s; erlpy, gunicorn and uWSGI in one run.

Run with `make bench-slow`, or after `make build`:

    /usr/bin/python3 bench/bench_slow.py [--servers erlpy,gunicorn,uwsgi]
        [--ramp 2,4,8,16,32,64,128,256,512] [--json FILE]

The servers (bench/bench_servers.py) serve bench/soak_app.py on free
localhost ports, each in its own session:

    erlpy     bin/erlpy serve (or $ERLPY_CMD), erlpy_http's defaults
    gunicorn  -k gthread --threads 8 -w 2   (16 threads in 2 processes)
    uWSGI     --processes 2 --master, --http-socket (one request at a time
              per process), its defaults otherwise

The slow clients (raw non-blocking sockets from asyncio, this process):

    trickle   POST /upload with Content-Length: 65536, the body sent at
              --trickle-rate bytes/s (default 1280, just above erlpy's
              default min_body_rate of 1024), a few bytes every 0.25 s
    slowread  GET /stream of 4 GB (64 KiB items) with SO_RCVBUF 4096,
              reading --read-rate bytes/s (default 300), every 0.5 s

For each server and kind a fresh server is started; then for each count N
of the ramp: N slow clients connect and start, --settle seconds pass, then
--gets (5) normal `GET /` requests, one after the other, each on a new
connection and timed from connect to the last byte (given up after
--get-timeout s). A step passes when every GET took under 1 s; the ramp
stops at the first step that fails.
Between steps the slow clients close and the server must answer a GET under
1 s again (else it is restarted). "held" is how many slow clients were
still connected without an answer when the GETs started / after them: a
server may also cut slow clients off.

Reported per server and kind: the largest N that passed, and at each step
the slowest GET and how many took 1 s or more. About 2-4 minutes.
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import time

import bench_servers
from httpc import HOST, Wrong, get
from soak_app import HELLO

KINDS = ("trickle", "slowread")


class Slow:
    """One slow client: connect, send the head, then trickle or read slowly."""

    def __init__(self, port, kind, args):
        self.port, self.kind, self.args = port, kind, args
        self.started = False  # connected and head sent
        self.ended = None  # why it stopped being held: "eof", "answered", "error"
        self.sock = None

    async def run(self, stop):
        loop = asyncio.get_running_loop()
        sock = self.sock = socket.socket()
        sock.setblocking(False)
        if self.kind == "slowread":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, self.port)), self.args.connect_timeout)
            if self.kind == "trickle":
                size = self.args.trickle_size
                await loop.sock_sendall(sock, b"POST /upload HTTP/1.1\r\nHost: slow\r\n"
                                              b"Content-Length: %d\r\n\r\n" % size)
                self.started = True
                per, sent = max(1, self.args.trickle_rate // 4), 0
                while not stop.is_set() and sent < size:
                    n = min(per, size - sent)
                    await loop.sock_sendall(sock, b"x" * n)
                    sent += n
                    await asyncio.sleep(0.25)
                    self.check()
            else:
                await loop.sock_sendall(sock, b"GET /stream?size=4000000000&chunk=65536 HTTP/1.1\r\n"
                                              b"Host: slow\r\n\r\n")
                self.started = True
                per = max(1, self.args.read_rate // 2)
                while not stop.is_set() and not self.ended:
                    await asyncio.sleep(0.5)
                    try:
                        if sock.recv(per) == b"":
                            self.ended = "eof"
                    except BlockingIOError:
                        pass
        except (OSError, asyncio.TimeoutError):
            self.ended = self.ended or "error"

    def check(self):
        """A trickler never reads: has the server answered or closed?"""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
            self.ended = "answered" if data else "eof"
        except BlockingIOError:
            pass
        except OSError:
            self.ended = "error"

    def held(self):
        if self.kind == "trickle" and self.started and not self.ended:
            self.check()
        return self.started and not self.ended

    def close(self):
        if self.sock is not None:
            self.sock.close()


async def timed_get(port, timeout):
    t0 = time.monotonic()
    try:
        status, body = await get(port, "/", timeout)
        if status == 200 and body == HELLO:
            return time.monotonic() - t0
    except Wrong:
        pass
    return None  # no (right) answer within the timeout


async def step(port, kind, n, args):
    stop = asyncio.Event()
    clients = [Slow(port, kind, args) for _ in range(n)]
    tasks = [asyncio.ensure_future(c.run(stop)) for c in clients]
    try:
        deadline = time.monotonic() + args.connect_timeout
        while time.monotonic() < deadline and not all(c.started or c.ended for c in clients):
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.settle)
        started = sum(c.started for c in clients)
        held = sum(c.held() for c in clients)
        lats = [await timed_get(port, args.get_timeout) for _ in range(args.gets)]
        held_after = sum(c.held() for c in clients)
    finally:
        stop.set()
        for c in clients:
            c.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    worst = max(x if x is not None else float("inf") for x in lats)
    over = sum(1 for x in lats if x is None or x >= 1.0)
    return {"n": n, "started": started, "held": held, "held_after": held_after, "gets": lats,
            "worst": worst, "over": over, "passed": over == 0}


async def recovered(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lat = await timed_get(port, 2)
        if lat is not None and lat < 1.0:
            return True
        await asyncio.sleep(0.5)
    return False


def fmt_lat(x):
    return ">%gs" % ARGS.get_timeout if x is None or x == float("inf") else "%.3f" % x


def ramp(kind_server, kind, args):
    out = []
    server = bench_servers.Server(kind_server).start()
    try:
        for n in args.ramp:
            r = asyncio.run(step(server.port, kind, n, args))
            out.append(r)
            print("  %-8s %-8s N=%-4d started %4d held %4d/%4d  GETs: %s  %s" % (
                bench_servers.LABEL[kind_server], kind, n, r["started"], r["held"], r["held_after"],
                " ".join(fmt_lat(x) for x in r["gets"]),
                "ok" if r["passed"] else "%d over 1 s" % r["over"]), flush=True)
            if not server.alive():
                print("  %s exited (status %s); its log:\n%s" % (
                    bench_servers.LABEL[kind_server], server.proc.returncode,
                    server.log_text()[-2000:]), flush=True)
                r["passed"] = False
                break
            if not r["passed"]:
                break
            if not asyncio.run(recovered(server.port, args.recover_timeout)):
                print("  %s did not recover within %d s; restarted" % (
                    bench_servers.LABEL[kind_server], args.recover_timeout), flush=True)
                server.stop()
                server = bench_servers.Server(kind_server).start()
    finally:
        server.stop()
        server.remove_log()
    return out


def report(results, args):
    print()
    print("Largest count of slow clients at which a normal GET still answered under 1 s "
          "(all of %d GETs):" % args.gets)
    print("%-10s %18s %18s" % ("", "trickle", "slowread"))
    for s, kinds in results.items():
        cells = []
        for kind in KINDS:
            steps = kinds.get(kind)
            if not steps:
                cells.append("-")
                continue
            passed = [r for r in steps if r["passed"]]
            if not passed:
                cells.append("< %d" % steps[0]["n"])
                continue
            best = passed[-1]
            cell = (">= %d" if best is steps[-1] else "%d") % best["n"]
            if best["held"] < best["n"]:  # the others were answered or closed
                cell += " (%d held)" % best["held"]
            cells.append(cell)
        print("%-10s %18s %18s" % (bench_servers.LABEL[s], cells[0], cells[1]))
    print()
    print("GET latency in s, the slowest of the step's GETs; (k/n): k of n GETs over 1 s; "
          "'>%gs': no answer in time; [h held]: only h slow clients still held when the GETs "
          "began; blank: not run (ramp stopped):" % args.get_timeout)
    cols = [(s, k) for s in results for k in KINDS if k in results[s]]
    print("%6s " % "N" + "".join("%22s" % ("%s %s" % (bench_servers.LABEL[s], k)) for s, k in cols))
    for n in args.ramp:
        row = []
        for s, k in cols:
            r = [x for x in results[s][k] if x["n"] == n]
            cell = ""
            if r:
                r = r[0]
                cell = fmt_lat(r["worst"])
                if r["over"]:
                    cell += " (%d/%d)" % (r["over"], len(r["gets"]))
                if r["held"] < n:
                    cell += " [%d held]" % r["held"]
            row.append("%22s" % cell)
        print("%6d " % n + "".join(row))


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="erlpy,gunicorn,uwsgi")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--ramp", default="2,4,8,16,32,64,128,256,512")
    ap.add_argument("--trickle-rate", type=int, default=1280, help="bytes/s")
    ap.add_argument("--trickle-size", type=int, default=65536, help="body bytes")
    ap.add_argument("--read-rate", type=int, default=300, help="bytes/s")
    ap.add_argument("--settle", type=float, default=2.0, help="s after the slow clients start")
    ap.add_argument("--gets", type=int, default=5)
    ap.add_argument("--get-timeout", type=float, default=2.0)
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--recover-timeout", type=int, default=20)
    ap.add_argument("--json", help="write the raw results here")
    args = ARGS = ap.parse_args()
    args.ramp = [int(x) for x in args.ramp.split(",") if x]
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s != "erlpy" and not shutil.which(s):
            raise SystemExit("bench_slow: %s not found (make setup installs it)" % s)
    if "erlpy" in servers and not os.environ.get("ERLPY_CMD") and not os.path.exists(
            os.path.join(bench_servers.ROOT, "_build/default/lib/erlpy/ebin/erlpy_http.beam")):
        raise SystemExit("bench_slow: run `make build` first")
    kinds = [k for k in args.kinds.split(",") if k]
    t0 = time.monotonic()
    print("slow clients: %s" % bench_servers.describe())
    print("trickle: 64 KiB body at %d B/s; slowread: 4 GB stream read at %d B/s; "
          "settle %.1f s; %d GETs per step, %g s timeout" % (
              args.trickle_rate, args.read_rate, args.settle, args.gets, args.get_timeout))
    if "erlpy" in servers:
        print("erlpy: %s" % (os.environ.get("ERLPY_CMD") or bench_servers.ERLPY_CMD))
    results = {}
    for s in servers:
        for kind in kinds:
            results.setdefault(s, {})[kind] = ramp(s, kind, args)
    report(results, args)
    print("\nwhole benchmark: %.0f s; %s" % (time.monotonic() - t0, bench_servers.describe()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench_servers.describe(), "args": vars(args), "results": results}, f, indent=1,
                      default=str)
    return 0


ARGS = None

if __name__ == "__main__":
    sys.exit(main())
