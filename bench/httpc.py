"""A small asyncio HTTP/1.1 client for the benchmarks in bench/: just what
soak.py and bench_slow.py need to send exact bytes and check exact answers."""
import asyncio
import socket
import struct

HOST = "127.0.0.1"


class Wrong(Exception):
    """A wrong answer: a bad status or body, a closed socket, a timeout."""


async def connect(port, limit=1 << 20, timeout=10):
    try:
        return await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=limit), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise Wrong("connect: %r" % e)


def close(writer, reset=False):
    """Closes; reset=True makes it an RST (SO_LINGER 0), as a killed client."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    writer.close()


async def read_response(reader, method=b"GET"):
    """(status, {lowercase name: value}, body); body by Content-Length,
    chunked, or to EOF. Raises Wrong on a closed or broken answer."""
    try:
        line = await reader.readline()
        if not line:
            raise Wrong("closed without an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Wrong("bad status line %r" % line[:80])
        status, headers = int(parts[1]), {}
        while True:
            line = await reader.readline()
            if not line:
                raise Wrong("closed in the response head")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if method == b"HEAD" or status in (204, 304):
            return status, headers, b""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = bytearray()
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return status, headers, bytes(body)
                body += await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise Wrong("bad chunk end")
        if b"content-length" in headers:
            return status, headers, await reader.readexactly(int(headers[b"content-length"]))
        return status, headers, await reader.read()
    except asyncio.IncompleteReadError as e:
        raise Wrong("closed mid-response (%d bytes of a part)" % len(e.partial))
    except (ValueError, asyncio.LimitOverrunError) as e:
        raise Wrong("unparsable response: %r" % e)
    except OSError as e:
        raise Wrong("socket error: %r" % e)


async def get(port, path="/", timeout=10):
    """One GET on a fresh connection: (status, body)."""
    reader, writer = await connect(port, timeout=timeout)
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path.encode())
        status, _, body = await asyncio.wait_for(read_response(reader), timeout)
        return status, body
    except asyncio.TimeoutError:
        raise Wrong("no answer within %s s" % timeout)
    finally:
        close(writer)
