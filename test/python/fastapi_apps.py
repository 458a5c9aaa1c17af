"""A FastAPI app for py_asgi_SUITE (Debian's python3-fastapi, python3-multipart)."""
import asyncio
import hashlib

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import PlainTextResponse, StreamingResponse

app = FastAPI()
events = {}


@app.get("/hello")
async def hello():
    return {"hello": "world"}


@app.post("/json")
async def json_echo(item: dict):
    return {"got": item, "keys": len(item)}


@app.post("/form")
async def form(name: str = Form(...), age: int = Form(...)):
    return {"name": name, "age": age}


@app.post("/upload")
async def upload(file: UploadFile = File(...), note: str = Form("")):
    h, n = hashlib.sha256(), 0
    while True:
        block = await file.read(1 << 20)
        if not block:
            break
        h.update(block)
        n += len(block)
    return {"filename": file.filename, "size": n, "sha256": h.hexdigest(), "note": note}


@app.post("/stream_sha256")
async def stream_sha256(request: Request):
    h, n = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        n += len(chunk)
    return PlainTextResponse(f"{n} {h.hexdigest()}")


@app.get("/streaming")
async def streaming(n: int = 10):
    async def lines():
        for i in range(n):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/background")
async def background(key: str, tasks: BackgroundTasks):
    async def later():
        await asyncio.sleep(0.3)
        events[key] = "done"
    tasks.add_task(later)
    return {"queued": key}


@app.get("/items/{item_id}")
async def item(item_id: int):
    if item_id != 1:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": 1}


@app.get("/watch")
async def watch(key: str, request: Request):
    for _ in range(2400):  # two minutes at most
        if await request.is_disconnected():
            events[key] = "noticed"
            return PlainTextResponse("gone")
        await asyncio.sleep(0.05)
    events[key] = "never noticed"
    return PlainTextResponse("still here")


@app.get("/sleep")
async def sleep():
    await asyncio.sleep(1)
    return PlainTextResponse("slept")
