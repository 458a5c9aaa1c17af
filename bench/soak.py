#!/usr/bin/env python3
"""Soak test: a mixed load against erlpy's HTTP server; fails on growth or on
any wrong answer.

Run with `make soak` (SOAK_SECONDS=180 by default), or after `make build`:

    /usr/bin/python3 bench/soak.py [--seconds 180] [--workers 8]

The server (bench/bench_servers.py: examples/serve.escript, or $ERLPY_CMD)
runs bench/soak_app.py as its own OS process, in its own session, on a free
localhost port. The load, from asyncio tasks in this process:

  get        keep-alive connections, 5-50 GET / each, some pipelined by two
  upload     POST /upload with Content-Length and chunked (random chunk
             sizes, extensions, trailers), 0 B-4 MiB, the answer's sha256
             checked, then a GET on the same connection (framing kept)
  stream     GET /stream, up to 2 MiB in 1 B-1 MiB items (1000 at most), HTTP/1.1
             (chunked) or 1.0 (close-delimited), every byte checked
  abort_body a body cut off by the client (FIN or RST) part way
  abort_resp a 64 MiB streamed response the client stops reading and closes
  malformed  a request that must get one exact 4xx/5xx status
  slow_*     one each at a time: a body trickled at 2 KiB/s, a response read
             at 32 KiB/s, a request head sent a byte at a time over ~3 s

Every answer is checked; a closed socket, a timeout or a wrong status or
body is a wrong answer. Every --interval seconds a row: answers, wrong
answers, requests the app counted, error and crash reports in the server's
log, and the VM's RSS, open fds and threads (/proc/PID).

Growth is measured at rest: after the warm-up (--warmup) the load pauses,
every client connection closes and the VM's fd count settles, and RSS, fds
and threads are read ("base"); the same at the end ("end"). It FAILS (exit
status 1) when end exceeds base by more than --rss-tolerance MB (or
--rss-tolerance-pct percent, whichever is larger), --fd-tolerance fds or
--thread-tolerance threads, on any wrong answer, on any error report in the
server's log, or when the app's response iterables opened and closed differ
at rest (a close() never called).
"""
import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import sys
import time

import bench_servers
from httpc import Wrong, close, connect, get, read_response
from soak_app import HELLO, pattern

KIB, MIB = 1024, 1 << 20
BLOCK = os.urandom(8 * MIB)  # upload bodies are slices of it

# (name, request bytes, expected status or statuses): each must get one of them.
# An unknown Connection option may be ignored (200) or refused (400).
MALFORMED = [
    ("bad request line", b"GARBAGE\r\n\r\n", 400),
    ("binary junk", bytes(range(256)) * 4, 400),
    ("CL and TE", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("CL not digits", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400),
    ("CL huge", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
    ("TE gzip", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("bad chunk size", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("header too big", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("150 headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("two Host", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("URI too long", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("non-UTF-8 Connection", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: \xff\xfe\r\n\r\n", (200, 400)),
    ("non-UTF-8 TE", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \xffchunked\r\n\r\n0\r\n\r\n",
     (400, 501)),
    ("non-UTF-8 CL", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\xff\r\n\r\n", 400),
]

# OTP's default log format, and a bracketed level for launchers that use another.
ERROR_REPORT = re.compile(r"^=(ERROR|CRASH|SUPERVISOR) REPORT|\[(error|critical|alert|emergency)\]", re.M)


class Load:
    """Counters and the pause gate shared by every task."""

    def __init__(self, port, args):
        self.port, self.args = port, args
        self.ok, self.wrong, self.examples = {}, {}, {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.busy = 0
        self.stopping = False

    def good(self, kind, n=1):
        self.ok[kind] = self.ok.get(kind, 0) + n

    def bad(self, kind, why):
        self.wrong[kind] = self.wrong.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < 3:
            ex.append(str(why)[:160])

    def total_ok(self):
        return sum(self.ok.values())

    def total_wrong(self):
        return sum(self.wrong.values())


def expect(cond, why):
    if not cond:
        raise Wrong(why)


# ---------------------------------------------------------------- scenarios


async def op_get(load, rng):
    reader, writer = await connect(load.port)
    try:
        left = rng.randint(5, 50)
        while left:
            pipelined = 2 if left >= 2 and rng.random() < 0.2 else 1
            writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n" * pipelined)
            for _ in range(pipelined):
                status, _, body = await read_response(reader)
                expect(status == 200 and body == HELLO, "GET /: %d %r" % (status, body[:40]))
                load.good("get")
            left -= pipelined
    finally:
        close(writer)


def chunked(body, rng):
    out, i = [], 0
    while i < len(body):
        n = rng.choice((1, 7, 100, 4096, 65536, 300000))
        ext = b";x=y" if rng.random() < 0.1 else b""
        out.append(b"%x%s\r\n%s\r\n" % (len(body[i:i + n]), ext, body[i:i + n]))
        i += n
    out.append(b"0\r\nX-Trailer: 1\r\n\r\n" if rng.random() < 0.2 else b"0\r\n\r\n")
    return b"".join(out)


def upload_size(rng):
    return rng.choice((0, rng.randint(1, 4 * KIB), rng.randint(4 * KIB, 256 * KIB),
                       rng.randint(256 * KIB, 4 * MIB)))


async def send_in_pieces(writer, data, rng):
    i = 0
    while i < len(data):
        n = rng.choice((1000, 16 * KIB, 256 * KIB, len(data)))
        writer.write(data[i:i + n])
        await writer.drain()
        i += n


async def op_upload(load, rng, framing):
    size = upload_size(rng)
    off = rng.randint(0, len(BLOCK) - size)
    body = BLOCK[off:off + size]
    want = b"%d %s" % (size, hashlib.sha256(body).hexdigest().encode())
    reader, writer = await connect(load.port)
    try:
        if framing == "length":
            head = b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % size
            wire = body
        else:
            head = b"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
            wire = chunked(body, rng)
        writer.write(head)
        await send_in_pieces(writer, wire, rng)
        status, _, got = await read_response(reader, b"POST")
        expect(status == 200 and got == want, "upload %s %d B: %d %r" % (framing, size, status, got[:80]))
        writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
        status, _, got = await read_response(reader)
        expect(status == 200 and got == HELLO, "GET after upload: %d %r" % (status, got[:40]))
        load.good("upload_" + framing)
    finally:
        close(writer)


async def op_stream(load, rng):
    size = rng.choice((0, rng.randint(1, 64 * KIB), rng.randint(64 * KIB, 2 * MIB)))
    item = max(rng.choice((1, 100, 4096, 65536, 1 << 20)), size // 1000)  # <= 1000 items
    v10 = rng.random() < 0.2
    reader, writer = await connect(load.port)
    try:
        writer.write(b"GET /stream?size=%d&chunk=%d HTTP/1.%d\r\nHost: soak\r\n\r\n"
                     % (size, item, 0 if v10 else 1))
        status, headers, body = await read_response(reader)
        expect(status == 200 and len(body) == size and body == pattern(0, size),
               "stream %d B by %d, HTTP/1.%d: %d, %d B%s" % (
                   size, item, 0 if v10 else 1, status, len(body),
                   "" if len(body) != size else " (wrong bytes)"))
        load.good("stream")
    finally:
        close(writer)


async def op_abort_body(load, rng):
    size = rng.randint(64 * KIB, 4 * MIB)
    reader, writer = await connect(load.port)
    try:
        if rng.random() < 0.5:
            writer.write(b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % size)
            writer.write(BLOCK[:rng.randint(0, size - 1)])
        else:
            writer.write(b"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(chunked(BLOCK[:size], rng)[:rng.randint(0, size)])
        await writer.drain()
        await asyncio.sleep(rng.random() * 0.2)
    finally:
        close(writer, reset=rng.random() < 0.5)
    load.good("abort_body")


async def op_abort_response(load, rng):
    reader, writer = await connect(load.port)
    try:
        writer.write(b"GET /stream?size=%d HTTP/1.1\r\nHost: soak\r\n\r\n" % (64 * MIB))
        line = await reader.readline()
        expect(line.startswith(b"HTTP/1.1 200"), "stream to abort: %r" % line[:80])
        want = rng.randint(0, 2 * MIB)
        got = 0
        while got < want:
            more = await reader.read(min(65536, want - got))
            expect(more, "stream closed after %d B" % got)
            got += len(more)
    finally:
        close(writer, reset=rng.random() < 0.5)
    load.good("abort_response")


async def op_malformed(load, rng):
    name, data, want = rng.choice(MALFORMED)
    want = want if isinstance(want, tuple) else (want,)
    want_text = " or ".join(map(str, want))
    reader, writer = await connect(load.port)
    try:
        writer.write(data)
        try:
            status, _, _ = await read_response(reader)
        except Wrong as e:
            raise Wrong("%s: %s (want %s)" % (name, e, want_text))
        expect(status in want, "%s: %d, want %s" % (name, status, want_text))
        load.good("malformed")
    finally:
        close(writer)


async def op_slow_upload(load, rng):
    size, rate = 12 * KIB, 2 * KIB
    off = rng.randint(0, len(BLOCK) - size)
    body = BLOCK[off:off + size]
    reader, writer = await connect(load.port)
    try:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % size)
        for i in range(0, size, rate // 4):
            writer.write(body[i:i + rate // 4])
            await writer.drain()
            await asyncio.sleep(0.25)
        status, _, got = await read_response(reader, b"POST")
        want = b"%d %s" % (size, hashlib.sha256(body).hexdigest().encode())
        expect(status == 200 and got == want, "slow upload: %d %r" % (status, got[:80]))
        load.good("slow_upload")
    finally:
        close(writer)


async def op_slow_read(load, rng):
    size = 192 * KIB
    reader, writer = await connect(load.port, limit=4 * KIB)  # asyncio buffers 8 KiB at most
    try:
        writer.write(b"GET /stream?size=%d&chunk=%d HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
                     % (size, 16 * KIB))
        head = b""
        while b"\r\n\r\n" not in head:
            more = await reader.read(1)
            expect(more, "slow read: closed in the head")
            head += more
        expect(head.startswith(b"HTTP/1.1 200"), "slow read: %r" % head[:80])
        data = bytearray()
        while True:  # the chunked framing is kept and checked as a whole below
            more = await reader.read(8 * KIB)
            if not more:
                break
            data += more
            await asyncio.sleep(0.25)  # 32 KiB/s
        reader2 = asyncio.StreamReader()
        reader2.feed_data(head + bytes(data))
        reader2.feed_eof()
        status, _, body = await read_response(reader2)
        expect(status == 200 and body == pattern(0, size), "slow read: %d B" % len(body))
        load.good("slow_read")
    finally:
        close(writer)


async def op_slow_head(load, rng):
    reader, writer = await connect(load.port)
    try:
        for b in b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: yes\r\nConnection: close\r\n\r\n":
            writer.write(bytes((b,)))
            await writer.drain()
            await asyncio.sleep(0.05)
        status, _, body = await read_response(reader)
        expect(status == 200 and body == HELLO, "slow head: %d %r" % (status, body[:40]))
        load.good("slow_head")
    finally:
        close(writer)


MIX = [(op_get, 30), (lambda l, r: op_upload(l, r, "length"), 14),
       (lambda l, r: op_upload(l, r, "chunked"), 14), (op_stream, 12),
       (op_abort_body, 8), (op_abort_response, 8), (op_malformed, 14)]
NAMES = ["get", "upload_length", "upload_chunked", "stream", "abort_body", "abort_response",
         "malformed"]


async def worker(load, seed, ops, names):
    rng = random.Random(seed)
    fns, weights = [o for o, _ in ops], [w for _, w in ops]
    while not load.stopping:
        await load.gate.wait()
        if load.stopping:
            return
        i = rng.choices(range(len(fns)), weights)[0]
        load.busy += 1
        try:
            await asyncio.wait_for(fns[i](load, rng), load.args.op_timeout)
        except asyncio.TimeoutError:
            load.bad(names[i], "no answer within %d s" % load.args.op_timeout)
        except (Wrong, OSError) as e:
            load.bad(names[i], e)
        except Exception as e:  # a bug here must not quietly end a client
            load.bad(names[i], "client error: %r" % e)
        finally:
            load.busy -= 1


# ---------------------------------------------------------------- sampling


class Sampler:
    def __init__(self, server, load):
        self.server, self.load = server, load
        self.t0 = time.monotonic()
        self.rows = []
        self.last_ok, self.last_t = 0, self.t0

    async def app_requests(self):
        try:
            status, body = await get(self.load.port, "/stats")
            return json.loads(body) if status == 200 else {}
        except (Wrong, ValueError):
            return {}

    def log_errors(self):
        return len(ERROR_REPORT.findall(self.server.log_text()))

    async def row(self, phase):
        now = time.monotonic()
        s = bench_servers.sample(self.server.pid)
        stats = await self.app_requests()
        ok = self.load.total_ok()
        r = dict(s, t=now - self.t0, phase=phase, ok=ok, wrong=self.load.total_wrong(),
                 rate=(ok - self.last_ok) / max(now - self.last_t, 1e-9),
                 app=stats.get("requests", -1), stats=stats, log_errors=self.log_errors())
        self.last_ok, self.last_t = ok, now
        self.rows.append(r)
        print("%6.0f  %-5s %9d %7.0f %6d %9d %7d %8.1f %5d %7d" % (
            r["t"], phase, ok, r["rate"], r["wrong"], r["app"], r["log_errors"],
            r["rss_mb"], r["fds"], r["threads"]), flush=True)
        return r

    @staticmethod
    def header():
        print("%6s  %-5s %9s %7s %6s %9s %7s %8s %5s %7s" % (
            "t s", "phase", "answers", "ans/s", "wrong", "app reqs", "log err", "RSS MB",
            "fds", "threads"))


async def quiesce(load, sampler, timeout=90):
    """Pauses the load; waits for every op to end and the VM's fds to settle."""
    load.gate.clear()
    deadline = time.monotonic() + timeout
    while load.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if load.busy:
        load.bad("quiesce", "%d ops still running %d s after the pause" % (load.busy, timeout))
    seen = []
    while time.monotonic() < deadline:
        seen.append(bench_servers.sample(sampler.server.pid)["fds"])
        if len(seen) >= 6 and len(set(seen[-6:])) == 1:
            break
        await asyncio.sleep(0.5)


async def run_phase(load, sampler, seconds, interval, phase):
    load.gate.set()
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(interval, left))
        if not sampler.server.alive():
            raise SystemExit("soak: the server exited:\n" + sampler.server.log_text()[-3000:])
        await sampler.row(phase)


async def soak(server, args):
    load = Load(server.port, args)
    sampler = Sampler(server, load)
    tasks = [asyncio.ensure_future(worker(load, 1000 + i, MIX, NAMES)) for i in range(args.workers)]
    for i, (op, name) in enumerate(((op_slow_upload, "slow_upload"), (op_slow_read, "slow_read"),
                                    (op_slow_head, "slow_head"))):
        for j in range(args.slow):
            tasks.append(asyncio.ensure_future(worker(load, 2000 + 10 * i + j, [(op, 1)], [name])))
    Sampler.header()
    await sampler.row("start")
    await run_phase(load, sampler, args.warmup, args.interval, "warm")
    await quiesce(load, sampler)
    base = await sampler.row("base")
    await run_phase(load, sampler, args.seconds - args.warmup, args.interval, "load")
    await quiesce(load, sampler)
    end = await sampler.row("end")
    load.stopping = True
    load.gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Still serving after all that?
    try:
        status, body = await get(server.port, "/")
        expect(status == 200 and body == HELLO, "GET / at the end: %d %r" % (status, body[:40]))
    except Wrong as e:
        load.bad("final_get", e)
    return load, sampler, base, end


def verdict(load, sampler, base, end, args):
    fails = []
    rss_allowed = max(args.rss_tolerance, base["rss_mb"] * args.rss_tolerance_pct / 100)
    print()
    print("at rest      %9s %9s %9s" % ("base", "end", "growth"))
    for key, fmt, allowed in (("rss_mb", "%.1f", rss_allowed), ("fds", "%d", args.fd_tolerance),
                              ("threads", "%d", args.thread_tolerance)):
        grow = end[key] - base[key]
        bad = grow > allowed
        print("%-12s %9s %9s %9s  (allowed %s)%s" % (
            key, fmt % base[key], fmt % end[key], fmt % grow, fmt % allowed, "  GROWTH" if bad else ""))
        if bad:
            fails.append("%s grew by %s (allowed %s)" % (key, fmt % grow, fmt % allowed))
    peak = max(r["rss_mb"] for r in sampler.rows)
    print("peak RSS under load: %.1f MB" % peak)
    print()
    print("%-16s %9s %7s" % ("kind", "answers", "wrong"))
    for kind in sorted(set(load.ok) | set(load.wrong)):
        print("%-16s %9d %7d" % (kind, load.ok.get(kind, 0), load.wrong.get(kind, 0)))
        for ex in load.examples.get(kind, []):
            print("    e.g. " + ex)
    if load.total_wrong():
        fails.append("%d wrong answers" % load.total_wrong())
    st = end["stats"]
    if st.get("streams_opened") != st.get("streams_closed"):
        fails.append("at rest the app's streams opened %s, closed %s (a close() missed)"
                     % (st.get("streams_opened"), st.get("streams_closed")))
    errors = sampler.log_errors()
    if errors:
        fails.append("%d error/crash reports in the server's log (%s)" % (errors, sampler.server.log.name))
    print("app counters at rest: %s" % json.dumps(st))
    return fails


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS") or 180),
                    help="total load time, warm-up included (env SOAK_SECONDS)")
    ap.add_argument("--warmup", type=int, help="seconds before the base sample (default 1/6, >= 15)")
    ap.add_argument("--interval", type=int, default=10, help="seconds between rows")
    ap.add_argument("--workers", type=int, default=8, help="concurrent mixed-load clients")
    ap.add_argument("--slow", type=int, default=1, help="slow clients of each kind at a time")
    ap.add_argument("--op-timeout", type=int, default=60)
    ap.add_argument("--rss-tolerance", type=float, default=32, help="MB")
    ap.add_argument("--rss-tolerance-pct", type=float, default=10)
    ap.add_argument("--fd-tolerance", type=int, default=3)
    ap.add_argument("--thread-tolerance", type=int, default=2)
    ap.add_argument("--json", help="write the samples and counts here")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = max(15, args.seconds // 6)
    args.seconds = max(args.seconds, args.warmup + args.interval)
    t0 = time.monotonic()
    print("soak: %s" % bench_servers.describe())
    print("server: %s serving bench/soak_app.py; %d workers + %d slow client(s) of each kind; "
          "%d s (warm-up %d s)" % (os.environ.get("ERLPY_CMD") or bench_servers.ERLPY_CMD,
                                  args.workers, args.slow, args.seconds, args.warmup))
    server = bench_servers.Server("erlpy").start()
    print("server pid %d (beam.smp), port %d, log %s" % (server.pid, server.port, server.log.name))
    try:
        load, sampler, base, end = asyncio.run(soak(server, args))
        fails = verdict(load, sampler, base, end, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": bench_servers.describe(), "args": vars(args), "rows": sampler.rows,
                           "ok": load.ok, "wrong": load.wrong, "examples": load.examples,
                           "fails": fails}, f, indent=1)
    finally:
        server.stop()
    print("\nsoak: %d answers checked in %.0f s (%s)" % (load.total_ok(), time.monotonic() - t0, bench_servers.describe()))
    if fails:
        print("soak: FAILED")
        for f in fails:
            print("  - " + f)
        return 1
    server.remove_log()
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
