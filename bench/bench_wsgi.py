#!/usr/bin/env python3
"""WSGI server benchmark: erlpy against gunicorn and uWSGI, in one run.

Run with `make bench-wsgi`, or from the repository root (after `make build`):

    /usr/bin/python3 bench/bench_wsgi.py [--rounds 3] [--plot docs/wsgi_bench.png]

All servers serve the same app, bench/wsgi_bench_app.py, on 127.0.0.1:

    erlpy     erl -noshell -pa _build/default/lib/erlpy/ebin -eval ...
              (erlpy_http:start/1 with its defaults, 8 contexts)
    gunicorn  gunicorn -w 2 -b 127.0.0.1:PORT wsgi_bench_app:app   (2 sync workers)
    uWSGI     uwsgi --plugin python3 --http-socket 127.0.0.1:PORT --processes 2
                    --wsgi-file bench/wsgi_bench_app.py --callable app --master
                    --disable-logging

plus, for uploads only, a null sink (a few lines of Python that read the body
into one buffer and drop it): what curl and the loopback can do at all.

Measured per server and round (a server is started, measured, stopped; the
order of the servers rotates from round to round so that a noisy spell on the
shared machine hits all of them):

  * GET / with `wrk -t2 -c50 -d5s` (after a 1 s warm-up): requests/s;
  * a 1 GiB upload with `curl -s -T FILE -H 'Expect:' URL`, with Content-Length
    and with `-H 'Transfer-Encoding: chunked'`; the app reads wsgi.input in
    64 KiB chunks and answers the byte count, which must be 1073741824;
  * the same two uploads with curl's defaults (`curl -s -T FILE URL`), which
    send `Expect: 100-continue` and wait up to 1 s for `100 Continue`;
  * the CPU time the server's processes used meanwhile (/proc), so that a
    server held back by the client still shows what it costs.

uWSGI 2.0 gives wsgi.input no bytes for a chunked request body (it only knows
Content-Length); the script checks that, then measures uWSGI's own chunked API,
uwsgi.chunked_read(), instead (the app's `/upload?api=uwsgi`).

The figures that matter are the ratios printed at the end, measured in this
run. It takes about 2 minutes with the defaults. Options: --rounds,
--duration (wrk seconds), --size (upload bytes), --servers (a subset of
erlpy,gunicorn,uwsgi,sink), --json FILE (raw results), --plot PNG (through
bench/plot_wsgi.py). For experiments with erlpy: --contexts N,
--erl-flags '...' (e.g. '+sbwt none', or '-pa DIR' to try modified modules:
the last -pa wins), and --profile threads|msacc|eprof|perf, which writes one
file per measurement to --profile-dir (default /tmp/erlpy_wsgi_profile):
beam.smp CPU and sleeps per request by thread, plus msacc:print/0, eprof's
totals or a perf report
(`perf record -e cpu-clock -g` of beam.smp, JIT symbols through +JPperf map).
"""
import argparse
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP_FILE = os.path.join(HERE, "wsgi_bench_app.py")
EBIN = os.path.join(ROOT, "_build", "default", "lib", "erlpy", "ebin")
GIB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
SERVERS = ("erlpy", "gunicorn", "uwsgi")
LABEL = {"erlpy": "erlpy", "gunicorn": "gunicorn", "uwsgi": "uWSGI", "sink": "null sink"}

# The erlpy launcher. Commands arrive on stdin, one a line: "prof start",
# "prof stop" (prints the profile between @@prof lines), "quit" (or EOF).
ERLPY_LAUNCHER = r"""
ok = application:load(erlpy),
ok = application:set_env(erlpy, python_path, [os:getenv("BENCH_DIR")]),
case os:getenv("BENCH_CONTEXTS", "") of
    "" -> ok;
    N -> ok = application:set_env(erlpy, contexts, list_to_integer(N))
end,
{ok, _} = application:ensure_all_started(erlpy),
{ok, Server} = erlpy_http:start(#{app => <<"wsgi_bench_app:app">>, port => 0}),
io:format("@@port ~b~n", [erlpy_http:port(Server)]),
Prof = os:getenv("BENCH_PROFILE", ""),
Start = fun("msacc") -> msacc:reset(), msacc:start();
           ("eprof") -> {ok, _} = eprof:start(), profiling = eprof:start_profiling(erlang:processes());
           (_) -> ok
        end,
Stop = fun("msacc") -> msacc:stop(), msacc:print();
          ("eprof") -> profiling_stopped = eprof:stop_profiling(),
                       eprof:analyze(total, [{filter, [{time, 2000.0}]}]), eprof:stop();
          (_) -> ok
       end,
Loop = fun L() ->
           case io:get_line("") of
               "prof start\n" -> Start(Prof), L();
               "prof stop\n" -> io:format("@@prof-begin~n"), Stop(Prof), io:format("~n@@prof-end~n"), L();
               _ -> ok
           end
       end,
Loop(),
ok = erlpy_http:stop(Server, 2000),
halt(0).
"""

# ---------------------------------------------------------------- the null sink


def sink_main(port):
    """A null HTTP sink: reads each request body (Content-Length or chunked)
    into one reused buffer, drops it and answers its size. One connection at
    a time. The chunked parser only looks at chunk boundaries."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    break
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            if b"content-length" in fields:
                left = int(fields[b"content-length"]) - len(rest)
                total = int(fields[b"content-length"])
                while left > 0:
                    n = conn.recv_into(view, min(left, len(buf)))
                    if not n:
                        break
                    left -= n
            elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                total, pending, skip = 0, rest, 0
                while True:
                    if skip and pending:  # chunk data already received
                        take = min(skip, len(pending))
                        pending, skip = pending[take:], skip - take
                    elif skip:  # chunk data: read in place, dropped
                        n = conn.recv_into(view, min(skip, len(buf)))
                        if not n:
                            break
                        skip -= n
                    elif b"\r\n" in pending:  # a chunk-size line
                        line, _, pending = pending.partition(b"\r\n")
                        size = int(line.split(b";")[0], 16)
                        if size == 0:
                            break
                        total, skip = total + size, size + 2
                    else:  # small reads here, so chunk data is rarely copied
                        more = conn.recv(64)
                        if not more:
                            break
                        pending += more
            else:
                total = 0
            body = str(total).encode()
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
            except OSError:
                pass


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_cpu(sid):
    """CPU seconds (user + system) of all live processes in session sid."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6: session id
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / TICK


def task_files(pid, name):
    """(tid, text of /proc/PID/task/TID/NAME) for each thread still there."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/%s" % (pid, tid, name)) as f:
                yield tid, f.read()
        except OSError:
            continue


def thread_cpu(pid):
    """{tid: (name, cpu seconds)} for the threads of one process."""
    out = {}
    for tid, raw in task_files(pid, "stat"):
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def thread_sleeps(pid):
    """{tid: voluntary context switches} for the threads of one process."""
    out = {}
    for tid, text in task_files(pid, "status"):
        n = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", text, re.M)
        out[int(tid)] = int(n.group(1)) if n else 0
    return out


class Server:
    def __init__(self, kind, args):
        self.kind, self.args = kind, args
        self.proc, self.port, self.beam = None, None, None
        self.seen = []
        self.log = tempfile.TemporaryFile()

    def start(self):
        env = dict(os.environ)
        if self.kind == "erlpy":
            env.update(BENCH_DIR=HERE, BENCH_PROFILE=self.args.profile or "",
                       BENCH_CONTEXTS=str(self.args.contexts or ""))
            cmd = ["erl", "-noshell", "-pa", EBIN] + self.args.erl_flags.split()
            if self.args.profile == "perf":
                cmd += ["+JPperf", "map"]
            cmd += ["-eval", ERLPY_LAUNCHER]
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.log, text=True,
                                         start_new_session=True)
            # Everything the VM prints is read at once (a full pipe would
            # block its logger); profile text is picked out of it.
            self.lines, self.cond = [], threading.Condition()
            threading.Thread(target=self.read_stdout, daemon=True).start()
            line = self.next_line(lambda l: l.startswith("@@port"), 60)
            if not line:
                self.fail("erlpy did not start")
            self.port = int(line.split()[1])
        else:
            self.port = free_port()
            if self.kind == "gunicorn":
                cmd = ["gunicorn", "-w", "2", "-b", "127.0.0.1:%d" % self.port, "wsgi_bench_app:app"]
                cwd = HERE
            elif self.kind == "uwsgi":
                cmd = ["uwsgi", "--plugin", "python3", "--http-socket", "127.0.0.1:%d" % self.port,
                       "--processes", "2", "--wsgi-file", APP_FILE, "--callable", "app",
                       "--master", "--disable-logging"]
                cwd = ROOT
            else:
                cmd = [sys.executable, os.path.abspath(__file__), "--sink", str(self.port)]
                cwd = ROOT
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=self.log,
                                         start_new_session=True)
        self.wait_ready()
        if self.kind == "erlpy":
            for pid in os.listdir("/proc"):
                if pid.isdigit() and self.sid_of(int(pid)) == self.proc.pid:
                    try:
                        with open("/proc/%s/comm" % pid) as f:
                            if f.read().strip() == "beam.smp":
                                self.beam = int(pid)
                    except OSError:
                        pass

    def read_stdout(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def next_line(self, match, timeout):
        """Waits for a line that matches; returns it, or None (EOF, timeout).
        Earlier lines are dropped (those of a profile are kept by caller)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.lines:
                    line = self.lines.pop(0)
                    if line is None:
                        self.lines.append(None)
                        return None
                    self.seen.append(line)
                    if match(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    @staticmethod
    def sid_of(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[3])
        except OSError:
            return None

    def wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail("%s exited with status %s" % (self.kind, self.proc.returncode))
            try:
                if self.kind == "sink":
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                with urllib.request.urlopen("http://127.0.0.1:%d/" % self.port, timeout=2) as r:
                    if r.read() == b"Hello, World!":
                        return
            except OSError:
                time.sleep(0.1)
        self.fail("%s did not answer within 30 s" % self.kind)

    def fail(self, why):
        self.stop()
        self.log.seek(0)
        sys.stderr.write(self.log.read().decode(errors="replace")[-3000:])
        raise SystemExit("bench_wsgi: " + why)

    def cpu(self):
        return session_cpu(self.proc.pid)

    def command(self, line):
        """erlpy only: send a launcher command, return what it printed for it."""
        self.seen = []
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        if line != "prof stop":
            return ""
        self.next_line(lambda l: l.startswith("@@prof-end"), 300)
        text = "".join(self.seen)
        return text.split("@@prof-begin\n", 1)[-1].replace("@@prof-end\n", "")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            if self.kind == "erlpy":
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            elif self.kind == "uwsgi":
                self.proc.send_signal(signal.SIGINT)  # SIGTERM reloads uWSGI
            else:
                self.proc.send_signal(signal.SIGINT)  # gunicorn: quick shutdown
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.beam and self.args.profile == "perf":  # the JIT's symbols, for perf
            try:
                os.unlink("/tmp/perf-%d.map" % self.beam)
            except OSError:
                pass
        # Leftover processes of the session (workers): by their own ids.
        for pid in os.listdir("/proc"):
            if pid.isdigit() and self.sid_of(int(pid)) == self.proc.pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


# ---------------------------------------------------------------- measurements


def run_wrk(port, duration, threads=2, conns=50, extra=(), path="/"):
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration]
                         + list(extra) + ["http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = re.search(r"Latency\s+([\d.]+\w+)", out)
    return {"rps": rps, "requests": reqs,
            "errors": dict(zip(("connect", "read", "write", "timeout"),
                               map(int, errs.groups()))) if errs else {},
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "latency_avg": lat.group(1) if lat else "?"}


# The wrk workloads: name -> (label, connections, extra wrk arguments, path).
# post10k/post100k POST a body of that size to /echo, which reads wsgi.input
# and answers it back (a Lua script of wrk's sets method and body).
WORKLOADS = {
    "c50": ("GET / -c50 keep-alive", 50, (), "/"),
    "c1000": ("GET / -c1000 keep-alive", 1000, (), "/"),
    "close": ("GET / -c50 no keep-alive", 50, ("-H", "Connection: close"), "/"),
    "post10k": ("POST 10 KB echo -c50", 50, ("-s", "@post10k"), "/echo"),
    "post100k": ("POST 100 KB echo -c50", 50, ("-s", "@post100k"), "/echo"),
}
WRK_SCRIPTS = {}


def wrk_args(extra):
    out = []
    for a in extra:
        out.append(WRK_SCRIPTS[a[1:]] if a.startswith("@") else a)
    return out


def make_wrk_script(tmp, name, size):
    path = os.path.join(tmp, name + ".lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n' % size)
    WRK_SCRIPTS[name] = path


def classify(name):
    """Which part of erlpy a beam.smp thread belongs to, by its name."""
    if name.startswith("erlpy-w"):
        return "python"
    if "sched" in name:  # N_scheduler, N_dirty_cpu_sch..., N_dirty_io_sch...
        return "sched"
    return "rest"


def switches(pid):
    """{part: voluntary context switches} of a process's threads: each is a
    thread going to sleep, so about one wake-up each (/proc/PID/task/*/status)."""
    out = {"sched": 0, "python": 0, "rest": 0}
    for tid, text in task_files(pid, "status"):
        name = re.search(r"^Name:\s*(.*)$", text, re.M).group(1)
        n = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", text, re.M)
        out[classify(name)] += int(n.group(1)) if n else 0
    return out


def split_cpu(before, after):
    out = {"sched": 0.0, "python": 0.0, "rest": 0.0}
    for tid, (name, cpu) in after.items():
        out[classify(name)] += cpu - before.get(tid, (name, 0.0))[1]
    return out


def run_curl(port, path, chunked, expect, timeout=120):
    """One upload; returns (seconds, answer text, curl exit status)."""
    cmd = ["curl", "-s", "-T", UPLOAD, "-w", "\n@@%{time_total}"]
    if not expect:
        cmd += ["-H", "Expect:"]
    if chunked:
        cmd += ["-H", "Transfer-Encoding: chunked"]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    body, _, t = p.stdout.rpartition("\n@@")
    try:
        secs = float(t)
    except ValueError:
        secs = wall
    return secs, body.strip(), p.returncode


def measure(server, args, rnd, results, notes):
    kind = server.kind
    rec = results.setdefault(kind, {})
    prof = args.profile if kind == "erlpy" else None

    def profiled(label, fn):
        if prof in ("msacc", "eprof"):
            server.command("prof start")
        perf = None
        if prof == "perf" and server.beam:
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(server.beam),
                                     "-o", os.path.join(args.profile_dir, label + ".perf.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threads0 = thread_cpu(server.beam) if prof and server.beam else {}
        sleeps0 = thread_sleeps(server.beam) if prof and server.beam else {}
        value = fn()
        if prof:
            text = ""
            if prof in ("msacc", "eprof"):
                text = server.command("prof stop")
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait()
                data = os.path.join(args.profile_dir, label + ".perf.data")
                text += subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                        "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.5"],
                                       capture_output=True, text=True).stdout
            text += threads_report(threads0, thread_cpu(server.beam) if server.beam else {},
                                   sleeps0, thread_sleeps(server.beam) if server.beam else {},
                                   value.get("requests", 0) if isinstance(value, dict) else 0)
            path = os.path.join(args.profile_dir, "%s.r%d.%s.txt" % (label, rnd, prof))
            with open(path, "w") as f:
                f.write(text)
        return value

    for wl in ([] if kind == "sink" else args.workloads):
        label, conns, extra, path = WORKLOADS[wl]
        extra = wrk_args(extra)
        run_wrk(server.port, 1, conns=conns, extra=extra, path=path)  # warm-up
        c0 = server.cpu()
        t0 = thread_cpu(server.beam) if server.beam else {}
        s0 = switches(server.beam) if server.beam else {}
        w = profiled(wl, lambda: run_wrk(server.port, args.duration, conns=conns,
                                         extra=extra, path=path))
        w["cpu"] = server.cpu() - c0
        if server.beam:
            w["split"] = split_cpu(t0, thread_cpu(server.beam))
            s1 = switches(server.beam)
            w["switches"] = {k: s1[k] - s0.get(k, 0) for k in s1}
        rec.setdefault("wl", {}).setdefault(wl, []).append(w)
        if wl == "c50":
            rec.setdefault("get", []).append(w)  # the plot's GET figure
        n = max(w["requests"], 1)
        split = ""
        if "split" in w:
            split = "  (scheduler %.0f, Python workers %.0f, rest %.0f; sleeps/req %.1f %.1f %.1f)" % (
                tuple(1e6 * w["split"][k] / n for k in ("sched", "python", "rest"))
                + tuple(w["switches"][k] / n for k in ("sched", "python", "rest")))
        show(rnd, kind, label, "%.0f req/s, server CPU %.0f us/req%s%s" % (
            w["rps"], 1e6 * w["cpu"] / n, split, wrk_errors(w)))

    for chunked in (() if not args.upload else (False, True)):
        enc = "chunked" if chunked else "length"
        path = "/upload"
        if kind == "uwsgi" and chunked:
            if rnd == 1:
                _, got, _ = run_curl_small(server.port, "/upload", chunked=True)
                notes.append("uWSGI, chunked body through wsgi.input: the app read %s bytes of %d "
                             "(uWSGI 2.0 gives wsgi.input no bytes without Content-Length); "
                             "measured with uwsgi.chunked_read() instead" % (got or "0", SMALL))
            path = "/upload?api=uwsgi"
        for expect in ((False,) if kind == "sink" else (False, True)):
            key = "%s%s" % (enc, "_expect" if expect else "")
            c0 = server.cpu()
            secs, got, rc = profiled("upload_" + key,
                                     lambda: run_curl(server.port, path, chunked, expect))
            cpu = server.cpu() - c0
            ok = got == str(args.size)
            rec.setdefault(key, []).append({"secs": secs, "mbps": args.size / secs / 1e6,
                                            "cpu": cpu, "ok": ok, "answer": got, "curl": rc})
            if not ok:
                notes.append("%s, %s upload, round %d: the app answered %r (curl status %d), "
                             "expected %d" % (LABEL[kind], key, rnd, got[:80], rc, args.size))
            show(rnd, kind, "upload %-14s" % key, "%7.0f MB/s  %.2f s  server CPU %.2f s/GiB%s" % (
                args.size / secs / 1e6, secs, cpu * GIB / args.size, "" if ok else "  WRONG: %r" % got[:40]))


SMALL = 2 * 1024 * 1024


def run_curl_small(port, path, chunked):
    global UPLOAD
    saved, UPLOAD = UPLOAD, SMALL_FILE
    try:
        return run_curl(port, path, chunked, expect=False, timeout=30)
    finally:
        UPLOAD = saved


def expect_check(server):
    """Does the server answer `Expect: 100-continue'? curl waits 1 s if not."""
    if server.kind == "sink":
        return None
    p = subprocess.run(["curl", "-sv", "-o", "/dev/null", "-T", SMALL_FILE,
                        "http://127.0.0.1:%d/upload" % server.port],
                       capture_output=True, text=True, timeout=30)
    return "< HTTP/1.1 100 Continue" in p.stderr


def wrk_errors(w):
    e = {k: v for k, v in w["errors"].items() if v}
    parts = ["%s errors %d" % (k, v) for k, v in e.items()]
    if w["non2xx"]:
        parts.append("non-2xx %d" % w["non2xx"])
    return " (" + ", ".join(parts) + ")" if parts else ""


def threads_report(before, after, sleeps0, sleeps1, requests):
    rows, sleeps = {}, {}
    for tid, (name, cpu) in after.items():
        used = cpu - before.get(tid, (name, 0.0))[1]
        rows.setdefault(name, []).append((tid, used))
        sleeps[name] = sleeps.get(name, 0) + sleeps1.get(tid, 0) - sleeps0.get(tid, 0)
    lines = ["", "beam.smp CPU seconds and sleeps per request by thread name (erlpy-wN: Python workers):"]
    for name, items in sorted(rows.items(), key=lambda kv: -sum(u for _, u in kv[1])):
        total = sum(u for _, u in items)
        if total >= 0.01 or sleeps[name] > requests // 100:
            lines.append("  %-18s %3d thread(s) %7.2f s %6.2f sleeps/req  %s" % (
                name, len(items), total, sleeps[name] / max(requests, 1),
                " ".join("%d:%.2f" % (t, u) for t, u in sorted(items) if u >= 0.01)))
    return "\n".join(lines) + "\n"


def show(rnd, kind, what, text):
    print("  round %d  %-9s %-22s %s" % (rnd, LABEL[kind], what, text), flush=True)


# ---------------------------------------------------------------- report


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(results, order):
    """{kind: {metric: median}}; per-round ratios are computed pairwise."""
    s = {}
    for kind in order:
        r = results.get(kind, {})
        m = {}
        if "get" in r:
            m["rps"] = med([w["rps"] for w in r["get"]])
            m["us_per_req"] = med([1e6 * w["cpu"] / max(w["requests"], 1) for w in r["get"]])
        for wl, ws in r.get("wl", {}).items():
            m[wl + "_rps"] = med([w["rps"] for w in ws])
            m[wl + "_us"] = med([1e6 * w["cpu"] / max(w["requests"], 1) for w in ws])
            for part in ("sched", "python", "rest"):
                xs = [1e6 * w["split"][part] / max(w["requests"], 1) for w in ws if "split" in w]
                if xs:
                    m[wl + "_" + part] = med(xs)
                xs = [w["switches"][part] / max(w["requests"], 1) for w in ws if "switches" in w]
                if xs:
                    m[wl + "_sw_" + part] = med(xs)
        for key in ("length", "chunked", "length_expect", "chunked_expect"):
            if key in r:
                m[key] = med([u["mbps"] for u in r[key]])
                m[key + "_cpu"] = med([u["cpu"] * GIB / ARGS.size for u in r[key]])
        s[kind] = m
    return s


def per_round_ratios(results, a, b, pick):
    xs, ys = pick(results.get(a, {})), pick(results.get(b, {}))
    return [x / y for x, y in zip(xs, ys) if y]


def report(results, notes, expects, args):
    order = [k for k in SERVERS if k in results] + (["sink"] if "sink" in results else [])
    s = summarize(results, order)
    print()
    print("Medians of %d rounds (MB/s = 10^6 bytes/s; CPU = the server's processes, user + system)"
          % args.rounds)
    print()
    hdr = "%-30s" % "" + "".join("%14s" % LABEL[k] for k in order)
    print(hdr)

    def row(label, key, fmt):
        cells = []
        for k in order:
            v = s[k].get(key)
            cells.append("%14s" % (fmt % v if v is not None and v == v else "-"))
        print("%-30s" % label + "".join(cells))

    for wl in args.workloads:
        label = WORKLOADS[wl][0]
        row(label + " req/s", wl + "_rps", "%.0f")
        row("  server CPU us/request", wl + "_us", "%.0f")
        if "erlpy" in s:
            for part, name in (("sched", "scheduler threads"), ("python", "Python workers"),
                               ("rest", "other threads")):
                row("    erlpy: " + name, wl + "_" + part, "%.0f")
            for part, name in (("sched", "scheduler"), ("python", "Python"), ("rest", "other")):
                row("    erlpy sleeps/req: " + name, wl + "_sw_" + part, "%.2f")
    if args.upload:
        row("upload, Content-Length MB/s", "length", "%.0f")
        row("upload, chunked MB/s", "chunked", "%.0f")
        row("  server CPU s/GiB, length", "length_cpu", "%.2f")
        row("  server CPU s/GiB, chunked", "chunked_cpu", "%.2f")
        row("curl defaults (Expect) length", "length_expect", "%.0f")
        row("curl defaults (Expect) chunked", "chunked_expect", "%.0f")
        print("%-30s" % "answers 100-continue" + "".join(
            "%14s" % ({True: "yes", False: "no (1 s wait)", None: "-"}[expects.get(k)]) for k in order))
    print()

    def getr(r):
        return [w["rps"] for w in r.get("get", [])]

    def up(key):
        return lambda r: [u["mbps"] for u in r.get(key, [])]

    lines = []
    ratios = {}
    if "erlpy" in s:
        for other in ("gunicorn", "uwsgi"):
            if other not in s:
                continue
            for metric, pick, key in (("GET req/s", getr, "rps"),
                                      ("upload length", up("length"), "length"),
                                      ("upload chunked", up("chunked"), "chunked"),
                                      ("upload length, curl defaults", up("length_expect"), "length_expect"),
                                      ("upload chunked, curl defaults", up("chunked_expect"), "chunked_expect")):
                pr = per_round_ratios(results, "erlpy", other, pick)
                if not pr:
                    continue
                ratio = s["erlpy"][key] / s[other][key]
                ratios["%s/%s" % (key, other)] = {"median": ratio, "rounds": pr}
                lines.append("  erlpy / %-8s %-30s %5.2fx   (per round %s)" % (
                    LABEL[other], metric, ratio, " ".join("%.2f" % x for x in pr)))
            for key in ("length", "chunked"):
                a, b = s["erlpy"].get(key + "_cpu"), s[other].get(key + "_cpu")
                if a and b:
                    lines.append("  erlpy / %-8s %-30s %5.2fx   (server CPU per GiB, %s / erlpy)" % (
                        LABEL[other], "upload %s CPU efficiency" % key, b / a, LABEL[other]))
                    # issue 10's form: erlpy's CPU per GiB over the other's, per round
                    pr = [x["cpu"] / y["cpu"] for x, y in zip(results["erlpy"].get(key, []),
                                                              results[other].get(key, [])) if y["cpu"]]
                    if pr:
                        ratios["%s_cpu/%s" % (key, other)] = {"median": med(pr), "rounds": pr}
                        lines.append("  erlpy / %-8s %-30s %5.2fx   (erlpy's CPU per GiB over %s's; "
                                     "per round %s)" % (LABEL[other], "upload %s CPU per GiB" % key,
                                                       med(pr), LABEL[other],
                                                       " ".join("%.2f" % x for x in pr)))
        if "sink" in s:
            for key in ("length", "chunked"):
                if s["sink"].get(key):
                    lines.append("  erlpy / null sink %-28s %5.2fx" % (
                        "upload " + key, s["erlpy"][key] / s["sink"][key]))
    for other in ("uwsgi", "gunicorn"):
        if "erlpy" not in s or other not in s:
            continue
        for wl in args.workloads:
            ws = results["erlpy"].get("wl", {}).get(wl, [])
            os_ = results[other].get("wl", {}).get(wl, [])
            rr = [a["rps"] / b["rps"] for a, b in zip(ws, os_) if b["rps"]]
            cr = [(a["cpu"] / max(a["requests"], 1)) / (b["cpu"] / max(b["requests"], 1))
                  for a, b in zip(ws, os_) if b["cpu"]]
            if rr and cr:
                ratios["%s_rps/%s" % (wl, other)] = {"median": med(rr), "rounds": rr}
                ratios["%s_cpu/%s" % (wl, other)] = {"median": med(cr), "rounds": cr}
                lines.append("  erlpy / %-8s %-24s req/s %5.2fx  CPU/request %5.2fx"
                             "   (per round: %s | %s)" % (
                                 LABEL[other], WORKLOADS[wl][0], med(rr), med(cr),
                                 " ".join("%.2f" % x for x in rr), " ".join("%.2f" % x for x in cr)))
    print("Ratios (erlpy / other, medians of per-round ratios of this run; req/s above 1 and "
          "CPU/request below 1 = erlpy better):")
    print("\n".join(lines))
    print()
    if "erlpy" in s:
        targets = []
        def tgt(name, key, other, need):
            r = ratios.get("%s/%s" % (key, other))
            if r:
                targets.append("  %-36s %5.2fx  %s" % (name, r["median"],
                                                      "met" if r["median"] >= need else "NOT met"))
        tgt("upload >= 2x uWSGI (length)", "length", "uwsgi", 2)
        tgt("upload >= 2x uWSGI (chunked)", "chunked", "uwsgi", 2)
        for key in ("length", "chunked"):
            r = ratios.get("%s_cpu/uwsgi" % key)
            if r:
                targets.append("  %-36s %5.2fx  %s" % ("upload CPU <= 1.5x uWSGI (%s)" % key, r["median"],
                                                      "met" if r["median"] <= 1.5 else "NOT met"))
        tgt("upload >= 3x gunicorn (length)", "length", "gunicorn", 3)
        tgt("upload >= 3x gunicorn (chunked)", "chunked", "gunicorn", 3)
        tgt("GET req/s above gunicorn", "rps", "gunicorn", 1.0000001)
        for wl in ("c50", "post10k", "post100k"):
            a, b = ratios.get("%s_rps/uwsgi" % wl), ratios.get("%s_cpu/uwsgi" % wl)
            if a and b:
                targets.append("  %-36s %5.2fx  %s" % (WORKLOADS[wl][0] + " req/s >= 1.0x uWSGI",
                               a["median"], "met" if a["median"] >= 1 else "NOT met"))
                targets.append("  %-36s %5.2fx  %s" % (WORKLOADS[wl][0] + " CPU <= 1.2x uWSGI",
                               b["median"], "met" if b["median"] <= 1.2 else "NOT met"))
        r = ratios.get("rps/uwsgi")
        if r:
            targets.append("  %-36s %5.2fx  (reported, no target)" % ("GET req/s against uWSGI",
                                                                      r["median"]))
        print("Targets (uploads without Expect):")
        print("\n".join(targets))
        print()
    if notes:
        print("Notes:")
        for n in dict.fromkeys(notes):
            print("  - " + n)
    return s, ratios


def machine():
    try:
        load = open("/proc/loadavg").read().split()[0]
    except OSError:
        load = "?"
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        rev = "?"
    return "%d CPUs, load average %s, %s, erlpy %s" % (
        os.cpu_count(), load, time.strftime("%Y-%m-%d %H:%M"), rev)


# ---------------------------------------------------------------- main


def make_file(path, size):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)


def main():
    global UPLOAD, SMALL_FILE, ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="wrk seconds per round")
    ap.add_argument("--size", type=int, default=GIB, help="upload bytes")
    ap.add_argument("--servers", default="erlpy,gunicorn,uwsgi,sink")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--plot", help="write a PNG here (bench/plot_wsgi.py)")
    ap.add_argument("--profile", choices=("threads", "msacc", "eprof", "perf"),
                    help="profile erlpy's measurements; files go to --profile-dir")
    ap.add_argument("--profile-dir", default="/tmp/erlpy_wsgi_profile")
    ap.add_argument("--contexts", type=int, help="erlpy contexts (default: erlpy's, 8)")
    ap.add_argument("--erl-flags", default="", help="extra flags for erlpy's erl, e.g. '+sbwt none'")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="a subset of %s" % ",".join(WORKLOADS))
    ap.add_argument("--no-upload", dest="upload", action="store_false",
                    help="skip the 1 GiB uploads")
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = ARGS = ap.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            raise SystemExit("bench_wsgi: unknown workload %r" % w)
    if args.sink:
        return sink_main(args.sink)
    kinds = [k for k in args.servers.split(",") if k and (k != "sink" or args.upload)]
    for tool in ("wrk", "curl", "erl") + tuple(k for k in kinds if k in ("gunicorn", "uwsgi")):
        if not shutil.which(tool):
            raise SystemExit("bench_wsgi: %s not found (make setup installs it)" % tool)
    if "erlpy" in kinds and not os.path.exists(os.path.join(EBIN, "erlpy_http.beam")):
        raise SystemExit("bench_wsgi: run `make build` first")
    if args.profile:
        os.makedirs(args.profile_dir, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix="erlpy_wsgi_bench_", dir="/tmp")
    UPLOAD = os.path.join(tmp, "upload.bin")
    SMALL_FILE = os.path.join(tmp, "small.bin")
    t_start = time.monotonic()
    results, notes, expects = {}, [], {}
    try:
        if args.upload:
            make_file(UPLOAD, args.size)
        make_file(SMALL_FILE, SMALL)
        make_wrk_script(tmp, "post10k", 10 * 1000)
        make_wrk_script(tmp, "post100k", 100 * 1000)
        print("WSGI servers, same app (bench/wsgi_bench_app.py), same run: %s" % machine())
        print("wrk -t2 -d%ds per workload (%s); upload: %s"
              % (args.duration, ", ".join(WORKLOADS[w][0] for w in args.workloads),
                 "curl -T (%d bytes), app reads 64 KiB chunks" % args.size if args.upload else "skipped"))
        print()
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                server = Server(kind, args)
                try:
                    server.start()
                    if rnd == 1:
                        expects[kind] = expect_check(server)
                    measure(server, args, rnd, results, notes)
                finally:
                    server.stop()
        elapsed = time.monotonic() - t_start
        s, ratios = report(results, notes, expects, args)
        print("\nwhole benchmark: %.0f s; %s" % (elapsed, machine()))
        data = {"machine": machine(), "rounds": args.rounds, "size": args.size,
                "duration": args.duration, "results": results, "summary": s,
                "ratios": ratios, "expect_100": expects, "notes": notes}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(data, f, indent=1)
        if args.plot:
            sys.path.insert(0, HERE)
            import plot_wsgi
            plot_wsgi.plot(data, args.plot)
            print("plot: %s" % args.plot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


UPLOAD = SMALL_FILE = ARGS = None

if __name__ == "__main__":
    sys.exit(main())
