"""One behaviour suite, two implementations: asyncio.StreamReader fed the
same bytes, and erlang.PyBuffer.async_reader(); the latter on asyncio's
default loop and on uvloop (skipped where uvloop is not importable).

Run by test/py_buffer_python_SUITE.erl through buffer_behaviour's writer.
Every test is a coroutine run on a fresh loop of the class's LOOP kind.
"""
import asyncio
import time
import unittest

import erlang

import buffer_behaviour as bb
from buffer_behaviour import LINES, TEXT, split_cases


def new_loop(kind):
    if kind == 'uvloop':
        try:
            import uvloop
        except ImportError:
            raise unittest.SkipTest('uvloop is not importable in this Python')
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class AsyncCase(unittest.TestCase):
    LOOP = 'asyncio'

    def go(self, coro_fn, *args):
        loop = new_loop(self.LOOP)
        try:
            return loop.run_until_complete(asyncio.wait_for(coro_fn(*args), 60))
        finally:
            loop.close()


class ReaderBehaviour:
    """Test methods run against every implementation (mixin).  make(chunks,
    close=True, limit=...) returns a reader; feed/eof add to an open one."""

    def cases(self, data):
        return split_cases(data)

    # -- read

    def test_read_everything(self):
        async def t():
            for label, chunks in self.cases(TEXT):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    self.assertFalse(r.at_eof())
                    self.assertEqual(await r.read(), TEXT)
                    self.assertTrue(r.at_eof())
                    self.assertEqual(await r.read(), b'')
                    self.assertEqual(await r.read(5), b'')
        self.go(t)

    def test_read_sizes(self):
        async def t():
            for label, chunks in self.cases(TEXT):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    got = []
                    while True:
                        piece = await r.read(7)
                        self.assertLessEqual(len(piece), 7)
                        if not piece:
                            break
                        got.append(piece)
                    self.assertEqual(b''.join(got), TEXT)
                    self.assertEqual(await r.read(0), b'')
        self.go(t)

    def test_read_returns_what_is_there(self):
        async def t():
            r = self.make([b'abc'], close=False)
            self.assertEqual(await r.read(100), b'abc')
            self.feed(r, b'de')
            self.assertEqual(await r.read(1), b'd')
            self.eof(r)
            self.assertEqual(await r.read(100), b'e')
            self.assertEqual(await r.read(100), b'')
        self.go(t)

    # -- readexactly

    def test_readexactly(self):
        async def t():
            for label, chunks in self.cases(TEXT):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    self.assertEqual(await r.readexactly(0), b'')
                    self.assertEqual(await r.readexactly(5), TEXT[:5])
                    self.assertEqual(await r.readexactly(20), TEXT[5:25])
                    with self.assertRaises(asyncio.IncompleteReadError) as cm:
                        await r.readexactly(len(TEXT))
                    self.assertEqual(cm.exception.partial, TEXT[25:])
                    self.assertEqual(cm.exception.expected, len(TEXT))
                    self.assertTrue(r.at_eof())
            r = self.make([b'x'])
            with self.assertRaisesRegex(ValueError, 'less than zero'):
                await r.readexactly(-1)
        self.go(t)

    # -- readuntil

    def test_readuntil(self):
        data = b'GET / HTTP/1.1\r\nHost: x\r\n\r\nbody'
        async def t():
            for label, chunks in self.cases(data):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    self.assertEqual(await r.readuntil(b'\r\n'), b'GET / HTTP/1.1\r\n')
                    self.assertEqual(await r.readuntil(b'\r\n\r\n'), b'Host: x\r\n\r\n')
                    with self.assertRaises(asyncio.IncompleteReadError) as cm:
                        await r.readuntil()
                    self.assertEqual(cm.exception.partial, b'body')
                    self.assertIsNone(cm.exception.expected)
                    self.assertTrue(r.at_eof())
            r = self.make([b'a\nb;c'])
            self.assertEqual(await r.readuntil(), b'a\n')
            self.assertEqual(await r.readuntil(b';'), b'b;')
            with self.assertRaisesRegex(ValueError, 'at least one-byte'):
                await r.readuntil(b'')
        self.go(t)

    def test_readuntil_limit_not_found(self):
        async def t():
            r = self.make([b'x' * 30], close=False, limit=10)
            with self.assertRaises(asyncio.LimitOverrunError) as cm:
                await r.readuntil(b'\n')
            self.assertEqual(cm.exception.consumed, 30)
            self.eof(r)
            self.assertEqual(await r.read(), b'x' * 30)  # nothing was consumed
        self.go(t)

    def test_readuntil_limit_found_too_far(self):
        async def t():
            r = self.make([b'y' * 20 + b'\nrest'], limit=10)
            with self.assertRaises(asyncio.LimitOverrunError) as cm:
                await r.readuntil(b'\n')
            self.assertEqual(cm.exception.consumed, 20)
            self.assertEqual(await r.read(), b'y' * 20 + b'\nrest')
        self.go(t)

    def test_readuntil_waits_across_writes(self):
        async def t():
            r = self.make([b'key: value\r\n'], close=False)
            task = asyncio.ensure_future(r.readuntil(b'\r\n\r\n'))
            await asyncio.sleep(0.01)
            self.assertFalse(task.done())
            self.feed(r, b'\r')
            await asyncio.sleep(0.01)
            self.assertFalse(task.done())
            self.feed(r, b'\nrest')
            self.assertEqual(await task, b'key: value\r\n\r\n')
            self.eof(r)
            self.assertEqual(await r.read(), b'rest')
        self.go(t)

    # -- readline and iteration

    def test_readline(self):
        async def t():
            for label, chunks in self.cases(TEXT):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    got = [await r.readline() for _ in LINES]
                    self.assertEqual(got, LINES)
                    self.assertEqual(await r.readline(), b'')
        self.go(t)

    def test_readline_over_limit(self):
        async def t():
            r = self.make([b'z' * 20 + b'\nnext\n'], limit=10)
            with self.assertRaises(ValueError):
                await r.readline()
            self.assertEqual(await r.readline(), b'next\n')
            r = self.make([b'z' * 30], close=False, limit=10)
            with self.assertRaises(ValueError):
                await r.readline()
            self.feed(r, b'tail\n')
            self.eof(r)
            self.assertEqual(await r.readline(), b'tail\n')
        self.go(t)

    def test_async_for(self):
        async def t():
            for label, chunks in self.cases(TEXT):
                with self.subTest(split=label):
                    r = self.make(chunks)
                    self.assertEqual([line async for line in r], LINES)
        self.go(t)

    # -- waiting

    def test_waits_for_data(self):
        async def t():
            r = self.make([b'ab'], close=False)
            task = asyncio.ensure_future(r.readexactly(5))
            await asyncio.sleep(0.01)
            self.assertFalse(task.done())
            self.feed(r, b'cd')
            await asyncio.sleep(0.01)
            self.assertFalse(task.done())
            self.feed(r, b'efg')
            self.assertEqual(await task, b'abcde')
            self.eof(r)
            self.assertEqual(await r.read(), b'fg')
        self.go(t)

    def test_eof_wakes_a_waiting_read(self):
        async def t():
            r = self.make([b'partial'], close=False)
            task = asyncio.ensure_future(r.readexactly(100))
            await asyncio.sleep(0.01)
            self.eof(r)
            with self.assertRaises(asyncio.IncompleteReadError) as cm:
                await task
            self.assertEqual(cm.exception.partial, b'partial')
        self.go(t)

    def test_second_waiter_is_refused(self):
        async def t():
            r = self.make([], close=False)
            first = asyncio.ensure_future(r.read())
            await asyncio.sleep(0.01)
            with self.assertRaisesRegex(RuntimeError, 'already waiting'):
                await r.readline()
            self.feed(r, b'data')
            self.eof(r)
            self.assertEqual(await first, b'data')
        self.go(t)

    def test_cancel_a_waiting_read(self):
        async def t():
            r = self.make([], close=False)
            task = asyncio.ensure_future(r.readexactly(3))
            await asyncio.sleep(0.01)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.feed(r, b'abc')
            self.assertEqual(await r.readexactly(3), b'abc')
        self.go(t)


class StreamReaderTest(ReaderBehaviour, AsyncCase):
    def make(self, chunks, close=True, limit=2 ** 16):
        r = asyncio.StreamReader(limit=limit)
        for c in chunks:
            if c:
                r.feed_data(c)
        if close:
            r.feed_eof()
        return r

    def feed(self, r, data):
        r.feed_data(data)

    def eof(self, r):
        r.feed_eof()


class PyBufferReaderTest(ReaderBehaviour, AsyncCase):
    def make(self, chunks, close=True, limit=2 ** 16, **opts):
        buf = bb.writer().make(chunks, close=close, **opts)
        return buf.async_reader(limit=limit)

    def feed(self, r, data):
        self.assertEqual(bb.writer().write(r.buffer, data), 'ok')

    def eof(self, r):
        self.assertEqual(bb.writer().close(r.buffer), 'ok')


class PyBufferReaderUvloopTest(PyBufferReaderTest):
    LOOP = 'uvloop'


class PyBufferAsyncOnly(AsyncCase):
    """What asyncio.StreamReader has no counterpart for."""

    def setUp(self):
        self.w = bb.writer()

    def new(self, *chunks, close=False, **opts):
        return self.w.make(chunks, close=close, **opts)

    def test_types(self):
        buf = self.new(b'x', close=True)
        r = buf.async_reader()
        self.assertIs(r.buffer, buf)
        self.assertRaises(TypeError, type(r), b'not a buffer')
        self.assertRaises(ValueError, buf.async_reader, limit=0)
        self.assertTrue(issubclass(type(r), object))

        async def t():
            with self.assertRaises(erlang.IncompleteReadError):
                await r.readexactly(5)
        self.go(t)

    def test_written_later_by_erlang(self):
        buf = self.new()

        async def t():
            r = buf.async_reader()
            self.w.later(buf, ('sleep', 20), ('write', b'hello '), ('sleep', 20),
                         ('write', b'world\n'), ('close',))
            self.assertEqual(await r.readline(), b'hello world\n')
            self.assertEqual(await r.read(), b'')
            self.assertTrue(r.at_eof())
        self.go(t)

    def test_abort_while_waiting(self):
        buf = self.new(b'some')

        async def t():
            r = buf.async_reader()
            self.w.later(buf, ('sleep', 20), ('abort', 'upstream_reset'))
            with self.assertRaisesRegex(erlang.StreamAborted, 'upstream_reset'):
                await r.readexactly(100)
            with self.assertRaises(erlang.StreamAborted):
                await r.read()
        self.go(t)

    def test_short_stream(self):
        buf = self.new(b'abc', content_length=10)

        async def t():
            r = buf.async_reader()
            self.w.later(buf, ('sleep', 20), ('close',))
            with self.assertRaises(erlang.StreamIncomplete):
                await r.read()
        self.go(t)

    def test_read_timeout(self):
        buf = self.new(read_timeout=50)

        async def t():
            r = buf.async_reader()
            with self.assertRaises(erlang.ReadTimeout):
                await r.read(1)
            self.w.later(buf, ('sleep', 20), ('write', b'late'))
            self.assertEqual(await r.readexactly(4), b'late')
        self.go(t)

    def test_closed_buffer(self):
        buf = self.new(b'abc')
        buf.close()

        async def t():
            with self.assertRaisesRegex(ValueError, 'closed file'):
                await buf.async_reader().read()
        self.go(t)

    def test_backpressure_bounded_waits(self):
        data = bb.random_bytes(300_000)
        buf = self.new(max_unread=4096)

        async def t():
            r = buf.async_reader()
            self.w.later(buf, *[('write', data[i:i + 10_000]) for i in range(0, len(data), 10_000)],
                         ('close',))
            self.assertEqual(await r.readexactly(len(data)), data)
            self.assertEqual(await r.read(), b'')
        self.go(t)

    def test_cancel_loses_nothing(self):
        """With backpressure a long read consumes as it goes; cancelled, it
        puts back what it took."""
        buf = self.new(b'01234567', max_unread=10)

        async def t():
            r = buf.async_reader()
            task = asyncio.ensure_future(r.readexactly(20))
            await asyncio.sleep(0.02)
            self.assertFalse(task.done())
            self.assertGreater(buf.tell(), 0)  # it did consume
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(buf.tell(), 0)
            self.w.later(buf, ('write', b'89abcdef'), ('close',))
            self.assertEqual(await r.read(), b'0123456789abcdef')
        self.go(t)

    def test_two_readers_of_one_buffer(self):
        """A second reader of the same buffer is refused and does not cancel
        the first one's wait."""
        buf = self.new()

        async def t():
            first = asyncio.ensure_future(buf.async_reader().readexactly(2))
            await asyncio.sleep(0.01)
            with self.assertRaisesRegex(RuntimeError, 'another event loop reader'):
                await buf.async_reader().read(1)
            self.w.later(buf, ('write', b'ok'))
            self.assertEqual(await first, b'ok')
        self.go(t)

    def test_many_buffers_one_loop(self):
        bufs = [self.new() for _ in range(200)]

        async def t():
            tasks = [asyncio.ensure_future(b.async_reader().readexactly(2)) for b in bufs]
            await asyncio.sleep(0.01)
            for i, b in reversed(list(enumerate(bufs))):
                self.w.later(b, ('write', b'%02d' % (i % 100)))
            self.assertEqual(await asyncio.gather(*tasks), [b'%02d' % (i % 100) for i in range(200)])
        self.go(t)

    def test_loops_in_turn(self):
        """A loop closed and a new one made: each has its own eventfd."""
        for _ in range(3):
            buf = self.new()

            async def t():
                r = buf.async_reader()
                self.w.later(buf, ('sleep', 5), ('write', b'ok'), ('close',))
                self.assertEqual(await r.read(), b'ok')
            self.go(t)


class PyBufferAsyncOnlyUvloop(PyBufferAsyncOnly):
    LOOP = 'uvloop'


def run(writer_pid, ack, names=(), echo=False):
    bb.WRITER = bb.Writer(writer_pid, ack)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in (StreamReaderTest, PyBufferReaderTest, PyBufferReaderUvloopTest,
                 PyBufferAsyncOnly, PyBufferAsyncOnlyUvloop):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return bb.run_tests(suite, names, echo)


# ---------------------------------------------------------------- many idle readers

def many_idle(bufs, pid, loop_kind):
    """Called by py_buffer_python_SUITE: a reader per buffer waits in one loop;
    tells pid 'armed' once all wait, measures the loop thread's CPU while
    they are idle, then returns when Erlang has written every buffer."""
    kind = loop_kind.decode() if isinstance(loop_kind, bytes) else str(loop_kind)
    loop = new_loop(kind)

    async def main():
        tasks = [asyncio.ensure_future(b.async_reader().readexactly(3)) for b in bufs]
        await asyncio.sleep(0.1)  # every read registered
        waiting = sum(not t.done() for t in tasks)
        cpu0 = time.thread_time()
        await asyncio.sleep(0.5)
        idle_cpu = time.thread_time() - cpu0
        erlang.send(pid, (erlang.Atom('armed'), waiting))
        results = await asyncio.gather(*tasks)
        return {'waiting': waiting, 'idle_cpu': idle_cpu,
                'all_read': all(x == b'abc' for x in results)}
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
