"""A Python process behind an Erlang port ({packet, 4}) for bench/bench_nodes.erl:
each request is a 4-byte big-endian n; it runs nodes_bench.burn(n) and
answers 4 bytes (the low bits of the result), so the benchmark's baseline
pays what a port costs: a pipe write and read, and no term conversion."""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes_bench import burn  # noqa: E402


def read_exactly(fd, n):
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def main():
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        header = read_exactly(fd_in, 4)
        if header is None:
            return
        body = read_exactly(fd_in, struct.unpack(">I", header)[0])
        if body is None:
            return
        r = burn(struct.unpack(">I", body)[0]) & 0xFFFFFFFF
        os.write(fd_out, struct.pack(">II", 4, r))


if __name__ == "__main__":
    main()
