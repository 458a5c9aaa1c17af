"""Servers for bench/soak.py and bench/bench_slow.py: each started as its own
OS process in its own session, on a localhost port picked free at run time,
serving bench/soak_app.py, and stopped by its process group.

    erlpy     $ERLPY_CMD, default `bin/erlpy serve {app} --bind
              127.0.0.1:{port}`, run from the repository root with
              APP=soak_app:app, PORT, HOST=127.0.0.1 and PYTHONPATH=bench in
              its environment; "{port}" and "{app}" in ERLPY_CMD are replaced
    gunicorn  gunicorn -k gthread --threads 8 -w 2 -b 127.0.0.1:PORT soak_app:app
    uwsgi     uwsgi --plugin python3 --http-socket 127.0.0.1:PORT --processes 2
                    --wsgi-file bench/soak_app.py --callable app --master
                    --disable-logging
"""
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = "soak_app:app"
LABEL = {"erlpy": "erlpy", "gunicorn": "gunicorn", "uwsgi": "uWSGI"}
ERLPY_CMD = "bin/erlpy serve {app} --bind 127.0.0.1:{port}"


def describe():
    """When, which commit, how many CPUs and how busy: the line under a result."""
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    return "%s, erlpy %s, %d CPUs, load average %s" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rev or "?", os.cpu_count(),
        open("/proc/loadavg").read().split()[0])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def session_pids(sid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(int(name))
            if fields and int(fields[3]) == sid:  # field 6: session id
                out.append(int(name))
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def erlpy_workers(sid):
    """The worker nodes of the erlpy node in session `sid` (named erlpy_OSPID_...)."""
    beams = [p for p in session_pids(sid) if comm(p) == "beam.smp"]
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        for beam in beams:
            if b"-sname" in cmd and cmd[cmd.index(b"-sname") + 1].startswith(b"erlpy_%d_" % beam):
                out.append(int(name))
    return out


def session_cpu(sid):
    """CPU seconds (user + system) so far of every process in session
    `sid`, and of the erlpy worker nodes it started (they run detached, in
    sessions of their own, and are found by their name)."""
    ticks = 0
    for pid in session_pids(sid) + erlpy_workers(sid):
        fields = proc_stat(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_group(proc, first, timeout=15):
    """Stops a server started with start_new_session=True: signal `first`
    to its process group, up to `timeout` seconds for it to exit, then
    SIGKILL to whatever is left of the group."""
    pgid = proc.pid  # start_new_session: the group id is the leader's pid
    if proc.poll() is None:
        try:
            os.killpg(pgid, first)
            proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    if proc.poll() is None:
        proc.wait()


def sample(pid):
    """{rss_mb, fds, threads} of one process, read from /proc/PID."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return out


class Server:
    def __init__(self, kind, ready_timeout=90):
        self.kind, self.ready_timeout = kind, ready_timeout
        self.proc = self.port = self.pid = None
        self.log = tempfile.NamedTemporaryFile(prefix="erlpy_bench_%s_" % kind, suffix=".log",
                                               delete=False)

    def command(self):
        port = str(self.port)
        if self.kind == "erlpy":
            cmd = os.environ.get("ERLPY_CMD") or ERLPY_CMD
            return [a.replace("{port}", port).replace("{app}", APP) for a in shlex.split(cmd)], ROOT
        if self.kind == "gunicorn":
            return (["gunicorn", "-k", "gthread", "--threads", "8", "-w", "2",
                     "-b", "127.0.0.1:" + port, APP], HERE)
        if self.kind == "uwsgi":
            return (["uwsgi", "--plugin", "python3", "--http-socket", "127.0.0.1:" + port,
                     "--processes", "2", "--wsgi-file", os.path.join(HERE, "soak_app.py"),
                     "--callable", "app", "--master", "--disable-logging"], ROOT)
        raise ValueError(self.kind)

    def start(self):
        self.port = free_port()
        cmd, cwd = self.command()
        env = dict(os.environ, APP=APP, PORT=str(self.port), HOST="127.0.0.1",
                   PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready()
        # The process to watch: the Erlang VM (escript may run it as a child),
        # else the session leader (gunicorn's and uWSGI's master).
        self.pid = self.proc.pid
        for pid in session_pids(self.proc.pid):
            if comm(pid) == "beam.smp":
                self.pid = pid
        return self

    def wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail("exited with status %s" % self.proc.returncode)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while True:
                        more = s.recv(4096)
                        if not more:
                            break
                        data += more
                    if data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.fail("did not answer GET / within %d s" % self.ready_timeout)

    def log_text(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def fail(self, why):
        self.stop()
        sys.stderr.write(self.log_text()[-3000:])
        raise SystemExit("%s: %s %s" % (os.path.basename(sys.argv[0]), LABEL[self.kind], why))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM to erlpy's group (the VM stops cleanly), SIGINT to
        gunicorn's and uWSGI's (quick shutdown; SIGTERM reloads uWSGI); then
        SIGKILL to whatever is left of the group."""
        if self.proc is None:
            return
        stop_group(self.proc, signal.SIGTERM if self.kind == "erlpy" else signal.SIGINT, timeout)

    def remove_log(self):
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
