"""A Starlette app for py_asgi_SUITE (Debian's python3-starlette)."""
import asyncio
import contextlib
import hashlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

events = []


async def hello(request):
    return PlainTextResponse("Hello from Starlette")


async def stream_sha256(request):
    h, n = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return PlainTextResponse(f"{n} {h.hexdigest()}")


async def form(request):
    async with request.form() as f:
        return JSONResponse({k: (v if isinstance(v, str) else v.filename) for k, v in f.items()})


async def streaming(request):
    async def numbers():
        for i in range(1000):
            yield b"%d\n" % i
            if i % 100 == 0:
                await asyncio.sleep(0)
    return StreamingResponse(numbers(), media_type="text/plain")


async def state(request):
    return PlainTextResponse(request.state.greeting)


@contextlib.asynccontextmanager
async def lifespan(app):
    events.append("startup")
    yield {"greeting": "state from lifespan"}
    events.append("shutdown")


app = Starlette(routes=[Route("/hello", hello), Route("/stream_sha256", stream_sha256, methods=["POST"]),
                        Route("/form", form, methods=["POST"]), Route("/streaming", streaming),
                        Route("/state", state)],
                lifespan=lifespan)
