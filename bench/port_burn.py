"""A Python process behind an Erlang port ({packet, 4}) for bench/bench_nodes.erl:
each request is a 4-byte big-endian n; it runs nodes_bench.burn(n) and
answers 4 bytes (the low bits of the result), so the benchmark's baseline
pays what a port costs: a pipe write and read, and no term conversion."""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes_bench import burn  # noqa: E402
from port_echo import serve  # noqa: E402  (the {packet, 4} loop)


def answer(body):
    return struct.pack(">I", burn(struct.unpack(">I", body)[0]) & 0xFFFFFFFF)


def main():
    serve(answer)


if __name__ == "__main__":
    main()
