# Run by harness.c: OP N does N units of one operation (run.sh takes the
# instruction count's difference between two N, so start-up cancels out).
# Each loop is a function's, as in bench/buffer_bench.py.
import ctypes
import io
import os


def calls(f, n):
    for _ in range(n):
        f()


def views(readview, n):
    for _ in range(n):
        with readview() as view:
            len(view)


op, n = os.environ["OP"], int(os.environ["N"])
if op == "readline_pybuffer":
    calls(buf.readline, n)
elif op == "readline_bytesio":
    calls(io.BytesIO(data).readline, n)
elif op == "iterate_pybuffer":
    calls(iter(buf).__next__, n)
elif op == "iterate_bytesio":
    calls(iter(io.BytesIO(data)).__next__, n)
elif op == "readview":  # a view per 64 KiB written
    views(buf.readview, n)
elif op in ("find_pybuffer", "find_memmem"):  # N searches of the whole stream
    needle = b"--erlpy-bench-needle"
    mm = ctypes.CDLL(None).memmem
    mm.restype = ctypes.c_void_p
    mm.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    for _ in range(n):
        if op == "find_pybuffer":
            assert buf.find(needle) == -1
        else:
            assert mm(base, len(data), needle, len(needle)) is None
else:
    raise SystemExit("unknown OP " + op)
