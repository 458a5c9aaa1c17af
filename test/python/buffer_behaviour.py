"""One behaviour suite, two implementations: io.BytesIO and erlang.PyBuffer.

Run by test/py_buffer_python_SUITE.erl (not shipped).  In the spirit of
CPython's Lib/test/test_memoryio.py: the test methods of FileBehaviour run
against every implementation through a factory, make(chunks), that returns a
readable binary file holding b''.join(chunks), at EOF after them.  Where
erlang.PyBuffer deliberately differs from io.BytesIO the test branches on a
class attribute that names the difference (see PyBufferTest).  PyBufferOnly
holds what BytesIO has no counterpart for.

Python cannot create a PyBuffer: the Erlang suite runs a writer process that
creates buffers and writes them on request.  Writer below is its client.
"""
import csv
import ctypes
import email
import email.policy
import gzip
import hashlib
import io
import json
import os
import pickle
import queue
import random
import shutil
import sys
import tarfile
import threading
import time
import unittest
import zipfile

import erlang

# ---------------------------------------------------------------- the writer

_delivered = queue.SimpleQueue()

ACK = {b'k': 'ok', b'c': 'closed', b'o': 'overflow', b't': 'timeout', b'm': 'enomem',
       b'b': 'badarg'}


def deliver(term):
    """Called by the Erlang writer (on another context) to hand over a term."""
    _delivered.put(term)


class Writer:
    """Client of the Erlang writer process of py_buffer_python_SUITE.

    Every request is acknowledged by one byte in the ack buffer, read here
    before returning: when a request returns, Erlang has done it.
    """

    def __init__(self, pid, ack):
        self.pid = pid
        self.ack = ack

    def request(self, *msg):
        erlang.send(self.pid, msg)
        code = self.ack.read(1)
        return ACK[code]

    def _delivered(self, *msg):
        result = self.request(*msg)
        if result != 'ok':
            raise RuntimeError(f'writer request {msg[0]!r} failed: {result}')
        return _delivered.get_nowait()

    def new(self, **opts):
        """A new open buffer (py_buffer:new(Opts)) owned by the writer."""
        return self._delivered('new', opts)

    def write(self, buf, data):
        """py_buffer:write/2: 'ok', 'closed', 'overflow', 'timeout'."""
        return self.request('write', buf, bytes(data))

    def close(self, buf):
        return self.request('close', buf)

    def abort(self, buf, reason='client_gone'):
        return self.request('abort', buf, reason)

    def info(self, buf):
        return {str(k): v for k, v in self._delivered('info', buf).items()}

    def later(self, buf, *ops):
        """A helper process runs ops while Python goes on: ('sleep', ms),
        ('write', data), ('close',), ('abort', reason)."""
        return self.request('later', buf, list(ops))

    def make(self, chunks, close=True, **opts):
        buf = self.new(**opts)
        for chunk in chunks:
            result = self.write(buf, chunk)
            if result != 'ok':
                raise RuntimeError(f'py_buffer:write -> {result}')
        if close:
            self.close(buf)
        return buf


WRITER = None


def writer():
    if WRITER is None:
        raise unittest.SkipTest('no Erlang writer: run from py_buffer_python_SUITE')
    return WRITER


class _Tee(io.StringIO):
    """Keeps the output; with echo, also writes it to stderr as it comes (to
    watch a run that hangs)."""

    def __init__(self, echo):
        super().__init__()
        self.echo = echo

    def write(self, s):
        if self.echo:
            os.write(2, s.encode('utf-8', 'replace'))
        return super().write(s)


def select(suite, names):
    """The tests of suite whose id contains one of names (all if none)."""
    if not names:
        return suite
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    flat = []

    def walk(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                walk(t)
            elif any(n in t.id() for n in names):
                flat.append(t)
    walk(suite)
    return unittest.TestSuite(flat)


def run_tests(suite, names=(), echo=False):
    out = _Tee(echo)
    result = unittest.TextTestRunner(stream=out, verbosity=2).run(select(suite, names))
    return {'tests': result.testsRun,
            'failures': len(result.failures) + len(result.unexpectedSuccesses),
            'errors': len(result.errors),
            'skipped': len(result.skipped),
            'expected_failures': len(result.expectedFailures),
            'output': out.getvalue()}


def run(writer_pid, ack, names=(), echo=False):
    """Entry point for the Erlang suite.  When debugging: names selects tests
    (substrings of their ids), echo shows the output as it comes."""
    global WRITER
    WRITER = Writer(writer_pid, ack)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in (BytesIOTest, PyBufferTest, PyBufferOnly):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return run_tests(suite, names, echo)

# ---------------------------------------------------------------- data


LINES = [b'first line\n', b'second line, longer than the first\n', b'\n', b'crlf line\r\n',
         b'tab\tand \x00 nul\n', b'last line without newline']
TEXT = b''.join(LINES)
CLOSED = r'^I/O operation on closed file\.$'


def random_bytes(n, seed=7):
    return random.Random(seed).randbytes(n)


def split_cases(data):
    """(label, chunks) ways of writing data: where the chunk boundaries fall
    must not show."""
    n = len(data)
    cases = [('one chunk', [data])]
    if n > 1:
        cases += [('first byte apart', [data[:1], data[1:]]),
                  ('halves', [data[:n // 2], data[n // 2:]]),
                  ('3-byte chunks', [data[i:i + 3] for i in range(0, n, 3)]),
                  ('empty writes between', [b'', data[:n // 3], b'', data[n // 3:], b''])]
    if 1 < n <= 128:
        cases.append(('1-byte chunks', [data[i:i + 1] for i in range(n)]))
    return cases


def mixed_chunks(data, seed=3):
    """Chunks of very different sizes: tiny ones that share storage, and big
    ones (2 KiB and more) that the writer hands over as their own chunks."""
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice([1, 7, 100, 511, 2048, 4096, 65536, 70001])
        chunks.append(data[i:i + n])
        i += n
    return chunks


def expected_readlines(lines, hint):
    if hint is None or hint <= 0:
        return list(lines)
    out, total = [], 0
    for line in lines:
        out.append(line)
        total += len(line)
        if total >= hint:
            break
    return out

# ---------------------------------------------------------------- shared suite


class FileBehaviour:
    """Test methods run against every implementation (mixin)."""

    #: splits data in several ways (make() then writes each chunk apart)
    SPLITS = True
    #: writable() answers True
    WRITABLE = True
    #: seek(-n, SEEK_CUR/SEEK_END) before the start goes to 0 instead of raising
    CLAMPS_RELATIVE_SEEK = True

    def make(self, chunks, **opts):
        raise NotImplementedError

    def cases(self, data):
        return split_cases(data) if self.SPLITS else [('one chunk', [data])]

    def need(self, f, method):
        if not hasattr(f, method):
            self.skipTest(f'{type(f).__name__} has no {method}()')

    # -- read

    def test_read_everything(self):
        for label, chunks in self.cases(TEXT):
            for args in [(), (None,), (-1,), (-7,)]:
                with self.subTest(split=label, args=args):
                    f = self.make(chunks)
                    self.assertEqual(f.read(*args), TEXT)
                    self.assertEqual(f.read(), b'')
                    self.assertEqual(f.read(5), b'')
                    self.assertEqual(f.tell(), len(TEXT))

    def test_read_sizes(self):
        sizes = [1, 2, 3, 5, 8, 13, 100]
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                got, i = [], 0
                while True:
                    n = sizes[i % len(sizes)]
                    i += 1
                    remaining = len(TEXT) - sum(map(len, got))
                    piece = f.read(n)
                    self.assertEqual(len(piece), min(n, remaining))
                    if not piece:
                        break
                    got.append(piece)
                    self.assertEqual(f.tell(), sum(map(len, got)))
                self.assertEqual(b''.join(got), TEXT)

    def test_read_zero(self):
        f = self.make([TEXT])
        self.assertEqual(f.read(0), b'')
        self.assertEqual(f.tell(), 0)
        f.read()
        self.assertEqual(f.read(0), b'')

    def test_read_bad_arguments(self):
        f = self.make([TEXT])
        for name in ['read', 'read1', 'readline']:
            with self.subTest(method=name):
                with self.assertRaisesRegex(TypeError, r"^argument should be integer or None, not 'float'$"):
                    getattr(f, name)(1.5)
                self.assertRaises(TypeError, getattr(f, name), '1')
                self.assertRaises(TypeError, getattr(f, name), 1, 2)
                self.assertRaises(TypeError, getattr(f, name), size=1)
                self.assertRaises(OverflowError, getattr(f, name), 2 ** 64)
        self.assertRaises(TypeError, f.readlines, 1.5)
        self.assertEqual(f.read(), TEXT)

    def test_read_huge_size(self):
        f = self.make([TEXT])
        self.assertEqual(f.read(sys.maxsize), TEXT)
        f.seek(0)
        self.assertEqual(f.readline(sys.maxsize), LINES[0])
        self.assertEqual(f.read1(sys.maxsize), TEXT[len(LINES[0]):])

    def test_read1(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertEqual(f.read1(4), TEXT[:4])
                self.assertEqual(f.read1(0), b'')
                rest = b''
                while piece := f.read1():
                    rest += piece
                self.assertEqual(rest, TEXT[4:])
                self.assertEqual(f.read1(), b'')
                self.assertEqual(f.read1(None), b'')
                self.assertEqual(f.read1(-1), b'')
                self.assertEqual(f.read1(10), b'')

    def test_readinto(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                b = bytearray(7)
                self.assertEqual(f.readinto(b), 7)
                self.assertEqual(b, TEXT[:7])
                target = bytearray(b'.' * 10)
                self.assertEqual(f.readinto(memoryview(target)[2:6]), 4)
                self.assertEqual(target, b'..' + TEXT[7:11] + b'....')
                self.assertEqual(f.readinto(bytearray(0)), 0)
                big = bytearray(1000)
                n = f.readinto(big)
                self.assertEqual(n, len(TEXT) - 11)
                self.assertEqual(big[:n], TEXT[11:])
                self.assertEqual(f.readinto(bytearray(5)), 0)

    def test_readinto_array(self):
        import array
        f = self.make([TEXT])
        a = array.array('B', bytes(4))
        self.assertEqual(f.readinto(a), 4)
        self.assertEqual(a.tobytes(), TEXT[:4])

    def test_readinto_refuses_readonly(self):
        f = self.make([TEXT])
        for target in [b'xyz', memoryview(b'xyz'), 'text', memoryview(bytearray(10))[::2]]:
            with self.subTest(target=type(target).__name__):
                with self.assertRaisesRegex(TypeError, r'read-write bytes-like object'):
                    f.readinto(target)
        self.assertEqual(f.read(), TEXT)

    def test_readinto1(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                b = bytearray(5)
                self.assertEqual(f.readinto1(b), 5)
                self.assertEqual(b, TEXT[:5])
                got = bytearray()
                while n := f.readinto1(b):
                    got += b[:n]
                self.assertEqual(got, TEXT[5:])
                self.assertEqual(f.readinto1(bytearray(3)), 0)

    def test_readall(self):
        f = self.make([TEXT])
        self.need(f, 'readall')
        f.read(3)
        self.assertEqual(f.readall(), TEXT[3:])
        self.assertEqual(f.readall(), b'')

    def test_peek(self):
        """io.BufferedReader's contract: some bytes, at least one unless at
        EOF, without moving the position."""
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.need(f, 'peek')
                f.read(3)
                p = f.peek()
                self.assertTrue(p)
                self.assertTrue(TEXT[3:].startswith(p))
                self.assertTrue(TEXT[3:].startswith(f.peek(1)))
                self.assertTrue(f.peek(1))
                self.assertEqual(f.tell(), 3)
                self.assertEqual(f.read(), TEXT[3:])
                self.assertEqual(f.peek(), b'')

    # -- lines

    def test_readline(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                for line in LINES:
                    self.assertEqual(f.readline(), line)
                self.assertEqual(f.readline(), b'')
                self.assertEqual(f.readline(), b'')

    def test_readline_size(self):
        second = LINES[1]
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertEqual(f.readline(0), b'')
                self.assertEqual(f.readline(5), b'first')
                self.assertEqual(f.readline(100), b' line\n')
                self.assertEqual(f.readline(len(second) - 1), second[:-1])
                self.assertEqual(f.readline(1), b'\n')
                self.assertEqual(f.readline(None), LINES[2])
                self.assertEqual(f.readline(-1), LINES[3])
                self.assertEqual(f.readline(len(LINES[4])), LINES[4])
                self.assertEqual(f.readline(-3), LINES[5])
                self.assertEqual(f.readline(3), b'')
        self.assertRaises(TypeError, self.make([TEXT]).readline, 1.0)

    def test_readline_without_trailing_newline(self):
        for data, lines in [(b'abc', [b'abc']), (b'abc\ndef', [b'abc\n', b'def']),
                            (b'\n\nx', [b'\n', b'\n', b'x']), (b'x\r', [b'x\r'])]:
            for label, chunks in self.cases(data):
                with self.subTest(data=data, split=label):
                    f = self.make(chunks)
                    self.assertEqual([f.readline() for _ in lines], lines)
                    self.assertEqual(f.readline(), b'')

    def test_readlines(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                self.assertEqual(self.make(chunks).readlines(), LINES)
        for hint in [None, -1, 0, 1, len(LINES[0]) - 1, len(LINES[0]), len(LINES[0]) + 1,
                     40, len(TEXT), 10 ** 6]:
            with self.subTest(hint=hint):
                f = self.make([TEXT])
                want = expected_readlines(LINES, hint)
                self.assertEqual(f.readlines(hint), want)
                self.assertEqual(f.read(), TEXT[len(b''.join(want)):])
        self.assertEqual(self.make([]).readlines(), [])

    def test_iteration(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertIs(iter(f), f)
                self.assertEqual(list(f), LINES)
                self.assertRaises(StopIteration, next, f)
                self.assertEqual(list(f), [])
        f = self.make([TEXT])
        f.readline()
        f.read(3)
        self.assertEqual(next(f), LINES[1][3:])
        self.assertEqual([line for line in f], LINES[2:])

    def test_mixed_reads(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                got = [f.readline(), f.read(3), f.read1(2)]
                b = bytearray(4)
                n = f.readinto(b)
                got.append(bytes(b[:n]))
                got += [next(f), f.readline(2), f.read()]
                self.assertEqual(b''.join(got), TEXT)

    # -- positions

    def test_tell_and_seek_set(self):
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertEqual(f.tell(), 0)
                f.read(5)
                self.assertEqual(f.tell(), 5)
                self.assertEqual(f.seek(0), 0)
                self.assertEqual(f.read(), TEXT)
                self.assertEqual(f.seek(3), 3)
                self.assertEqual(f.read(2), TEXT[3:5])
                self.assertEqual(f.seek(3, io.SEEK_SET), 3)
                self.assertEqual(f.readline(), LINES[0][3:])
                self.assertEqual(f.seek(len(TEXT)), len(TEXT))
                self.assertEqual(f.read(), b'')
                self.assertEqual(f.seek(len(TEXT) - 4), len(TEXT) - 4)
                self.assertEqual(f.read(), TEXT[-4:])

    def test_seek_cur_and_end(self):
        n = len(TEXT)
        for label, chunks in self.cases(TEXT):
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertEqual(f.seek(4, io.SEEK_CUR), 4)
                self.assertEqual(f.seek(0, io.SEEK_CUR), 4)
                self.assertEqual(f.read(2), TEXT[4:6])
                self.assertEqual(f.seek(-3, io.SEEK_CUR), 3)
                self.assertEqual(f.read(1), TEXT[3:4])
                self.assertEqual(f.seek(0, io.SEEK_END), n)
                self.assertEqual(f.read(), b'')
                self.assertEqual(f.seek(-4, io.SEEK_END), n - 4)
                self.assertEqual(f.read(), TEXT[-4:])
                self.assertEqual(f.seek(-n, io.SEEK_END), 0)
                self.assertEqual(f.readline(), LINES[0])

    def test_seek_argument_errors(self):
        # io's wording, from public C API calls (3.13 removed the private ones)
        f = self.make([TEXT])
        with self.assertRaisesRegex(TypeError, r"^seek expected at least 1 argument, got 0$"):
            f.seek()
        with self.assertRaisesRegex(TypeError, r"^seek expected at most 2 arguments, got 3$"):
            f.seek(0, 1, 2)
        with self.assertRaises(OverflowError):
            f.seek(0, 2 ** 40)
        with self.assertRaises(TypeError):
            f.seek("x")
        with self.assertRaises(TypeError):
            f.seek(0, 1.0)
        self.assertEqual(f.tell(), 0)

    def test_seek_past_end(self):
        n = len(TEXT)
        f = self.make([TEXT])
        self.assertEqual(f.seek(n + 10), n + 10)
        self.assertEqual(f.tell(), n + 10)
        self.assertEqual(f.read(), b'')
        self.assertEqual(f.read(3), b'')
        self.assertEqual(f.read1(3), b'')
        self.assertEqual(f.readline(), b'')
        self.assertEqual(f.readinto(bytearray(3)), 0)
        self.assertEqual(f.tell(), n + 10)
        self.assertEqual(f.seek(5, io.SEEK_END), n + 5)
        self.assertEqual(f.seek(-2, io.SEEK_CUR), n + 3)
        self.assertEqual(f.seek(0), 0)
        self.assertEqual(f.read(), TEXT)

    def test_seek_errors(self):
        f = self.make([TEXT])
        f.read(2)
        with self.assertRaisesRegex(ValueError, r'^negative seek value -1$'):
            f.seek(-1)
        with self.assertRaisesRegex(ValueError, r'^invalid whence \(3, should be 0, 1 or 2\)$'):
            f.seek(0, 3)
        self.assertRaises(TypeError, f.seek, 'x')
        self.assertRaises(TypeError, f.seek, 1.5)
        self.assertRaises(TypeError, f.seek)
        self.assertRaises(OverflowError, f.seek, 2 ** 64)
        self.assertEqual(f.tell(), 2)
        self.assertEqual(f.read(), TEXT[2:])

    def test_seek_before_start_relative(self):
        f = self.make([TEXT])
        f.seek(2)
        if self.CLAMPS_RELATIVE_SEEK:
            self.assertEqual(f.seek(-5, io.SEEK_CUR), 0)
            self.assertEqual(f.seek(-len(TEXT) - 1, io.SEEK_END), 0)
        else:
            with self.assertRaisesRegex(ValueError, r'^negative seek value -3$'):
                f.seek(-5, io.SEEK_CUR)
            with self.assertRaisesRegex(ValueError, r'^negative seek value -1$'):
                f.seek(-len(TEXT) - 1, io.SEEK_END)
            self.assertEqual(f.tell(), 2)

    # -- closing

    def test_close(self):
        f = self.make([TEXT])
        self.assertFalse(f.closed)
        self.assertIsNone(f.close())
        self.assertTrue(f.closed)
        self.assertIsNone(f.close())
        self.assertTrue(f.closed)

    def test_context_manager(self):
        f = self.make([TEXT])
        with f as g:
            self.assertIs(g, f)
            self.assertEqual(g.readline(), LINES[0])
        self.assertTrue(f.closed)
        f = self.make([TEXT])
        with self.assertRaises(KeyError):
            with f:
                raise KeyError('inside')
        self.assertTrue(f.closed)
        with self.assertRaisesRegex(ValueError, CLOSED):
            with f:
                pass

    def test_closed_file_errors(self):
        f = self.make([TEXT])
        f.close()
        calls = {
            'read()': lambda: f.read(), 'read(1)': lambda: f.read(1), 'read(0)': lambda: f.read(0),
            'read1': lambda: f.read1(1), 'readinto': lambda: f.readinto(bytearray(1)),
            'readinto1': lambda: f.readinto1(bytearray(1)), 'readline': lambda: f.readline(),
            'readlines': lambda: f.readlines(), 'next': lambda: next(f),
            'for': lambda: [line for line in f], 'seek': lambda: f.seek(0), 'tell': lambda: f.tell(),
            'readable': lambda: f.readable(), 'writable': lambda: f.writable(),
            'seekable': lambda: f.seekable(), 'flush': lambda: f.flush(), 'isatty': lambda: f.isatty(),
            '__enter__': lambda: f.__enter__(),
        }
        for name in ['readall', 'peek']:
            if hasattr(f, name):
                calls[name] = getattr(f, name)
        for name, call in calls.items():
            with self.subTest(call=name):
                with self.assertRaisesRegex(ValueError, CLOSED):
                    call()

    def test_capabilities(self):
        f = self.make([TEXT])
        self.assertIs(f.readable(), True)
        self.assertIs(f.seekable(), True)
        self.assertIs(f.writable(), self.WRITABLE)
        self.assertIs(f.isatty(), False)
        self.assertIsNone(f.flush())
        self.assertRaises(io.UnsupportedOperation, f.fileno)
        self.assertIsInstance(f, io.BufferedIOBase)
        self.assertIsInstance(f, io.IOBase)

    def test_empty(self):
        for chunks in [[], [b''], [b'', b'']]:
            with self.subTest(chunks=chunks):
                f = self.make(chunks)
                self.assertEqual(f.read(), b'')
                self.assertEqual(f.read(1), b'')
                self.assertEqual(f.read1(), b'')
                self.assertEqual(f.readline(), b'')
                self.assertEqual(f.readlines(), [])
                self.assertEqual(list(f), [])
                self.assertEqual(f.readinto(bytearray(3)), 0)
                self.assertEqual(f.tell(), 0)
                self.assertEqual(f.seek(0, io.SEEK_END), 0)

    def test_large_reads(self):
        data = random_bytes(1_000_000)
        chunks = mixed_chunks(data) if self.SPLITS else [data]
        f = self.make(chunks)
        rng = random.Random(11)
        pos = 0
        while True:
            op = rng.choice(['read', 'read1', 'readinto', 'readline'])
            n = rng.choice([1, 3, 100, 4096, 65536, 200000])
            if op == 'read':
                piece = f.read(n)
            elif op == 'read1':
                piece = f.read1(n)
                self.assertLessEqual(len(piece), n)
            elif op == 'readinto':
                b = bytearray(n)
                piece = bytes(b[:f.readinto(b)])
            else:
                piece = f.readline(n)
            if op in ('read', 'readinto'):
                self.assertEqual(len(piece), min(n, len(data) - pos))
            self.assertEqual(piece, data[pos:pos + len(piece)])
            pos += len(piece)
            self.assertEqual(f.tell(), pos)
            if not piece and pos == len(data):
                break
        self.assertEqual(pos, len(data))

    # -- the standard library on top

    def test_text_wrapper(self):
        text = 'héllo wörld\r\n€ euro\n日本語のテキスト\nend'
        data = text.encode('utf-8')
        for label, chunks in self.cases(data):
            with self.subTest(split=label):
                f = self.make(chunks)
                t = io.TextIOWrapper(f, encoding='utf-8')
                self.assertEqual(t.readline(), 'héllo wörld\n')
                self.assertEqual(t.read(3), '€ e')
                self.assertEqual(t.read(), 'uro\n日本語のテキスト\nend')
                t.close()
                self.assertTrue(f.closed)
        f = self.make([data])
        lines = list(io.TextIOWrapper(f, encoding='utf-8', newline=''))
        self.assertEqual(lines, ['héllo wörld\r\n', '€ euro\n', '日本語のテキスト\n', 'end'])

    def test_text_wrapper_tell_and_seek(self):
        """TextIOWrapper.tell() snapshots the decoder against buffer.tell(),
        seek() replays from there: both need the binary positions right."""
        data = 'ab\né\n日本\nend\n'.encode('utf-8')
        for label, chunks in self.cases(data):
            with self.subTest(split=label):
                t = io.TextIOWrapper(self.make(chunks), encoding='utf-8')
                self.assertEqual(t.readline(), 'ab\n')
                self.assertEqual(t.read(1), 'é')
                mark = t.tell()
                self.assertEqual(t.read(), '\n日本\nend\n')
                self.assertEqual(t.seek(mark), mark)
                self.assertEqual(t.readline(), '\n')
                self.assertEqual(t.readline(), '日本\n')
                t.seek(0)
                self.assertEqual(t.read(), data.decode('utf-8'))

    def test_csv(self):
        rows = [['name', 'note', 'n'], ['a, b', 'line\nbreak', '1'], ['quote "x"', 'é', '2']]
        out = io.StringIO(newline='')
        csv.writer(out).writerows(rows)
        data = out.getvalue().encode('utf-8')
        for label, chunks in self.cases(data):
            with self.subTest(split=label):
                f = self.make(chunks)
                got = list(csv.reader(io.TextIOWrapper(f, encoding='utf-8', newline='')))
                self.assertEqual(got, rows)

    def test_json_load(self):
        obj = {'a': [1, 2.5, None, True], 'b': {'ü': 'ß' * 100}, 'c': list(range(300))}
        data = json.dumps(obj, ensure_ascii=False).encode('utf-8')
        for label, chunks in self.cases(data):
            with self.subTest(split=label):
                self.assertEqual(json.load(self.make(chunks)), obj)

    def test_hashlib_file_digest(self):
        data = random_bytes(300_000, seed=5)
        for label, chunks in [('one chunk', [data]), ('mixed', mixed_chunks(data))]:
            if not self.SPLITS and label != 'one chunk':
                continue
            with self.subTest(split=label):
                f = self.make(chunks)
                self.assertEqual(hashlib.file_digest(f, 'sha256').hexdigest(),
                                 hashlib.sha256(data).hexdigest())

    def test_shutil_copyfileobj(self):
        data = random_bytes(200_000, seed=9)
        for length in [None, 1000, 1 << 20]:
            with self.subTest(length=length):
                f = self.make(mixed_chunks(data) if self.SPLITS else [data])
                out = io.BytesIO()
                if length is None:
                    shutil.copyfileobj(f, out)
                else:
                    shutil.copyfileobj(f, out, length)
                self.assertEqual(out.getvalue(), data)

    def test_email_message_from_binary_file(self):
        data = (b'From: a@example.org\r\nTo: b@example.org\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n'
                b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
                b'preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
                b'body text\r\n--XYZ\r\nContent-Type: application/octet-stream\r\n'
                b'Content-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--XYZ--\r\n')
        want = email.message_from_bytes(data, policy=email.policy.default)
        for label, chunks in self.cases(data):
            with self.subTest(split=label):
                msg = email.message_from_binary_file(self.make(chunks), policy=email.policy.default)
                self.assertEqual(str(msg['subject']), 'héllo')
                parts = [p.get_payload(decode=True) for p in msg.iter_parts()]
                self.assertEqual(parts, [b'body text', b'\x00\x01\x02\x03\x04\x05'])
                self.assertEqual(msg.as_bytes(), want.as_bytes())

    def test_pickle_load_sequence(self):
        objs = [{'k': list(range(50))}, 'text é', b'\x00' * 3000, (1, 2.0, None)]
        for protocol in [0, 2, 5]:
            out = io.BytesIO()
            for obj in objs:
                pickle.dump(obj, out, protocol=protocol)
            data = out.getvalue() + b'TAIL'
            for label, chunks in self.cases(data)[:3]:
                with self.subTest(protocol=protocol, split=label):
                    f = self.make(chunks)
                    self.assertEqual([pickle.load(f) for _ in objs], objs)
                    self.assertEqual(f.read(), b'TAIL')

    def test_gzip(self):
        data = random_bytes(50_000, seed=1) * 4
        packed = gzip.compress(data)
        for label, chunks in self.cases(packed)[:3]:
            with self.subTest(split=label):
                with gzip.GzipFile(fileobj=self.make(chunks)) as g:
                    self.assertEqual(g.read(), data)

    def test_zipfile(self):
        out = io.BytesIO()
        with zipfile.ZipFile(out, 'w', compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr('a.txt', b'alpha\n' * 100)
            z.writestr('dir/b.bin', random_bytes(10_000))
        data = out.getvalue()
        for label, chunks in self.cases(data)[:3]:
            with self.subTest(split=label):
                with zipfile.ZipFile(self.make(chunks)) as z:
                    self.assertEqual(z.namelist(), ['a.txt', 'dir/b.bin'])
                    self.assertEqual(z.read('a.txt'), b'alpha\n' * 100)
                    self.assertEqual(z.read('dir/b.bin'), random_bytes(10_000))

    def test_tarfile_stream(self):
        out = io.BytesIO()
        members = {'one.txt': b'1' * 700, 'two.bin': random_bytes(5000, seed=2)}
        with tarfile.open(fileobj=out, mode='w') as t:
            for name, body in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(body)
                t.addfile(info, io.BytesIO(body))
        data = out.getvalue()
        for label, chunks in self.cases(data)[:3]:
            with self.subTest(split=label):
                got = {}
                with tarfile.open(fileobj=self.make(chunks), mode='r|') as t:
                    for m in t:
                        got[m.name] = t.extractfile(m).read()
                self.assertEqual(got, members)


class BytesIOTest(FileBehaviour, unittest.TestCase):
    SPLITS = False

    def make(self, chunks, **opts):
        return io.BytesIO(b''.join(chunks))


class PyBufferTest(FileBehaviour, unittest.TestCase):
    #: read-only: writes come from Erlang
    WRITABLE = False
    #: a relative seek before the start raises, as for an absolute one
    CLAMPS_RELATIVE_SEEK = False

    def make(self, chunks, **opts):
        return writer().make(chunks, **opts)

    def test_read_huge_size(self):
        """KNOWN BUG (c_src/buffer_type.c read_some, reported): read(n) for
        more than is there allocates n bytes up front (OverflowError for
        sys.maxsize, MemoryError or a huge allocation for a lying
        Content-Length), where BytesIO, and PyBuffer before, return what there
        is.  Remove expectedFailure once fixed."""
        super().test_read_huge_size()

# ---------------------------------------------------------------- PyBuffer only


class PyBufferOnly(unittest.TestCase):
    """What io.BytesIO has no counterpart for."""

    def setUp(self):
        self.w = writer()

    def new(self, *chunks, close=False, **opts):
        return self.w.make(chunks, close=close, **opts)

    def put(self, buf, *chunks):
        for chunk in chunks:
            self.assertEqual(self.w.write(buf, chunk), 'ok')

    def test_type(self):
        buf = self.new(b'x', close=True)
        self.assertIs(type(buf), erlang.PyBuffer)
        self.assertEqual(buf.mode, 'rb')
        with self.assertRaises(TypeError):
            erlang.PyBuffer()
        self.assertTrue(issubclass(erlang.StreamAborted, ConnectionError))
        self.assertTrue(issubclass(erlang.StreamIncomplete, erlang.StreamAborted))
        self.assertTrue(issubclass(erlang.ReadTimeout, TimeoutError))
        self.assertTrue(issubclass(erlang.LineTooLong, ValueError))
        self.assertTrue(issubclass(erlang.IncompleteReadError, EOFError))
        self.assertTrue(issubclass(erlang.CallTimeout, TimeoutError))

    def test_unsupported_operations(self):
        buf = self.new(b'abc', close=True)
        self.assertRaises(io.UnsupportedOperation, buf.write, b'x')
        self.assertRaises(io.UnsupportedOperation, buf.fileno)
        self.assertEqual(buf.read(), b'abc')

    def test_readall_and_peek(self):
        buf = self.new(b'abcdef')
        self.assertEqual(buf.peek(), b'abcdef')
        self.assertEqual(buf.peek(2), b'ab')
        self.assertEqual(buf.peek(0), b'abcdef')
        self.assertEqual(buf.peek(100), b'abcdef')
        self.assertEqual(buf.tell(), 0)
        self.assertEqual(buf.read(3), b'abc')
        self.assertEqual(buf.peek(), b'def')
        self.put(buf, b'gh')
        self.w.close(buf)
        self.assertEqual(buf.readall(), b'defgh')
        self.assertEqual(buf.peek(), b'')
        self.assertEqual(buf.readall(), b'')

    def test_peek_waits_for_data(self):
        buf = self.new(read_timeout=50)
        self.assertRaises(erlang.ReadTimeout, buf.peek)
        self.w.later(buf, ('sleep', 20), ('write', b'late'))
        self.assertEqual(buf.peek(), b'late')
        self.assertEqual(buf.read(4), b'late')

    # -- find

    def check_find(self, buf, rest, needles, bounds):
        for needle in needles:
            for bound in bounds:
                with self.subTest(needle=needle[:20], bound=bound):
                    self.assertEqual(buf.find(needle, *bound), rest.find(needle, *bound))

    def test_find(self):
        data = b'hello world, hello erlang\n'
        needles = [b'h', b'hello', b'erlang', b'o w', b'xyz', b'', b'g\n', b'\n', data, data + b'!']
        bounds = [(), (None,), (0,), (1,), (-6,), (0, 5), (0, -1), (3, 3), (100,), (-100,),
                  (5, 2), (None, 10), (13, None), (-100, 100), (len(data),), (len(data) + 1,)]
        for label, chunks in split_cases(data):
            with self.subTest(split=label):
                buf = self.new(*chunks, close=True)
                self.check_find(buf, data, needles, bounds)
                buf.read(6)
                self.check_find(buf, data[6:], needles, bounds)
                self.assertEqual(buf.tell(), 6)
                self.assertEqual(buf.read(), data[6:])
                self.assertEqual(buf.find(b'h'), -1)
                self.assertEqual(buf.find(b''), 0)
        buf = self.new(data)
        self.assertRaises(TypeError, buf.find)
        self.assertRaises(TypeError, buf.find, 'str')
        self.assertRaises(TypeError, buf.find, b'h', 'x')
        self.assertEqual(buf.find(bytearray(b'world')), 6)
        self.assertEqual(buf.find(memoryview(b'world')), 6)

    def test_find_sees_only_what_is_written(self):
        buf = self.new(b'multipart --bou')
        self.assertEqual(buf.find(b'--boundary'), -1)
        self.put(buf, b'ndary\r\n')
        self.assertEqual(buf.find(b'--boundary'), 10)
        self.assertEqual(buf.find(b'\r\n', -2), 20)

    def test_find_across_chunk_boundaries(self):
        """Every needle found where bytes.find finds it, whatever the chunk
        layout: boundaries of big writes (each its own chunk), of small writes
        sharing storage, and a small chunk between two big ones."""
        data = random_bytes(12_000, seed=21)
        layouts = {
            'big': [data[:4096], data[4096:6500], data[6500:9000], data[9000:]],
            'small': [data[i:min(i + 37, 3000)] for i in range(0, 3000, 37)] + [data[3000:]],
            'big-small-big': [data[:4096], data[4096:4106], data[4106:]],
            'mixed': mixed_chunks(data, seed=8),
        }
        boundaries = [512, 1024, 2048, 4096, 4106, 6500, 9000]
        lengths = [1, 2, 3, 5, 16, 255, 256, 257, 300, 1000]
        for name, chunks in layouts.items():
            with self.subTest(layout=name):
                buf = self.new(*chunks, close=True)
                for b in boundaries:
                    for n in lengths:
                        for k in sorted({1, 2, n // 2, n - 1, n, n + 1} - {0}):
                            at = b - k
                            if at < 0:
                                continue
                            needle = data[at:at + n]
                            self.assertEqual(buf.find(needle), data.find(needle),
                                             (b, n, k))
                            self.assertEqual(buf.find(needle, at), at, (b, n, k))
                            self.assertEqual(buf.find(needle, at + 1), data.find(needle, at + 1))
                            self.assertEqual(buf.find(needle, at - 3, at + n), data.find(needle, at - 3, at + n))
                            self.assertEqual(buf.find(needle, 0, at + n - 1), data.find(needle, 0, at + n - 1))
                # a needle that is not there, but whose prefix is, at a boundary
                probe = data[4090:4100] + b'\xff\xfe\xfd'
                self.assertEqual(buf.find(probe), data.find(probe))
                buf.read(4000)
                self.assertEqual(buf.find(data[4090:4400]), 90)
                self.assertEqual(buf.read(), data[4000:])

    def test_find_long_needle_spanning_three_chunks(self):
        filler = b'\x00' * 4096
        needle = bytes(range(1, 256)) * 2
        data = filler[:4000] + needle + filler
        # the needle runs from the first chunk through a 10-byte one into a third
        chunks = [data[:4096], data[4096:4106], data[4106:]]
        buf = self.new(*chunks, close=True)
        self.assertEqual(buf.find(needle), 4000)
        self.assertEqual(buf.find(needle[:100]), 4000)
        self.assertEqual(buf.find(needle[90:120]), 4090)
        self.assertEqual(buf.find(needle, 4001), -1)

    # -- asyncio-style reads

    def test_readuntil(self):
        data = b'GET / HTTP/1.1\r\nHost: x\r\n\r\nbody'
        for label, chunks in split_cases(data):
            with self.subTest(split=label):
                buf = self.new(*chunks, close=True)
                self.assertEqual(buf.readuntil(b'\r\n'), b'GET / HTTP/1.1\r\n')
                self.assertEqual(buf.readuntil(b'\r\n\r\n'), b'Host: x\r\n\r\n')
                with self.assertRaises(erlang.IncompleteReadError) as cm:
                    buf.readuntil()
                self.assertIsInstance(cm.exception, EOFError)
                self.assertEqual(cm.exception.partial, b'body')
                self.assertIsNone(cm.exception.expected)
                self.assertEqual(buf.read(), b'')
        buf = self.new(b'a\nb;c', close=True)
        self.assertEqual(buf.readuntil(), b'a\n')
        self.assertEqual(buf.readuntil(bytearray(b';')), b'b;')
        with self.assertRaisesRegex(ValueError, 'at least one-byte'):
            buf.readuntil(b'')
        self.assertRaises(TypeError, buf.readuntil, 'c')
        self.assertRaises(TypeError, buf.readuntil, b'a', b'b')
        self.assertEqual(buf.read(), b'c')

    def test_readuntil_separator_across_writes(self):
        buf = self.new(b'key: value\r')
        self.w.later(buf, ('sleep', 20), ('write', b'\n\r'), ('sleep', 20), ('write', b'\nrest'))
        self.assertEqual(buf.readuntil(b'\r\n\r\n'), b'key: value\r\n\r\n')
        self.assertEqual(buf.read_nonblock(), b'rest')

    def test_readexactly(self):
        buf = self.new(b'0123456789', close=True)
        self.assertEqual(buf.readexactly(0), b'')
        self.assertEqual(buf.readexactly(4), b'0123')
        with self.assertRaisesRegex(ValueError, 'less than zero'):
            buf.readexactly(-1)
        self.assertRaises(TypeError, buf.readexactly, 'x')
        with self.assertRaises(erlang.IncompleteReadError) as cm:
            buf.readexactly(100)
        e = cm.exception
        self.assertEqual((e.partial, e.expected), (b'456789', 100))
        self.assertEqual(str(e), '6 bytes read on a total of 100 expected bytes')
        copy = pickle.loads(pickle.dumps(e))
        self.assertEqual((type(copy), copy.partial, copy.expected), (type(e), b'456789', 100))
        self.assertEqual(buf.read(), b'')

    def test_readexactly_waits(self):
        buf = self.new(b'ab')
        self.w.later(buf, ('sleep', 20), ('write', b'cd'), ('sleep', 20), ('write', b'ef'))
        self.assertEqual(buf.readexactly(5), b'abcde')

    # -- non-blocking helpers

    def test_nonblocking_helpers(self):
        buf = self.new()
        self.assertEqual((buf.readable_amount(), len(buf), buf.at_eof()), (0, 0, False))
        self.assertEqual(buf.read_nonblock(), b'')
        self.assertEqual(buf.read_nonblock(5), b'')
        self.put(buf, b'abcdef')
        self.assertEqual((buf.readable_amount(), len(buf)), (6, 6))
        self.assertEqual(buf.read_nonblock(0), b'')
        self.assertEqual(buf.read_nonblock(2), b'ab')
        self.assertEqual(buf.read_nonblock(), b'cdef')
        self.assertEqual(buf.read_nonblock(None), b'')
        self.put(buf, b'gh')
        self.w.close(buf)
        self.assertFalse(buf.at_eof())
        self.assertEqual(buf.read_nonblock(-1), b'gh')
        self.assertTrue(buf.at_eof())
        self.assertEqual(buf.read(), b'')
        buf.close()
        self.assertRaisesRegex(ValueError, CLOSED, buf.read_nonblock)

    def test_reads_wait_for_the_writer(self):
        buf = self.new()
        self.w.later(buf, ('sleep', 20), ('write', b'abc'), ('sleep', 20), ('write', b'def\n'),
                     ('sleep', 20), ('write', b'tail'), ('sleep', 20), ('close',))
        t0 = time.monotonic()
        self.assertEqual(buf.read(5), b'abcde')
        self.assertEqual(buf.readline(), b'f\n')
        self.assertEqual(buf.read(), b'tail')
        self.assertGreater(time.monotonic() - t0, 0.05)
        self.assertTrue(buf.at_eof())

    def test_read1_returns_what_is_there(self):
        buf = self.new(b'abc')
        self.w.later(buf, ('sleep', 20), ('write', b'def'), ('sleep', 20), ('close',))
        self.assertEqual(buf.read1(100), b'abc')
        self.assertEqual(buf.read1(100), b'def')
        self.assertEqual(buf.read1(), b'')
        buf = self.new(b'xy')
        self.assertEqual(buf.readinto1(bytearray(10)), 2)

    def test_text_wrapper_while_streaming(self):
        text = 'première ligne\nzweite Zeile\n第三行\n'
        data = text.encode('utf-8')
        buf = self.new()
        ops = []
        for i in range(0, len(data), 5):  # 5-byte writes split characters
            ops += [('write', data[i:i + 5]), ('sleep', 1)]
        self.w.later(buf, *ops, ('close',))
        self.assertEqual(list(io.TextIOWrapper(buf, encoding='utf-8')), text.splitlines(True))

    # -- the buffer protocol

    def test_memoryview(self):
        buf = self.new(b'hello', b' world')
        with memoryview(buf) as mv:
            self.assertTrue(mv.readonly)
            self.assertEqual((mv.ndim, mv.format, mv.itemsize, mv.nbytes), (1, 'B', 1, 11))
            self.assertEqual(bytes(mv), b'hello world')
            self.assertEqual(mv[0], ord('h'))
            self.assertEqual(bytes(mv[6:]), b'world')
            with self.assertRaises(TypeError):
                mv[0] = 1
            self.assertEqual(buf.tell(), 0)
            self.assertEqual(buf.read(6), b'hello ')
            self.assertEqual(bytes(mv), b'hello world')
        self.assertEqual(bytes(memoryview(buf)), b'world')
        self.assertEqual(bytearray(buf), b'world')
        self.assertEqual(b'' + buf, b'world')
        self.assertEqual(buf.read_nonblock(), b'world')
        self.assertEqual(bytes(memoryview(buf)), b'')

    def test_writable_view_refused(self):
        buf = self.new(b'data')
        get = ctypes.pythonapi.PyObject_GetBuffer
        get.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
        get.restype = ctypes.c_int
        release = ctypes.pythonapi.PyBuffer_Release
        release.argtypes = [ctypes.c_void_p]
        view = ctypes.create_string_buffer(256)  # larger than a Py_buffer
        PyBUF_WRITABLE = 0x0001
        with self.assertRaisesRegex(BufferError, 'read-only'):
            get(buf, ctypes.addressof(view), PyBUF_WRITABLE)
        self.assertEqual(get(buf, ctypes.addressof(view), 0), 0)  # PyBUF_SIMPLE is fine
        release(ctypes.addressof(view))
        # Code taking a writable buffer sees io's usual TypeError.
        with self.assertRaisesRegex(TypeError, 'read-write bytes-like object'):
            io.BytesIO(b'xyz').readinto(buf)
        self.assertEqual(buf.read_nonblock(), b'data')

    def test_memoryview_survives_later_writes(self):
        buf = self.new(b'first')
        mv = memoryview(buf)
        self.put(buf, b'second', b'x' * 5000, b'y' * 70000, b'z')
        mv2 = memoryview(buf)
        self.assertEqual(len(mv2), 5 + 6 + 5000 + 70000 + 1)
        self.put(buf, b'more')
        self.assertEqual(len(buf.read_nonblock(80000)), 75016)
        self.w.close(buf)
        self.assertEqual(buf.read(), b'')
        self.assertEqual(bytes(mv), b'first')
        self.assertEqual(bytes(mv2[:11]), b'firstsecond')
        self.assertEqual(bytes(mv2[-1:]), b'z')
        mv.release()
        mv2.release()
        self.assertEqual(buf.seek(0), 0)
        self.assertEqual(buf.read(11), b'firstsecond')

    def test_memoryview_on_closed_or_aborted(self):
        buf = self.new(b'abc')
        buf.close()
        with self.assertRaisesRegex(ValueError, CLOSED):
            memoryview(buf)
        buf = self.new(b'abc')
        self.w.abort(buf)
        with self.assertRaises(erlang.StreamAborted):
            memoryview(buf)

    # -- readview: zero-copy consumption

    def test_readview_chunks_as_written(self):
        """One view per written chunk (big writes are chunks of their own),
        never merged, consumed as taken; an empty view at EOF."""
        data = random_bytes(200_000, seed=13)
        chunks = [data[:4096], data[4096:70000], data[70000:]]
        for keep in [True, False]:
            with self.subTest(keep_consumed=keep):
                buf = self.new(*chunks, close=True, keep_consumed=keep)
                views = []
                while view := buf.readview():
                    self.assertIsInstance(view, memoryview)
                    self.assertTrue(view.readonly)
                    self.assertEqual(buf.tell(), sum(map(len, views)) + len(view))
                    views.append(view)
                self.assertEqual([len(v) for v in views], [len(c) for c in chunks])
                self.assertEqual(b''.join(views), data)
                self.assertEqual(buf.read(), b'')
                self.assertEqual(bytes(buf.readview()), b'')
                with self.assertRaises(TypeError):
                    views[0][0] = 1
                for v in views:
                    v.release()

    def test_readview_size(self):
        buf = self.new(b'x' * 3000, b'y' * 3000, close=True)
        self.assertEqual(bytes(buf.readview(0)), b'')
        self.assertEqual(bytes(buf.readview(10)), b'x' * 10)
        self.assertEqual(bytes(buf.readview(None)), b'x' * 2990)  # the rest of that chunk only
        self.assertEqual(bytes(buf.readview(-1)), b'y' * 3000)
        self.assertEqual(bytes(buf.readview(5)), b'')
        self.assertRaises(TypeError, buf.readview, 1.5)
        self.assertRaises(TypeError, buf.readview, 1, 2)

    def test_readview_mixes_with_reads(self):
        buf = self.new(b'line one\n', close=True)
        self.assertEqual(buf.read(2), b'li')
        self.assertEqual(bytes(buf.readview(3)), b'ne ')
        self.assertEqual(buf.readline(), b'one\n')
        buf = self.new(b'ab\ncd\n', close=True)
        self.assertEqual(bytes(buf.readview()), b'ab\ncd\n')
        self.assertEqual(buf.seek(3), 3)
        self.assertEqual(buf.readline(), b'cd\n')

    def test_readview_waits_and_times_out(self):
        buf = self.new(read_timeout=50)
        self.assertRaises(erlang.ReadTimeout, buf.readview)
        self.w.later(buf, ('sleep', 20), ('write', b'late'), ('close',))
        self.assertEqual(bytes(buf.readview()), b'late')
        self.assertEqual(len(buf.readview()), 0)

    def test_readview_survives_everything(self):
        """A view holds its bytes through later writes, reads that free
        consumed chunks, reader close and abort; a held view never makes a
        write fail, and the memory goes when the view is released."""
        buf = self.new(b'a' * 5000, keep_consumed=False)
        view = buf.readview()
        self.put(buf, b'b' * 5000, b'c')
        self.assertEqual(buf.read(5001), b'b' * 5000 + b'c')
        held = self.w.info(buf)['memory']
        self.assertEqual(bytes(view), b'a' * 5000)
        view.release()
        self.assertEqual(held - self.w.info(buf)['memory'], 5000)
        buf = self.new(b'kept', b' bytes')
        view = buf.readview()
        buf.close()
        self.assertEqual(self.w.write(buf, b'x' * 5000), 'closed')
        self.assertEqual(bytes(view), b'kept bytes')
        buf = self.new(b'y' * 3000)
        view = buf.readview()
        self.w.abort(buf)
        self.assertRaises(erlang.StreamAborted, buf.readview)
        self.assertEqual(bytes(view), b'y' * 3000)
        del buf
        self.assertEqual(bytes(view), b'y' * 3000)

    def test_readview_errors(self):
        buf = self.new(b'abc', close=True)
        buf.close()
        with self.assertRaisesRegex(ValueError, CLOSED):
            buf.readview()
        buf = self.new(b'ab', content_length=10, close=True)
        self.assertEqual(bytes(buf.readview()), b'ab')
        self.assertRaises(erlang.StreamIncomplete, buf.readview)

    # -- state

    def test_len_and_repr(self):
        buf = self.new()
        self.assertEqual(len(buf), 0)
        self.assertEqual(repr(buf), '<erlang.PyBuffer open written=0 pos=0 unread=0>')
        self.put(buf, b'abc')
        buf.read(1)
        self.assertEqual(len(buf), 2)
        self.assertEqual(repr(buf), '<erlang.PyBuffer open written=3 pos=1 unread=2>')
        self.w.close(buf)
        self.assertEqual(repr(buf), '<erlang.PyBuffer eof written=3 pos=1 unread=2>')
        buf.close()
        self.assertEqual(len(buf), 0)
        self.assertRegex(repr(buf), r'^<erlang\.PyBuffer closed ')
        buf = self.new(b'x')
        self.w.abort(buf)
        self.assertRegex(repr(buf), r'^<erlang\.PyBuffer aborted ')

    def test_info_from_erlang(self):
        buf = self.new(b'hello world')
        buf.read(5)
        info = self.w.info(buf)
        self.assertEqual((info['written'], info['read_pos'], info['unread'], info['eof'],
                          info['aborted'], info['reader_closed'], info['seekable']),
                         (11, 5, 6, False, False, False, True))
        buf.close()
        self.assertTrue(self.w.info(buf)['reader_closed'])

    def test_closed_file_errors(self):
        buf = self.new(b'abc\n', close=True)
        buf.close()
        for name, call in [('find', lambda: buf.find(b'a')), ('readuntil', buf.readuntil),
                           ('readexactly', lambda: buf.readexactly(1)),
                           ('read_nonblock', buf.read_nonblock), ('peek', buf.peek),
                           ('readall', buf.readall), ('memoryview', lambda: memoryview(buf))]:
            with self.subTest(call=name):
                with self.assertRaisesRegex(ValueError, CLOSED):
                    call()
        # non-blocking probes answer without raising: nothing readable
        self.assertEqual((buf.readable_amount(), len(buf), buf.at_eof()), (0, 0, True))

    def test_python_close_refuses_writes(self):
        buf = self.new(b'abc')
        buf.close()
        self.assertEqual(self.w.write(buf, b'more'), 'closed')
        self.assertTrue(buf.closed)

    # -- options

    def test_line_limit(self):
        data = b'0123456789\n' + b'x' * 11 + b'\n' + b'short\n' + b'y' * 11
        for label, chunks in split_cases(data):
            with self.subTest(split=label):
                buf = self.new(*chunks, close=True, line_limit=10)
                self.assertEqual(buf.readline(), b'0123456789\n')
                with self.assertRaises(erlang.LineTooLong):
                    buf.readline()
                with self.assertRaises(ValueError):
                    next(buf)
                self.assertEqual(buf.readline(5), b'xxxxx')  # size stops it first
                self.assertEqual(buf.read(7), b'xxxxxx\n')  # nothing was lost
                self.assertEqual(buf.readline(), b'short\n')
                self.assertRaises(erlang.LineTooLong, buf.readline)  # no newline at EOF
                self.assertRaises(erlang.LineTooLong, buf.readline, 11)
                self.assertEqual(buf.readline(10), b'y' * 10)
                self.assertEqual(buf.readline(), b'y')
        buf = self.new(b'a\n', b'b' * 50, close=True, line_limit=10)
        self.assertRaises(erlang.LineTooLong, buf.readlines)
        self.assertRaises(erlang.LineTooLong, list, buf)

    def test_line_limit_does_not_wait_for_the_newline(self):
        buf = self.new(b'z' * 11, line_limit=10, read_timeout=2000)
        t0 = time.monotonic()
        self.assertRaises(erlang.LineTooLong, buf.readline)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(buf.read_nonblock(), b'z' * 11)

    def test_readline_fast_and_slow_paths(self):
        """Lines around the fast path's bounds (a line found in one stream-lock
        round, copied once into its bytes: up to 64 KiB) and past them, within
        one chunk and across chunks, with and without kept data, after a seek,
        and with a size: the same lines as BytesIO."""
        lengths = [1, 2, 99, 2047, 2048, 2049, 65535, 65536, 65537, 100000, 3]
        data = b''.join(bytes([97 + i % 26]) * (n - 1) + b'\n' for i, n in enumerate(lengths))
        data += b'tail without newline'
        want = io.BytesIO(data).readlines()
        for keep in (True, False):
            for label, chunks in [('one chunk', [data]), ('mixed', mixed_chunks(data)),
                                  ('4 KiB', [data[i:i + 4096] for i in range(0, len(data), 4096)])]:
                with self.subTest(keep=keep, split=label):
                    buf = self.new(*chunks, close=True, keep_consumed=keep)
                    self.assertEqual([buf.readline() for _ in want], want)
                    self.assertEqual(buf.readline(), b'')
                    buf = self.new(*chunks, close=True, keep_consumed=keep)
                    self.assertEqual(list(buf), want)
                    buf = self.new(*chunks, close=True, keep_consumed=keep)
                    self.assertEqual(buf.readline(70000), want[0])
                    self.assertEqual(buf.readline(1), want[1][:1])
                    self.assertEqual(buf.readline(2000), want[1][1:])
                    got = [buf.readline(65536) for _ in range(8)]
                    self.assertEqual(got[:6], want[2:8])
                    self.assertEqual(got[6:], [want[8][:65536], want[8][65536:]])
                    if keep:
                        buf.seek(1)
                        self.assertEqual(buf.readline(), want[1])
                        buf.seek(sum(map(len, want[:5])) + 7)
                        self.assertEqual(buf.readline(), want[5][7:])
                        self.assertEqual(buf.readline(), want[6])

    def test_keep_consumed_false(self):
        buf = self.new(b'abcdef', close=True, keep_consumed=False)
        self.assertIs(buf.seekable(), False)
        self.assertEqual(buf.read(3), b'abc')
        self.assertEqual(buf.tell(), 3)
        for args in [(0,), (3,), (0, io.SEEK_CUR), (0, io.SEEK_END)]:
            with self.subTest(args=args):
                with self.assertRaises(io.UnsupportedOperation):
                    buf.seek(*args)
        self.assertEqual(buf.read(), b'def')
        buf = self.new(b'l1\nl2\n', close=True, keep_consumed=False)
        self.assertEqual(list(io.TextIOWrapper(buf, encoding='ascii')), ['l1\n', 'l2\n'])

    def test_seek_before_eof(self):
        buf = self.new(b'abcdef')
        with self.assertRaises(io.UnsupportedOperation):
            buf.seek(0, io.SEEK_END)
        with self.assertRaisesRegex(ValueError, 'not written yet'):
            buf.seek(7)
        self.assertEqual(buf.seek(6), 6)
        self.assertEqual(buf.read_nonblock(), b'')
        self.assertEqual(buf.seek(2), 2)
        self.assertEqual(buf.read_nonblock(), b'cdef')
        self.w.close(buf)
        self.assertEqual(buf.seek(0, io.SEEK_END), 6)
        self.assertEqual(buf.seek(10), 10)

    def test_abort(self):
        buf = self.new(b'abc')
        self.assertEqual(self.w.abort(buf, 'client_gone'), 'ok')
        for name, call in [('read', buf.read), ('read1', lambda: buf.read1(1)),
                           ('readline', buf.readline), ('peek', buf.peek),
                           ('readinto', lambda: buf.readinto(bytearray(2))),
                           ('readexactly', lambda: buf.readexactly(1)),
                           ('readuntil', buf.readuntil), ('next', lambda: next(buf))]:
            with self.subTest(call=name):
                with self.assertRaisesRegex(erlang.StreamAborted, 'client_gone'):
                    call()
        self.assertIsInstance(erlang.StreamAborted(), ConnectionError)
        self.assertEqual((buf.readable_amount(), buf.at_eof()), (0, False))
        self.assertEqual(self.w.write(buf, b'x'), 'closed')

    def test_abort_wakes_a_blocked_reader(self):
        buf = self.new(b'partial')
        self.w.later(buf, ('sleep', 30), ('abort', 'upstream_reset'))
        with self.assertRaisesRegex(erlang.StreamAborted, 'upstream_reset'):
            buf.read()

    def test_content_length_short(self):
        buf = self.new(b'abcd', content_length=10)
        self.assertEqual(self.w.write(buf, b'efghijk'), 'overflow')  # 11 > 10: all refused
        self.assertEqual(self.w.close(buf), 'ok')
        self.assertEqual(buf.read(4), b'abcd')
        for name, call in [('read(1)', lambda: buf.read(1)), ('read()', buf.read),
                           ('read1', buf.read1), ('readline', buf.readline),
                           ('readexactly', lambda: buf.readexactly(1)),
                           ('readinto', lambda: buf.readinto(bytearray(1))),
                           ('readuntil', buf.readuntil), ('iteration', lambda: list(buf))]:
            with self.subTest(call=name):
                with self.assertRaises(erlang.StreamIncomplete):
                    call()
        self.assertFalse(buf.at_eof())

    def test_content_length_short_loses_nothing(self):
        buf = self.new(b'ab\ncd', content_length=10, close=True)
        self.assertRaises(erlang.StreamIncomplete, buf.read)
        self.assertRaises(erlang.StreamIncomplete, buf.readlines)
        self.assertEqual(buf.readline(), b'ab\n')
        self.assertRaises(erlang.StreamIncomplete, buf.readline)
        self.assertEqual(buf.read(2), b'cd')

    def test_content_length_exact(self):
        buf = self.new(b'abc', b'def', content_length=6)
        self.assertEqual(self.w.write(buf, b'g'), 'overflow')
        self.assertEqual(buf.read(6), b'abcdef')
        self.w.close(buf)
        self.assertEqual(buf.read(), b'')
        self.assertTrue(buf.at_eof())

    def test_read_timeout(self):
        buf = self.new(read_timeout=50)
        t0 = time.monotonic()
        with self.assertRaises(erlang.ReadTimeout):
            buf.read(1)
        self.assertGreaterEqual(time.monotonic() - t0, 0.04)
        self.assertIsInstance(erlang.ReadTimeout(), TimeoutError)
        self.put(buf, b'ab')
        self.assertEqual(buf.read(1), b'a')
        self.assertRaises(erlang.ReadTimeout, buf.read, 5)
        self.assertRaises(erlang.ReadTimeout, buf.readexactly, 5)
        self.assertRaises(erlang.ReadTimeout, buf.readinto, bytearray(5))
        self.assertEqual(buf.read(1), b'b')
        self.assertRaises(erlang.ReadTimeout, buf.read1)

    def test_read_timeout_loses_nothing(self):
        buf = self.new(b'l1\nl2', read_timeout=30)
        self.assertRaises(erlang.ReadTimeout, buf.read)
        self.assertRaises(erlang.ReadTimeout, buf.readlines)
        self.assertRaises(erlang.ReadTimeout, buf.readall)
        self.assertEqual(buf.tell(), 0)
        self.assertEqual(buf.readline(), b'l1\n')
        self.assertRaises(erlang.ReadTimeout, buf.readline)
        self.assertEqual(buf.read_nonblock(), b'l2')

    def test_backpressure_write_timeout(self):
        buf = self.new(max_unread=4, write_timeout=30)
        self.assertEqual(self.w.write(buf, b'0123456789'), 'timeout')
        self.assertEqual(buf.read(10), b'0123456789')  # the data was taken all the same

    def wait_blocked(self, buf):
        """Until a reader thread is inside a read of buf."""
        deadline = time.monotonic() + 10
        while self.w.info(buf)['waiting_readers'] == 0:
            self.assertLess(time.monotonic(), deadline, 'the reader thread never blocked')
            time.sleep(0.001)

    def test_close_wakes_a_blocked_reader(self):
        """close() from another thread: the blocked read ends with io's
        closed-file error."""
        buf = self.new(b'ab')
        errors = []

        def reader():
            try:
                buf.read(3)
            except Exception as e:
                errors.append(e)
        t = threading.Thread(target=reader)
        t.start()
        self.wait_blocked(buf)
        buf.close()
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(len(errors), 1)
        self.assertIs(type(errors[0]), ValueError)
        self.assertRegex(str(errors[0]), CLOSED)

    def test_views_outlive_close_and_abort(self):
        buf = self.new(b'kept', b' bytes')
        mv = memoryview(buf)
        buf.close()
        self.assertEqual(self.w.write(buf, b'x' * 5000), 'closed')
        self.assertEqual(bytes(mv), b'kept bytes')
        mv.release()
        buf = self.new(b'y' * 3000)
        mv = memoryview(buf)
        self.w.abort(buf)
        self.assertEqual(bytes(mv), b'y' * 3000)
        mv.release()

    def test_read_wider_than_max_unread(self):
        """Regression: a read waiting for more bytes than max_unread never got
        them (the writer parked until the reader drained, the reader waiting
        for more data; py_buffer_SUITE:concurrent_stream_hash hung on it).
        read_timeout turns a relapse into ReadTimeout, not a hang."""
        buf = self.new(max_unread=4, read_timeout=2000)
        self.w.later(buf, ('write', b'0123456789'), ('write', b'abcdefghij'), ('close',))
        try:
            self.assertEqual(buf.read(15), b'0123456789abcde')
            self.assertEqual(buf.readinto(bytearray(3)), 3)
            self.assertEqual(buf.read(), b'ij')
        finally:
            buf.close()  # releases a parked writer
        buf = self.new(max_unread=4, read_timeout=2000)
        self.w.later(buf, ('write', b'0123456789'), ('write', b'abcdefghij'), ('close',))
        try:
            self.assertEqual(buf.readexactly(12), b'0123456789ab')
        finally:
            buf.close()

    def test_lines_wider_than_max_unread(self):
        """Regression, as above: readline() and readuntil() waited for the
        separator, the writer for the reader."""
        cases = [(lambda b: b.readline(), b'no newline yet\n'),
                 (lambda b: b.readuntil(b'\n'), b'no newline yet\n'),
                 (lambda b: b.readlines(), [b'no newline yet\n', b'tail'])]
        self.check_wide_lines(cases)
        self.check_wide_lines(cases, writer_parked_first=True)

    def test_readuntil_long_separator_wider_than_max_unread(self):
        """KNOWN BUG (c_src/buffer_type.c pb_readuntil, reported): to catch a
        separator straddling two writes it leaves len(sep) - 1 bytes unread
        while it waits; more than low_watermark, so the parked writer is never
        released.  Remove expectedFailure once fixed."""
        self.check_wide_lines([(lambda b: b.readuntil(b'yet\n'), b'no newline yet\n')],
                              writer_parked_first=True)

    def check_wide_lines(self, cases, writer_parked_first=False):
        for call, want in cases:
            with self.subTest(want=want):
                buf = self.new(max_unread=4, read_timeout=2000)
                self.w.later(buf, ('write', b'no newline '), ('write', b'yet'), ('write', b'\ntail'),
                             ('close',))
                if writer_parked_first:
                    deadline = time.monotonic() + 10
                    while buf.readable_amount() < 11 and time.monotonic() < deadline:
                        time.sleep(0.001)
                    time.sleep(0.02)  # the writer is waiting for the reader
                try:
                    self.assertEqual(call(buf), want)
                finally:
                    buf.close()

    def test_concurrent_reader_detected(self):
        buf = self.new()
        got = []
        t = threading.Thread(target=lambda: got.append(buf.read(3)))
        t.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                buf.read_nonblock(0)
            except RuntimeError as e:
                self.assertIn('concurrent', str(e))
                break
            self.assertLess(time.monotonic(), deadline, 'the reader thread never blocked')
            time.sleep(0.001)
        self.put(buf, b'xyz')
        t.join(10)
        self.assertEqual(got, [b'xyz'])
        self.assertEqual(buf.read_nonblock(), b'')
