"""A small ASGI app: `make run APP=asgi_demo_app:app`.

    curl http://127.0.0.1:8080/                 # Hello, World!
    curl -T big.iso http://127.0.0.1:8080/upload  # size and sha256, read with receive()
    curl 'http://127.0.0.1:8080/stream?n=5'     # a streamed response
"""
import asyncio
import hashlib


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/upload":
        h, n, more = hashlib.sha256(), 0, True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            h.update(event["body"])
            n += len(event["body"])
            more = event["more_body"]
        body = f"{n} {h.hexdigest()}\n".encode()
    elif path == "/stream":
        n = int(scope["query_string"].decode().partition("=")[2] or "3")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
        return
    else:
        body = b"Hello, World!\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
