"""The apps of bench/bench_asgi.py, the same for every server.

    app          GET /        "Hello, World!" (plain ASGI)
                 POST /upload the body read through receive(), answered with its size
    fastapi_app  GET /        {"message": "Hello, World!"} (FastAPI, if installed)
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/upload":
        n, more = 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            n += len(msg["body"])
            more = msg["more_body"]
        body = b"%d" % n
    else:
        body = b"Hello, World!"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


try:
    from fastapi import FastAPI
except ImportError:
    fastapi_app = None
else:
    fastapi_app = FastAPI()

    @fastapi_app.get("/")
    async def hello():
        return {"message": "Hello, World!"}
