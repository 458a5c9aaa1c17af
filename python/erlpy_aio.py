"""Awaitable reads of an erlang.PyBuffer: ``buf.async_reader()``.

BufferReader has asyncio.StreamReader's reading half (read, readline,
readexactly, readuntil, at_eof, ``async for``) with its semantics and
exceptions.  A read that must wait registers with the buffer and awaits a
future; the Erlang writer wakes the loop through one eventfd per loop
(erlang._Waker, c_src/buffer_wake.c), watched with loop.add_reader.  Nothing
polls, and no thread waits on behalf of a coroutine.
"""
import asyncio
import itertools
import weakref

import erlang

_POLL = erlang._Waker.poll

_DEFAULT_LIMIT = 2 ** 16  # asyncio.streams._DEFAULT_LIMIT


class IncompleteReadError(erlang.IncompleteReadError, asyncio.IncompleteReadError):
    """Caught by ``except asyncio.IncompleteReadError`` and by
    ``except erlang.IncompleteReadError`` alike."""

    def __init__(self, partial, expected):
        # both bases' __init__ call super(): set what they set, once
        r = 'undefined' if expected is None else repr(expected)
        EOFError.__init__(self, f'{len(partial)} bytes read on a total of {r} expected bytes')
        self.partial = partial
        self.expected = expected

    def __reduce__(self):
        return type(self), (self.partial, self.expected)


class _LoopWaker:
    """One per event loop: the eventfd it watches and the futures waiting."""

    def __init__(self, loop):
        self.c = erlang._Waker()
        self.futures = {}
        self.tokens = itertools.count(1)
        # Called after each wake-up: others sharing the eventfd (the ASGI
        # runner's inbox, python/erlpy_asgi.py) look at their own queues.
        self.hooks = []
        # The loop holds us through this handle, we do not hold the loop:
        # both go together, and the eventfd closes with the last reference.
        loop.add_reader(self.c.fileno(), self._ready)

    def _ready(self):
        for token in self.c.drain():
            fut = self.futures.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(True)
        for hook in self.hooks:
            hook()


_wakers = weakref.WeakKeyDictionary()  # loop -> _LoopWaker


def _waker(loop):
    w = _wakers.get(loop)
    if w is None:
        w = _wakers[loop] = _LoopWaker(loop)
    return w


def _expire(fut):
    if not fut.done():
        fut.set_result(False)


class BufferReader:
    """asyncio.StreamReader's reading API over an erlang.PyBuffer."""

    def __init__(self, buf, limit=_DEFAULT_LIMIT):
        if not isinstance(buf, erlang.PyBuffer):
            raise TypeError(f'expected an erlang.PyBuffer, not {type(buf).__name__}')
        if limit <= 0:
            raise ValueError('Limit cannot be <= 0')
        self._buf = buf
        self._limit = limit
        self._waiter = None  # the name of the method waiting, if one is
        self._timeout, cap, _ = erlang._Waker.params(buf)
        # With backpressure the writer resumes only when the reader consumes:
        # no single wait may ask for more than the buffer's wait cap.
        self._cap = cap if cap is not None else float('inf')

    def __repr__(self):
        return f'<erlpy_aio.BufferReader limit={self._limit} {self._buf!r}>'

    @property
    def buffer(self):
        """The erlang.PyBuffer read."""
        return self._buf

    def at_eof(self):
        """True when the writer closed the buffer and everything was read."""
        return self._buf.at_eof()

    def exception(self):
        return None

    # ---------------------------------------------------------------- waiting

    async def _wait(self, want, name):
        """Until `want` bytes are unread or the stream ended; returns the
        unread count.  Raises what a blocking read would: StreamAborted,
        StreamIncomplete, ReadTimeout, ValueError when closed."""
        buf = self._buf
        want = min(want, self._cap)
        n = _POLL(buf, want)
        if n is not None:
            return n
        if self._waiter is not None:
            raise RuntimeError(f'{name}() called while another coroutine is already '
                               f'waiting for incoming data')
        loop = asyncio.get_running_loop()
        w = _waker(loop)
        deadline = None if self._timeout is None else loop.time() + self._timeout
        self._waiter = name
        try:
            while True:
                fut = loop.create_future()
                token = next(w.tokens)
                w.futures[token] = fut
                timer = None
                armed = False
                try:
                    armed = w.c.arm(buf, want, token)
                    if armed:
                        if deadline is not None:
                            timer = loop.call_at(deadline, _expire, fut)
                        if not await fut:
                            raise erlang.ReadTimeout("no data within the buffer's read_timeout")
                finally:
                    w.futures.pop(token, None)
                    if timer is not None:
                        timer.cancel()
                    if armed:  # never another reader's registration
                        w.c.disarm(buf)
                n = _POLL(buf, want)
                if n is not None:
                    return n
        finally:
            self._waiter = None

    def _take(self, n):
        return self._buf.read_nonblock(n)

    def _unconsume(self, n):
        """A read that consumed n bytes before failing (a timeout, a cancel:
        with backpressure a long read consumes as it goes) puts them back
        when the buffer keeps consumed bytes, as blocking reads do."""
        if n and self._buf.seekable():
            try:
                self._buf.seek(-n, 1)
            except ValueError:  # aborted or closed: nothing is left anyway
                pass

    # ---------------------------------------------------------------- reads

    async def read(self, n=-1):
        """Up to n bytes, at least one unless at EOF; n < 0: all to EOF."""
        if n == 0:
            return b''
        if n < 0:
            parts, have = [], 0
            try:
                while True:
                    avail = await self._wait(1, 'read')
                    if avail == 0:
                        return b''.join(parts)
                    parts.append(self._take(avail))
                    have += avail
            except BaseException:
                self._unconsume(have)
                raise
        avail = await self._wait(1, 'read')
        return self._take(min(n, avail))

    async def readexactly(self, n):
        """Exactly n bytes; IncompleteReadError (partial consumed) at EOF."""
        if n < 0:
            raise ValueError('readexactly size can not be less than zero')
        if n == 0:
            return b''
        parts, have = [], 0
        try:
            while have < n:
                avail = await self._wait(n - have, 'readexactly')
                if avail == 0:
                    break
                part = self._take(min(avail, n - have))
                parts.append(part)
                have += len(part)
        except BaseException:
            self._unconsume(have)
            raise
        if have < n:
            raise IncompleteReadError(b''.join(parts), n)
        return b''.join(parts)

    async def readuntil(self, separator=b'\n'):
        """Up to and including separator.  LimitOverrunError (nothing
        consumed) when it is not within limit bytes; IncompleteReadError
        (all consumed) at EOF without it."""
        seplen = len(separator)
        if seplen == 0:
            raise ValueError('Separator should be at least one-byte string')
        buf, offset = self._buf, 0
        avail = buf.readable_amount()
        while True:
            if avail - offset >= seplen:
                isep = buf.find(separator, offset)
                if isep != -1:
                    break
                offset = avail + 1 - seplen
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        'Separator is not found, and chunk exceed the limit', offset)
            if avail >= self._cap:  # the writer waits for us: as a full asyncio buffer
                raise asyncio.LimitOverrunError(
                    'Separator is not found, and chunk exceed the limit', offset)
            before = avail
            avail = await self._wait(avail + 1, 'readuntil')
            if avail == before:  # EOF
                raise IncompleteReadError(self._take(avail), None)
        if isep > self._limit:
            raise asyncio.LimitOverrunError(
                'Separator is found, but chunk is longer than limit', isep)
        return self._take(isep + seplen)

    async def readline(self):
        """One line with its b'\\n'; the rest at EOF; ValueError past limit
        (the buffered bytes are dropped, as asyncio does)."""
        try:
            return await self.readuntil(b'\n')
        except asyncio.IncompleteReadError as e:
            return e.partial
        except asyncio.LimitOverrunError as e:
            if self._buf.find(b'\n', e.consumed) == e.consumed:
                self._take(e.consumed + 1)
            else:
                self._take(self._buf.readable_amount())
            raise ValueError(e.args[0])

    def __aiter__(self):
        return self

    async def __anext__(self):
        line = await self.readline()
        if line == b'':
            raise StopAsyncIteration
        return line
