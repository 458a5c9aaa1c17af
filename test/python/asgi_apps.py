"""Raw ASGI 3.0 apps for py_asgi_SUITE (no framework)."""
import asyncio
import hashlib
import json

events = {}  # what apps noticed, read back by the suite with py:eval


async def app(scope, receive, send):
    """Routes by path."""
    if scope["type"] == "lifespan":
        return await lifespan_ok(scope, receive, send)
    handler = ROUTES.get(scope["path"], not_found)
    await handler(scope, receive, send)


async def respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")] + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def hello(scope, receive, send):
    await respond(send, 200, b"Hello, World!")


async def not_found(scope, receive, send):
    await respond(send, 404, b"not found")


async def scope_json(scope, receive, send):
    """The scope as JSON (bytes as latin-1 text)."""
    def plain(v):
        if isinstance(v, bytes):
            return v.decode("latin-1")
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    body = json.dumps(plain(scope)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def echo_events(scope, receive, send):
    """The body's sha256, its size and how many http.request events carried it."""
    h, n, count, more = hashlib.sha256(), 0, 0, True
    while more:
        msg = await receive()
        if msg["type"] != "http.request":
            await respond(send, 400, b"unexpected " + msg["type"].encode())
            return
        h.update(msg["body"])
        n += len(msg["body"])
        count += 1
        more = msg["more_body"]
    await respond(send, 200, f"{h.hexdigest()} {n} {count}".encode())


async def sleep1(scope, receive, send):
    await asyncio.sleep(1)
    await respond(send, 200, b"slept")


async def stream(scope, receive, send):
    """n chunks of 64 KiB (query n=...), streamed."""
    n = int(scope["query_string"].decode().partition("=")[2] or "16")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    chunk = b"x" * 65536
    for _ in range(n):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def raises(scope, receive, send):
    raise ValueError("boom from asgi")


async def raises_after_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom after start")


async def no_response(scope, receive, send):
    return None


async def wait_disconnect(scope, receive, send):
    """Reads the body, then waits for http.disconnect and records it."""
    key = scope["query_string"].decode()
    while (await receive())["type"] != "http.disconnect":
        pass
    events[key] = "disconnected"


async def forever(scope, receive, send):
    """Never answers; records being cancelled."""
    key = scope["query_string"].decode()
    events[key] = "started"
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        events[key] = "cancelled"
        raise


async def background(scope, receive, send):
    """Answers, then runs on (the response must not wait for it)."""
    key = scope["query_string"].decode()
    await respond(send, 200, b"answered")
    await asyncio.sleep(0.5)
    events[key] = "ran after"


async def bad_header(scope, receive, send):
    await respond(send, 200, b"x", [(b"x-bad", b"a\r\nInjected: yes")])


ROUTES = {
    "/hello": hello,
    "/scope": scope_json,
    "/api/scope": scope_json,
    "/scope/caf\u00e9 x": scope_json,
    "/echo": echo_events,
    "/sleep": sleep1,
    "/stream": stream,
    "/raise": raises,
    "/raise_after_start": raises_after_start,
    "/no_response": no_response,
    "/wait_disconnect": wait_disconnect,
    "/forever": forever,
    "/background": background,
    "/bad_header": bad_header,
}


class App:
    """An object whose __call__ is a coroutine function: ASGI too."""

    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


obj_app = App()

# ------------------------------------------------------------------ lifespan

startups = []


async def lifespan_ok(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            scope["state"]["greeting"] = "hi from lifespan"
            startups.append("startup")
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            startups.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def state_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan_ok(scope, receive, send)
    await respond(send, 200, scope["state"].get("greeting", "none").encode())


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await respond(send, 200, b"never")


async def no_lifespan(scope, receive, send):
    assert scope["type"] == "http"
    await respond(send, 200, b"no lifespan here")


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi here"]
