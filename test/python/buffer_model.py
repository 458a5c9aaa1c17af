"""Model test: erlang.PyBuffer against a model built on io.BytesIO.

Run by test/py_buffer_python_SUITE.erl (not shipped).  A hypothesis state
machine drives random sequences of operations: writes, close and abort from
Erlang (through the writer of buffer_behaviour), and on the Python side
read, read1, readinto, readinto1, peek, readline, readlines, iteration,
readuntil, readexactly, read_nonblock, find, seek, tell, memoryview, close.
The model is an io.BytesIO holding every byte written so far, the read
position, and the stream's state (EOF, aborted, closed by the reader,
declared length).  Each operation's result, or the exception it raises, and
the position after it are predicted by the model and compared.

Reads that would wait for data that is not there yet raise erlang.ReadTimeout
after a few milliseconds (the buffers are made with a short read_timeout), so
the model also says which reads block.
"""
import collections
import io
import unittest

import erlang
import hypothesis
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import buffer_behaviour

READ_TIMEOUT_MS = 3
EXAMPLES = 150
STEPS = 50


class Expect(Exception):
    """The model's prediction that an operation raises cls, leaving the read
    position at pos, with the given exception attributes."""

    def __init__(self, cls, pos, **attrs):
        super().__init__(cls.__name__)
        self.cls, self.pos, self.attrs = cls, pos, attrs


class Model:
    """What a PyBuffer should do, computed from a BytesIO of all the data."""

    def __init__(self, content_length, keep_consumed, line_limit):
        self.data = io.BytesIO()
        self.pos = 0
        self.content_length = content_length
        self.keep = keep_consumed
        self.line_limit = line_limit
        self.eof = self.aborted = self.closed = False

    # -- state

    @property
    def written(self):
        return self.data.seek(0, io.SEEK_END)

    @property
    def avail(self):
        if self.aborted or self.closed:
            return 0
        return max(0, self.written - self.pos)

    def unread(self, n=None):
        """The next n (all if None) unread bytes."""
        a = self.avail
        self.data.seek(self.pos)
        return self.data.read(a if n is None else min(n, a))

    @property
    def short(self):
        return self.content_length is not None and self.written < self.content_length

    def at_eof(self):
        return self.eof and not self.aborted and self.avail == 0 and not self.short

    def check_open(self):
        if self.closed:
            raise Expect(ValueError, self.pos)

    def wait(self, want, pos=None):
        """Waiting for `want` unread bytes: returns if they are there or the
        stream ended cleanly; else raises what the reader gets."""
        pos = self.pos if pos is None else pos
        if self.aborted and want > 0:
            raise Expect(erlang.StreamAborted, pos)
        if self.avail >= want:
            return
        if self.eof:
            if self.short:
                raise Expect(erlang.StreamIncomplete, pos)
            return
        raise Expect(erlang.ReadTimeout, pos)

    def take(self, n):
        piece = self.unread(n)
        return piece, self.pos + len(piece)

    # -- writer side

    def write(self, chunk):
        if self.eof or self.aborted or self.closed:
            return 'closed'
        if self.content_length is not None and self.written + len(chunk) > self.content_length:
            return 'overflow'
        self.data.seek(0, io.SEEK_END)
        self.data.write(chunk)
        return 'ok'

    def close_writer(self):
        if self.eof or self.aborted:
            return 'closed'
        self.eof = True
        return 'ok'

    def abort(self):
        self.aborted = True

    # -- reads; each returns (result, new position) or raises Expect

    def read(self, n):
        self.check_open()
        if n is None or n < 0:
            try:
                self.wait(self.avail + 1)
            except Expect as e:
                # what was consumed is given back while consumed data is kept
                e.pos = self.pos if self.keep else self.pos + self.avail
                raise
            return self.take(None)
        if n == 0:
            return b'', self.pos
        self.wait(n)
        return self.take(n)

    def read1(self, n):
        self.check_open()
        if n == 0:
            return b'', self.pos
        self.wait(1)
        return self.take(None if n is None or n < 0 else n)

    def readinto(self, n, one):
        self.check_open()
        if n == 0:
            return 0, self.pos
        self.wait(1 if one else n)
        piece, pos = self.take(n)
        return piece, pos

    def peek(self, n):
        self.check_open()
        self.wait(1)
        return self.unread(n if n is not None and n > 0 else None), self.pos

    def read_nonblock(self, n):
        self.check_open()
        return self.take(None if n is None or n < 0 else n)

    def line_at(self, pos, size):
        """readline(size) from pos: (line, new pos) or raises Expect."""
        saved, self.pos = self.pos, pos
        try:
            limit = size if size is not None and size >= 0 else None
            region = self.unread(limit)
            nl = region.find(b'\n')
            content = nl if nl >= 0 else len(region)
            if self.line_limit is not None and content > self.line_limit:
                raise Expect(erlang.LineTooLong, pos)
            if nl >= 0:
                return region[:nl + 1], pos + nl + 1
            if limit is not None and len(region) == limit:
                return region, pos + limit
            self.wait(len(region) + 1)
            return region, pos + len(region)
        finally:
            self.pos = saved

    def readline(self, size):
        self.check_open()
        return self.line_at(self.pos, size)

    def readlines(self, hint):
        self.check_open()
        lines, pos, total = [], self.pos, 0
        while True:
            try:
                line, pos = self.line_at(pos, None)
            except Expect as e:
                e.pos = self.pos if self.keep else e.pos
                raise
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines, pos

    def next(self):
        self.check_open()
        line, pos = self.line_at(self.pos, None)
        if not line:
            raise Expect(StopIteration, pos)
        return line, pos

    def readuntil(self, sep):
        self.check_open()
        region = self.unread()
        i = region.find(sep)
        if i >= 0:
            return self.take(i + len(sep))
        self.wait(len(region) + 1)
        raise Expect(erlang.IncompleteReadError, self.pos + len(region), partial=region, expected=None)

    def readexactly(self, n):
        if n < 0:
            raise Expect(ValueError, self.pos)
        self.check_open()
        self.wait(n)
        if self.avail >= n:
            return self.take(n)
        region = self.unread()
        raise Expect(erlang.IncompleteReadError, self.pos + len(region), partial=region, expected=n)

    def find(self, sub, start, end):
        self.check_open()
        return self.unread().find(sub, start, end), self.pos

    def seek(self, offset, whence):
        self.check_open()
        if not self.keep:
            raise Expect(io.UnsupportedOperation, self.pos)
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self.pos + offset
        elif whence == io.SEEK_END:
            if not self.eof:
                raise Expect(io.UnsupportedOperation, self.pos)
            pos = self.written + offset
        else:
            raise Expect(ValueError, self.pos)
        if pos < 0 or self.aborted or (pos > self.written and not self.eof):
            raise Expect(ValueError, self.pos)
        return pos, pos

    def view(self):
        self.check_open()
        if self.aborted:
            raise Expect(erlang.StreamAborted, self.pos)
        return self.unread(), self.pos


# ---------------------------------------------------------------- strategies

ALPHABET = [b'a', b'b', b'x', b'\n', b'\r']
# bytes from a small alphabet, so that separators and needles match often;
# lines of a few bytes and lines of more than a line_limit both occur
small_chunks = st.one_of(
    st.lists(st.sampled_from(ALPHABET), max_size=40).map(b''.join),
    st.lists(st.sampled_from(ALPHABET[:3]), max_size=80).map(b''.join))
# 2 KiB and more: the writer lends these to the stream as chunks of their own
big_chunks = st.tuples(small_chunks.filter(bool), st.integers(60, 2500)).map(
    lambda t: (t[0] * t[1])[:6000])
chunks = st.one_of(small_chunks, small_chunks, small_chunks, big_chunks)
few = st.integers(0, 24)
sizes = st.one_of(few, few, few, st.none(), st.integers(-2, -1), st.integers(0, 300),
                  st.integers(100, 7000))
needles = st.one_of(st.sampled_from([b'\n', b'ab', b'\r\n', b'x\nx', b'', b'bbb']),
                    small_chunks.filter(bool))
bounds = st.one_of(st.none(), st.integers(-60, 60), st.integers(0, 7000))


class PyBufferMachine(RuleBasedStateMachine):
    runs = 0  # examples run, reported to the Erlang suite
    outcomes = collections.Counter()  # (operation, 'ok' or exception): coverage

    @initialize(content_length=st.one_of(st.none(), st.none(), st.integers(0, 200),
                                         st.integers(0, 9000)),
                keep=st.sampled_from([True, True, True, False]),
                line_limit=st.one_of(st.none(), st.none(), st.integers(1, 50)),
                first=st.lists(chunks, max_size=3))
    def setup(self, content_length, keep, line_limit, first):
        type(self).runs += 1
        self.w = buffer_behaviour.writer()
        opts = {'read_timeout': READ_TIMEOUT_MS, 'keep_consumed': keep}
        if content_length is not None:
            opts['content_length'] = content_length
        if line_limit is not None:
            opts['line_limit'] = line_limit
        self.buf = self.w.new(**opts)
        self.m = Model(content_length, keep, line_limit)
        self.views = []  # (memoryview, the bytes it showed when taken)
        self.write(first)

    def teardown(self):
        for mv, _ in getattr(self, 'views', []):
            mv.release()
        if hasattr(self, 'buf'):
            self.buf.close()

    def check(self, what, actual, predict):
        try:
            want, pos = predict()
            expect = None
        except Expect as e:
            expect = e
        try:
            got, error = actual(), None
        except Exception as e:
            got, error = None, e
        op = what.split('(')[0]
        type(self).outcomes[op, 'ok' if expect is None else expect.cls.__name__] += 1
        if expect is None:
            if error is not None:
                raise AssertionError(f'{what}: model says {want!r}, PyBuffer raised {error!r}') from error
            if got != want:
                raise AssertionError(f'{what}: model says {want!r}, PyBuffer returned {got!r}')
            self.m.pos = pos
            return got
        if error is None:
            raise AssertionError(f'{what}: model says {expect.cls.__name__}, PyBuffer returned {got!r}')
        if type(error) is not expect.cls:
            raise AssertionError(f'{what}: model says {expect.cls.__name__}, PyBuffer raised {error!r}') from error
        for k, v in expect.attrs.items():
            if getattr(error, k) != v:
                raise AssertionError(f'{what}: {expect.cls.__name__}.{k} is {getattr(error, k)!r}, model says {v!r}')
        self.m.pos = expect.pos
        return None

    # -- Erlang side

    @rule(some=st.lists(chunks, min_size=1, max_size=4))
    def write(self, some):
        for chunk in some:
            want = self.m.write(chunk)
            got = self.w.write(self.buf, chunk)
            assert got == want, f'py_buffer:write({len(chunk)} bytes): {got}, model says {want}'

    @rule(some=st.lists(small_chunks, min_size=1, max_size=3))
    def write_small(self, some):
        """Writes twice as likely as any other operation: data to read."""
        self.write(some)

    @rule()
    def close_writer(self):
        # (after Python's close() too: py_buffer:close/1 still answers ok)
        want = self.m.close_writer()
        got = self.w.close(self.buf)
        assert got == want, f'py_buffer:close: {got}, model says {want}'

    @rule()
    def abort(self):
        # rare in real life, and it ends the interesting part: one time in eight
        if self.m.written % 8 == 1:
            self.w.abort(self.buf, 'client_gone')
            self.m.abort()

    @rule()
    def info(self):
        i = self.w.info(self.buf)
        m = self.m
        got = (i['written'], i['read_pos'], i['unread'], i['eof'], i['aborted'], i['reader_closed'],
               i['seekable'], i['content_length'])
        want = (m.written, m.pos, m.avail, m.eof, m.aborted, m.closed, m.keep, m.content_length)
        assert got == want, f'py_buffer:info: {got}, model says {want}'

    # -- Python side

    @rule(n=sizes)
    def read(self, n):
        self.check(f'read({n})', lambda: self.buf.read(n), lambda: self.m.read(n))

    @rule(n=sizes)
    def read1(self, n):
        self.check(f'read1({n})', lambda: self.buf.read1(n), lambda: self.m.read1(n))

    @rule(n=st.one_of(few, few, st.integers(0, 7000)), one=st.booleans())
    def readinto(self, n, one):
        target = bytearray(b'\xee' * (n + 2))

        def actual():
            view = memoryview(target)[1:n + 1]
            count = (self.buf.readinto1 if one else self.buf.readinto)(view)
            assert target[0] == 0xee and target[n + 1] == 0xee, 'wrote outside the target'
            return bytes(target[1:1 + count])
        name = 'readinto1' if one else 'readinto'
        self.check(f'{name}({n})', actual,
                   lambda: (lambda r: (r[0] if n else b'', r[1]))(self.m.readinto(n, one)))

    @rule(n=sizes)
    def peek(self, n):
        self.check(f'peek({n})', lambda: self.buf.peek(n), lambda: self.m.peek(n))

    @rule(n=sizes)
    def read_nonblock(self, n):
        self.check(f'read_nonblock({n})', lambda: self.buf.read_nonblock(n),
                   lambda: self.m.read_nonblock(n))

    @rule(size=st.one_of(st.none(), st.integers(-1, 60)))
    def readline(self, size):
        self.check(f'readline({size})', lambda: self.buf.readline(size),
                   lambda: self.m.readline(size))

    @rule(hint=st.one_of(st.none(), st.integers(-1, 80)))
    def readlines(self, hint):
        self.check(f'readlines({hint})', lambda: self.buf.readlines(hint),
                   lambda: self.m.readlines(hint))

    @rule()
    def next_line(self):
        self.check('next()', lambda: next(self.buf), self.m.next)

    @rule(sep=st.one_of(st.sampled_from([b'\n', b'ab', b'\r\n', b'x\nx', b'bbb', b'a']),
                        small_chunks.filter(bool)))
    def readuntil(self, sep):
        self.check(f'readuntil({sep!r})', lambda: self.buf.readuntil(sep),
                   lambda: self.m.readuntil(sep))

    @rule(n=st.one_of(few, few, few, st.integers(0, 300), st.just(-1)))
    def readexactly(self, n):
        self.check(f'readexactly({n})', lambda: self.buf.readexactly(n),
                   lambda: self.m.readexactly(n))

    @rule(sub=needles, start=bounds, end=bounds)
    def find(self, sub, start, end):
        self.check(f'find({sub!r}, {start}, {end})', lambda: self.buf.find(sub, start, end),
                   lambda: self.m.find(sub, start, end))

    @rule(offset=st.one_of(st.integers(-3, 60), st.integers(-40, 7000)),
          whence=st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
    def seek(self, offset, whence):
        if whence == 1:
            offset = offset % 80 - 50
        elif whence == 2:
            offset = offset % 60 - 50
        self.check(f'seek({offset}, {whence})', lambda: self.buf.seek(offset, whence),
                   lambda: self.m.seek(offset, whence))

    @rule()
    def view(self):
        def actual():
            mv = memoryview(self.buf)
            assert mv.readonly
            self.views.append((mv, bytes(mv)))
            return bytes(mv)
        self.check('memoryview()', actual, self.m.view)

    @rule()
    def close_reader(self):
        # one time in eight, or the rest of the run only sees ValueError
        if self.m.written % 8 == 3:
            self.buf.close()
            self.m.closed = True

    # -- after every step

    @invariant()
    def state_agrees(self):
        if not hasattr(self, 'buf'):
            return
        m, buf = self.m, self.buf
        for what, got, want in [('readable_amount()', buf.readable_amount(), m.avail),
                                ('len()', len(buf), m.avail),
                                ('at_eof()', buf.at_eof(), m.at_eof()),
                                ('closed', buf.closed, m.closed)]:
            assert got == want, f'{what}: {got!r}, model says {want!r}'
        if not m.closed:
            assert buf.tell() == m.pos, f'tell(): {buf.tell()}, model says {m.pos}'
            assert buf.seekable() == m.keep, f'seekable(): {buf.seekable()}, model says {m.keep}'
        for mv, seen in self.views:
            assert bytes(mv) == seen, 'a memoryview changed under its holder'


SETTINGS = PyBufferMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, derandomize=True, database=None,
    deadline=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large])


class ModelTest(PyBufferMachine.TestCase):
    pass


def run(writer_pid, ack, names=(), echo=False, explore=0):
    """Entry point for the Erlang suite (same result as buffer_behaviour.run,
    plus the number of hypothesis examples).  explore=N runs N examples from
    a random seed instead (a longer hunt by hand, not for CI)."""
    buffer_behaviour.WRITER = buffer_behaviour.Writer(writer_pid, ack)
    PyBufferMachine.TestCase.settings = SETTINGS
    if explore:
        PyBufferMachine.TestCase.settings = settings(SETTINGS, max_examples=explore,
                                                     derandomize=False)
    PyBufferMachine.runs = 0
    PyBufferMachine.outcomes.clear()
    suite = unittest.TestLoader().loadTestsFromTestCase(ModelTest)
    result = buffer_behaviour.run_tests(suite, names, echo)
    result['examples'] = PyBufferMachine.runs
    result['output'] += '\nOutcomes checked (operation, result: count):\n' + ''.join(
        f'  {op:14} {kind:20} {n}\n' for (op, kind), n in sorted(PyBufferMachine.outcomes.items()))
    result['hypothesis'] = hypothesis.__version__
    return result
