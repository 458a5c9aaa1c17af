/* stream_test.c - unit tests of c_src/stream.c, run under ASan/UBSan by
 * `make -C test/c test`.  Prints "N passed, M failed"; exits non-zero on any
 * failure.  A watchdog alarm turns a hang (a lost wakeup, a callback run
 * under the stream lock) into a failure. */
#include "stream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KiB 1024
#define MiB (1024 * 1024)

static atomic_int test_failed; /* failures in the running test */

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #cond);                                                    \
            test_failed++;                                                     \
        }                                                                      \
    } while (0)
#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) {                                                        \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n",      \
                    __FILE__, __LINE__, #a, a_, #b, b_);                       \
            test_failed++;                                                     \
        }                                                                      \
    } while (0)

/* ---- helpers ---- */

static uint8_t byte_at(uint64_t i) /* the content every pipeline test writes */
{
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    return (uint8_t)(x >> 56);
}

static uint64_t rnd(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

static stream_t *new_stream(int keep, int64_t clen)
{
    stream_opts_t o;
    stream_opts_default(&o);
    o.keep_consumed = keep;
    o.content_length = clen;
    return stream_new(&o);
}

static stream_info_t info(stream_t *s)
{
    stream_info_t i;
    stream_info(s, &i);
    return i;
}

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (bounded) until n readers are blocked in stream_wait. */
static int wait_for_waiters(stream_t *s, unsigned n)
{
    for (int i = 0; i < 5000; i++) {
        if (info(s).waiting_readers == n)
            return 1;
        msleep(1);
    }
    return 0;
}

/* A borrowed region: malloc'd, counts its releases, and checks that the
 * release runs without the stream lock (stream_info would deadlock). */
typedef struct {
    char *data;
    atomic_int released;
    stream_t *s;
} borrow_t;

static void borrow_release(void *ctx)
{
    borrow_t *b = ctx;
    if (b->s)
        (void)stream_unread(b->s);
    atomic_fetch_add(&b->released, 1);
}

static borrow_t *borrow_new(stream_t *s, const char *text, size_t len)
{
    borrow_t *b = calloc(1, sizeof *b);
    b->data = malloc(len ? len : 1);
    memcpy(b->data, text, len);
    b->s = s;
    return b;
}

static void borrow_free(borrow_t *b)
{
    free(b->data);
    free(b);
}

static int write_str(stream_t *s, const char *str)
{
    return stream_write(s, str, strlen(str));
}

static int read_is(stream_t *s, size_t n, const char *expect)
{
    char buf[256];
    size_t got = stream_read(s, buf, n);
    return got == strlen(expect) && memcmp(buf, expect, got) == 0;
}

/* ---- tests ---- */

static void test_opts_and_new(void)
{
    stream_opts_t o;
    memset(&o, 0x55, sizeof o);
    stream_opts_default(&o);
    CHECK_EQ(o.content_length, -1);
    CHECK_EQ(o.max_unread, 0);
    CHECK_EQ(o.low_watermark, 0);
    CHECK_EQ(o.keep_consumed, 1);
    CHECK_EQ(o.line_limit, 0);

    o.content_length = -2;
    CHECK(stream_new(&o) == NULL);

    stream_t *s = stream_new(NULL);
    CHECK(s != NULL);
    stream_info_t i = info(s);
    CHECK_EQ(i.written, 0);
    CHECK_EQ(i.read_pos, 0);
    CHECK_EQ(i.unread, 0);
    CHECK_EQ(i.memory, 0);
    CHECK_EQ(i.content_length, -1);
    CHECK_EQ(i.eof, 0);
    CHECK(stream_seekable(s));
    CHECK(!stream_at_eof(s));
    char r[8] = "x";
    stream_abort_reason(s, r, sizeof r);
    CHECK_EQ(r[0], '\0');
    stream_free(s);
    stream_free(NULL);

    s = new_stream(0, -1);
    CHECK(!stream_seekable(s));
    stream_free(s);
}

static void test_write_read_basic(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(stream_write(s, "hello ", 6), STREAM_OK);
    CHECK_EQ(stream_write(s, "", 0), STREAM_OK);
    CHECK_EQ(write_str(s, "world"), STREAM_OK);
    CHECK_EQ(stream_unread(s), 11);
    CHECK(read_is(s, 5, "hello"));
    CHECK_EQ(stream_tell(s), 5);
    CHECK_EQ(stream_skip(s, 1), 1);
    CHECK(read_is(s, 100, "world"));
    CHECK_EQ(stream_read(s, NULL, 0), 0);
    CHECK(read_is(s, 10, ""));
    stream_info_t i = info(s);
    CHECK_EQ(i.written, 11);
    CHECK_EQ(i.read_pos, 11);
    CHECK_EQ(i.unread, 0);
    CHECK(!stream_at_eof(s));
    CHECK_EQ(stream_close(s), STREAM_OK);
    CHECK(stream_at_eof(s));
    CHECK_EQ(info(s).eof, 1);
    stream_free(s);
}

/* Small writes share chunks that double with the stream (512 B up to
 * 64 KiB); a write bigger than that gets a chunk of its own. */
static void test_small_writes_append(void)
{
    stream_t *s = new_stream(1, -1);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(stream_write(s, "0123456789", 10), STREAM_OK);
    CHECK_EQ(info(s).memory, 16 * KiB); /* 512 + 512 + 1K + 2K + 4K + 8K */
    char *big = malloc(100 * KiB);
    memset(big, 'b', 100 * KiB);
    /* a small write overflowing the tail's room fills it, then a new chunk */
    CHECK_EQ(stream_write(s, big, 60000), STREAM_OK);
    CHECK_EQ(info(s).memory, 70000);
    char buf[10];
    CHECK_EQ(stream_peek(s, buf, 10, 9990), 10);
    CHECK(memcmp(buf, "0123456789", 10) == 0);
    CHECK_EQ(stream_peek(s, buf, 10, 64 * KiB - 5), 10);
    CHECK(memcmp(buf, "bbbbbbbbbb", 10) == 0);
    /* a big one gets a chunk of exactly its size */
    memset(big, 'c', 100 * KiB);
    CHECK_EQ(stream_write(s, big, 100 * KiB), STREAM_OK);
    CHECK_EQ(info(s).memory, 70000 + 100 * KiB);
    CHECK_EQ(stream_peek(s, buf, 2, 70000 - 1), 2);
    CHECK(memcmp(buf, "bc", 2) == 0);
    CHECK_EQ(stream_unread(s), 70000 + 100 * KiB);
    free(big);
    stream_free(s);
}

/* A declared length up to 16 MiB is allocated once, at the first write. */
static void test_prealloc(void)
{
    stream_t *s = new_stream(1, 1000);
    CHECK_EQ(info(s).memory, 0);
    CHECK_EQ(info(s).content_length, 1000);
    CHECK_EQ(write_str(s, "a"), STREAM_OK);
    CHECK_EQ(info(s).memory, 1000);
    char buf[999];
    memset(buf, 'z', sizeof buf);
    CHECK_EQ(stream_write(s, buf, 999), STREAM_OK);
    CHECK_EQ(info(s).memory, 1000);
    stream_free(s);

    s = new_stream(1, 16 * MiB);
    CHECK_EQ(write_str(s, "a"), STREAM_OK);
    CHECK_EQ(info(s).memory, 16 * MiB);
    stream_free(s);

    s = new_stream(1, 100 * MiB); /* too big to reserve up front */
    CHECK_EQ(write_str(s, "a"), STREAM_OK);
    CHECK_EQ(info(s).memory, 512);
    stream_free(s);
}

static void test_overflow(void)
{
    stream_t *s = new_stream(1, 10);
    CHECK_EQ(write_str(s, "0123456"), STREAM_OK);
    CHECK_EQ(write_str(s, "7890"), STREAM_EOVERFLOW);
    borrow_t *b = borrow_new(NULL, "7890", 4);
    CHECK_EQ(stream_write_borrowed(s, b->data, 4, borrow_release, b), STREAM_EOVERFLOW);
    CHECK_EQ(b->released, 0);
    CHECK_EQ(info(s).written, 7);
    CHECK_EQ(write_str(s, "789"), STREAM_OK);
    CHECK_EQ(write_str(s, "x"), STREAM_EOVERFLOW);
    CHECK_EQ(stream_write(s, "", 0), STREAM_OK);
    CHECK_EQ(info(s).written, 10);
    stream_free(s);
    borrow_free(b);
}

/* ENOMEM leaves the stream as it was. */
static void test_enomem(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "abc"), STREAM_OK);
    stream_info_t before = info(s);
    static const char dummy[1];
    /* neither size can be allocated; the data pointer is never read */
    CHECK_EQ(stream_write(s, dummy, SIZE_MAX - 8), STREAM_ENOMEM);
    CHECK_EQ(stream_write(s, dummy, (size_t)1 << 50), STREAM_ENOMEM);
    stream_info_t after = info(s);
    CHECK_EQ(after.written, before.written);
    CHECK_EQ(after.memory, before.memory);
    CHECK(read_is(s, 10, "abc"));
    stream_free(s);
}

static void test_close(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "ab"), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_ECLOSED);
    CHECK_EQ(write_str(s, "c"), STREAM_ECLOSED);
    CHECK_EQ(stream_write(s, "", 0), STREAM_ECLOSED);
    borrow_t *b = borrow_new(NULL, "c", 1);
    CHECK_EQ(stream_write_borrowed(s, b->data, 1, borrow_release, b), STREAM_ECLOSED);
    CHECK_EQ(b->released, 0);
    CHECK(!stream_at_eof(s));
    size_t avail = 99;
    CHECK_EQ(stream_wait(s, 10, NULL, &avail), STREAM_OK); /* EOF first */
    CHECK_EQ(avail, 2);
    CHECK(read_is(s, 10, "ab"));
    CHECK(stream_at_eof(s));
    CHECK_EQ(stream_wait(s, 1, NULL, &avail), STREAM_OK);
    CHECK_EQ(avail, 0);
    stream_free(s);
    borrow_free(b);
}

/* Closed with fewer bytes than declared: ESHORT once the reader gets there. */
static void test_eshort(void)
{
    stream_t *s = new_stream(1, 10);
    CHECK_EQ(write_str(s, "01234"), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_OK);
    size_t avail = 0;
    CHECK_EQ(stream_wait(s, 5, NULL, &avail), STREAM_OK);
    CHECK_EQ(avail, 5);
    CHECK_EQ(stream_wait(s, 10, NULL, &avail), STREAM_ESHORT);
    CHECK_EQ(avail, 5);
    CHECK(!stream_at_eof(s));
    CHECK_EQ(stream_skip(s, 5), 5);
    CHECK_EQ(stream_wait(s, 1, NULL, &avail), STREAM_ESHORT);
    CHECK_EQ(avail, 0);
    CHECK_EQ(stream_wait(s, 0, NULL, &avail), STREAM_OK);
    CHECK(!stream_at_eof(s)); /* a short stream never looks like EOF */
    stream_free(s);

    s = new_stream(1, 3); /* exactly the declared length: a clean EOF */
    CHECK_EQ(write_str(s, "abc"), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_OK);
    CHECK_EQ(stream_wait(s, 4, NULL, &avail), STREAM_OK);
    CHECK_EQ(avail, 3);
    stream_skip(s, 3);
    CHECK(stream_at_eof(s));
    stream_free(s);
}

static void test_abort(void)
{
    stream_t *s = new_stream(1, -1);
    borrow_t *b = borrow_new(s, "borrowed", 8);
    CHECK_EQ(write_str(s, "data"), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b->data, 8, borrow_release, b), STREAM_OK);
    char reason[100];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    stream_abort(s, reason);
    CHECK_EQ(b->released, 1); /* storage goes at once */
    CHECK_EQ(info(s).memory, 0);
    stream_abort(s, "second"); /* no-op */
    char got[100];
    stream_abort_reason(s, got, sizeof got);
    CHECK_EQ(strlen(got), 63);
    CHECK(memcmp(got, reason, 63) == 0);
    stream_abort_reason(s, got, 4);
    CHECK(strcmp(got, "rrr") == 0);

    size_t avail = 99;
    CHECK_EQ(stream_wait(s, 1, NULL, &avail), STREAM_EABORTED);
    CHECK_EQ(avail, 0);
    CHECK_EQ(stream_wait(s, 0, NULL, &avail), STREAM_EABORTED);
    CHECK_EQ(stream_read(s, got, 10), 0);
    CHECK_EQ(stream_peek(s, got, 10, 0), 0);
    CHECK_EQ(stream_find(s, "d", 1, 0, SIZE_MAX), -1);
    const void *p;
    size_t len;
    stream_pin_t *pin;
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_EABORTED);
    CHECK_EQ(write_str(s, "x"), STREAM_ECLOSED);
    CHECK_EQ(stream_close(s), STREAM_ECLOSED);
    CHECK_EQ(stream_seek(s, 0), STREAM_ESEEK);
    stream_info_t i = info(s);
    CHECK_EQ(i.aborted, 1);
    CHECK_EQ(i.written, 12);
    CHECK_EQ(i.unread, 0);
    CHECK(!stream_at_eof(s));
    stream_free(s);
    CHECK_EQ(b->released, 1);
    borrow_free(b);

    s = new_stream(1, -1); /* abort after close still breaks the stream */
    CHECK_EQ(write_str(s, "abc"), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_OK);
    stream_abort(s, NULL);
    CHECK_EQ(stream_wait(s, 1, NULL, &avail), STREAM_EABORTED);
    stream_abort_reason(s, got, sizeof got);
    CHECK_EQ(got[0], '\0');
    stream_free(s);
}

static void test_reader_close(void)
{
    stream_t *s = new_stream(1, -1);
    borrow_t *b = borrow_new(s, "borrowed", 8);
    CHECK_EQ(stream_write_borrowed(s, b->data, 8, borrow_release, b), STREAM_OK);
    stream_reader_close(s);
    stream_reader_close(s);
    CHECK_EQ(b->released, 1);
    CHECK_EQ(info(s).memory, 0);
    CHECK_EQ(info(s).reader_closed, 1);
    CHECK_EQ(write_str(s, "x"), STREAM_ECLOSED);
    size_t avail;
    CHECK_EQ(stream_wait(s, 1, NULL, &avail), STREAM_ECLOSED);
    CHECK_EQ(stream_close(s), STREAM_OK); /* the writer may still say EOF */
    stream_free(s);
    CHECK_EQ(b->released, 1);
    borrow_free(b);
}

/* Borrowed memory goes back exactly once: when consumed without
 * keep_consumed, at free with it, after the last pin either way. */
static void test_borrowed_release(void)
{
    stream_t *s = new_stream(0, -1);
    borrow_t *b1 = borrow_new(s, "first-", 6), *b2 = borrow_new(s, "second", 6);
    borrow_t *b0 = borrow_new(s, "", 0);
    CHECK_EQ(stream_write_borrowed(s, b1->data, 6, borrow_release, b1), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b2->data, 6, borrow_release, b2), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b0->data, 0, borrow_release, b0), STREAM_OK);
    CHECK_EQ(b0->released, 1); /* nothing to hold */
    CHECK_EQ(stream_write_borrowed(s, "static", 6, NULL, NULL), STREAM_OK);
    CHECK_EQ(info(s).memory, 18);
    CHECK(read_is(s, 5, "first"));
    CHECK_EQ(b1->released, 0);
    CHECK(read_is(s, 1, "-"));
    CHECK_EQ(b1->released, 1);
    CHECK_EQ(info(s).memory, 12);
    /* a pinned borrowed chunk outlives being consumed */
    const void *p;
    size_t len;
    stream_pin_t *pin;
    CHECK_EQ(stream_skip(s, 6), 6);
    CHECK_EQ(b2->released, 1);
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_OK);
    CHECK_EQ(len, 6);
    CHECK(memcmp(p, "static", 6) == 0);
    stream_unpin(s, pin);
    CHECK_EQ(b1->released + b2->released, 2);
    stream_free(s);
    borrow_free(b0);
    borrow_free(b1);
    borrow_free(b2);

    s = new_stream(1, -1);
    b1 = borrow_new(s, "kept", 4);
    CHECK_EQ(stream_write_borrowed(s, b1->data, 4, borrow_release, b1), STREAM_OK);
    CHECK_EQ(stream_skip(s, 4), 4);
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_OK);
    CHECK_EQ(len, 0);
    CHECK(p != NULL);
    stream_unpin(s, pin);
    CHECK_EQ(b1->released, 0); /* keep_consumed holds it */
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK(read_is(s, 4, "kept"));
    stream_free(s);
    CHECK_EQ(b1->released, 1);
    borrow_free(b1);
}

static void test_peek_skip(void)
{
    stream_t *s = new_stream(1, -1);
    borrow_t *b = borrow_new(NULL, "BBBB", 4);
    CHECK_EQ(write_str(s, "aaaa"), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b->data, 4, borrow_release, b), STREAM_OK);
    CHECK_EQ(write_str(s, "cccc"), STREAM_OK);
    char buf[16];
    CHECK_EQ(stream_peek(s, buf, 6, 2), 6);
    CHECK(memcmp(buf, "aaBBBB", 6) == 0);
    CHECK_EQ(stream_peek(s, buf, 16, 6), 6);
    CHECK(memcmp(buf, "BBcccc", 6) == 0);
    CHECK_EQ(stream_peek(s, buf, 4, 12), 0);
    CHECK_EQ(stream_peek(s, buf, 4, 100), 0);
    CHECK_EQ(stream_tell(s), 0);
    CHECK_EQ(stream_skip(s, 5), 5);
    CHECK_EQ(stream_peek(s, buf, 4, 0), 4);
    CHECK(memcmp(buf, "BBBc", 4) == 0);
    CHECK_EQ(stream_skip(s, 100), 7);
    CHECK_EQ(stream_skip(s, 1), 0);
    CHECK_EQ(stream_tell(s), 12);
    stream_free(s);
    CHECK_EQ(b->released, 1);
    borrow_free(b);
}

/* Builds a stream from borrowed pieces, so chunk boundaries fall where the
 * test says.  The pieces are static: no release needed. */
static stream_t *pieces(int keep, const char *const *parts, int n)
{
    stream_t *s = new_stream(keep, -1);
    for (int i = 0; i < n; i++)
        stream_write_borrowed(s, parts[i], strlen(parts[i]), NULL, NULL);
    return s;
}

static void test_find_basic(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "hello world, hello"), STREAM_OK);
    CHECK_EQ(stream_find(s, "o", 1, 0, SIZE_MAX), 4);
    CHECK_EQ(stream_find(s, "o", 1, 5, SIZE_MAX), 7);
    CHECK_EQ(stream_find(s, "hello", 5, 0, SIZE_MAX), 0);
    CHECK_EQ(stream_find(s, "hello", 5, 1, SIZE_MAX), 13);
    CHECK_EQ(stream_find(s, "hello", 5, 1, 17), -1); /* end bounds the match */
    CHECK_EQ(stream_find(s, "hello", 5, 1, 18), 13);
    CHECK_EQ(stream_find(s, "xyz", 3, 0, SIZE_MAX), -1);
    CHECK_EQ(stream_find(s, "", 0, 0, SIZE_MAX), 0);
    CHECK_EQ(stream_find(s, "", 0, 18, SIZE_MAX), 18);
    CHECK_EQ(stream_find(s, "", 0, 19, SIZE_MAX), -1);
    CHECK_EQ(stream_find(s, "", 0, 5, 3), -1);
    CHECK_EQ(stream_find(s, "h", 1, 5, 3), -1);
    CHECK_EQ(stream_find(s, "h", 1, 100, SIZE_MAX), -1);
    CHECK_EQ(stream_skip(s, 6), 6); /* relative to the read position */
    CHECK_EQ(stream_find(s, "hello", 5, 0, SIZE_MAX), 7);
    CHECK_EQ(stream_find(s, "d", 1, 0, SIZE_MAX), 4);
    stream_free(s);
}

static void test_find_straddle(void)
{
    static const char *const two[] = {"xxxxab", "cdxxxx"};
    stream_t *s = pieces(1, two, 2);
    CHECK_EQ(stream_find(s, "abcd", 4, 0, SIZE_MAX), 4);
    CHECK_EQ(stream_find(s, "bc", 2, 0, SIZE_MAX), 5);
    CHECK_EQ(stream_find(s, "abcd", 4, 5, SIZE_MAX), -1);
    CHECK_EQ(stream_find(s, "abcd", 4, 0, 7), -1);
    CHECK_EQ(stream_find(s, "abcd", 4, 0, 8), 4);
    CHECK_EQ(stream_find(s, "c", 1, 0, SIZE_MAX), 6);
    stream_free(s);

    /* the needle spans three chunks: longer than the middle one */
    static const char *const three[] = {"..ab", "cd", "ef..", "abcdef"};
    s = pieces(1, three, 4);
    CHECK_EQ(stream_find(s, "abcdef", 6, 0, SIZE_MAX), 2);
    CHECK_EQ(stream_find(s, "abcdef", 6, 3, SIZE_MAX), 10);
    CHECK_EQ(stream_find(s, "bcde", 4, 0, SIZE_MAX), 3);
    stream_free(s);

    /* false starts across boundaries: the first match must win */
    static const char *const fs[] = {"aa", "a", "ab", "aab"};
    s = pieces(1, fs, 4);
    CHECK_EQ(stream_find(s, "aab", 3, 0, SIZE_MAX), 2);
    CHECK_EQ(stream_find(s, "aab", 3, 3, SIZE_MAX), 5);
    CHECK_EQ(stream_find(s, "aaab", 3, 1, SIZE_MAX), 1); /* "aaa" */
    CHECK_EQ(stream_find(s, "aaab", 4, 0, SIZE_MAX), 1);
    CHECK_EQ(stream_find(s, "aaaab", 5, 0, SIZE_MAX), 0);
    CHECK_EQ(stream_find(s, "aaaaa", 5, 0, SIZE_MAX), -1);
    stream_free(s);

    /* one-byte chunks */
    static const char *const bytes[] = {"a", "b", "c", "a", "b", "d"};
    s = pieces(1, bytes, 6);
    CHECK_EQ(stream_find(s, "abd", 3, 0, SIZE_MAX), 3);
    CHECK_EQ(stream_find(s, "cab", 3, 0, SIZE_MAX), 2);
    CHECK_EQ(stream_find(s, "abcabd", 6, 0, SIZE_MAX), 0);
    CHECK_EQ(stream_find(s, "bcabd", 5, 1, SIZE_MAX), 1);
    CHECK_EQ(stream_find(s, "abcabd", 6, 1, SIZE_MAX), -1);
    CHECK_EQ(stream_skip(s, 2), 2);
    CHECK_EQ(stream_find(s, "cab", 3, 0, SIZE_MAX), 0);
    stream_free(s);
}

/* Needles longer than the stack window take the sliding path. */
static void test_find_long_needle(void)
{
    enum { N = 600 };
    char needle[N];
    for (int i = 0; i < N; i++)
        needle[i] = (char)('a' + i % 7);
    char *data = malloc(4000);
    memset(data, 'a', 4000);
    memcpy(data + 3000, needle, N);
    data[1000] = needle[0];
    /* chunks of 1000, 1000, 1000, 150, 100, 1750: the match spans three */
    static const size_t cuts[] = {1000, 1000, 1000, 150, 100, 750};
    stream_t *s = new_stream(1, -1);
    size_t at = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK_EQ(stream_write_borrowed(s, data + at, cuts[i], NULL, NULL), STREAM_OK);
        at += cuts[i];
    }
    CHECK_EQ(stream_find(s, needle, N, 0, SIZE_MAX), 3000);
    CHECK_EQ(stream_find(s, needle, N, 3001, SIZE_MAX), -1);
    CHECK_EQ(stream_find(s, needle, N, 0, 3599), -1);
    CHECK_EQ(stream_find(s, needle, N, 0, 3600), 3000);
    CHECK_EQ(stream_find(s, needle + 1, N - 1, 0, SIZE_MAX), 3001);
    /* all-'a' needle: the first straddling run of 'a's */
    CHECK_EQ(stream_find(s, data, 700, 500, SIZE_MAX), 500);
    CHECK_EQ(stream_find(s, data, 700, 2400, SIZE_MAX), -1);
    CHECK_EQ(stream_find(s, data, 300, 2800, SIZE_MAX), 3600);
    CHECK_EQ(stream_find(s, data, 300, 2800, 3899), -1);
    CHECK_EQ(stream_find(s, data, 300, 2800, 3900), 3600);
    CHECK_EQ(stream_find(s, data, 300, 2600, SIZE_MAX), 2600);
    stream_free(s);
    free(data);
}

/* Many 64 KiB chunks, needles at chunk boundaries and at the very end. */
static void test_find_large(void)
{
    enum { CH = 64 * KiB, NCH = 128 };
    stream_t *s = new_stream(0, -1);
    char *buf = malloc(CH);
    for (int i = 0; i < NCH; i++) {
        memset(buf, 'x', CH);
        if (i == 40) {
            memcpy(buf + CH - 3, "\r\n\r", 3);
        }
        if (i == 41)
            buf[0] = '\n';
        if (i == NCH - 1)
            memcpy(buf + CH - 8, "--end--!", 8);
        CHECK_EQ(stream_write(s, buf, CH), STREAM_OK);
    }
    CHECK_EQ(stream_find(s, "\r\n\r\n", 4, 0, SIZE_MAX), 41L * CH - 3);
    CHECK_EQ(stream_find(s, "\n\r\n", 3, 0, SIZE_MAX), 41L * CH - 2);
    CHECK_EQ(stream_find(s, "\n", 1, 41L * CH - 1, SIZE_MAX), 41L * CH);
    CHECK_EQ(stream_find(s, "--end--!", 8, 0, SIZE_MAX), (long long)NCH * CH - 8);
    CHECK_EQ(stream_find(s, "--end--!", 8, 0, (size_t)NCH * CH - 1), -1);
    CHECK_EQ(stream_find(s, "y", 1, 0, SIZE_MAX), -1);
    free(buf);
    stream_free(s);
}

static void test_pin_single_chunk(void)
{
    stream_t *s = new_stream(0, -1);
    borrow_t *b = borrow_new(s, "0123456789", 10);
    CHECK_EQ(stream_write_borrowed(s, b->data, 10, borrow_release, b), STREAM_OK);
    CHECK_EQ(stream_skip(s, 3), 3);
    const void *p;
    size_t len;
    stream_pin_t *pin;
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_OK);
    CHECK(p == b->data + 3); /* zero copy */
    CHECK_EQ(len, 7);
    CHECK_EQ(info(s).memory, 10);
    CHECK_EQ(stream_skip(s, 7), 7);
    CHECK_EQ(b->released, 0); /* consumed but pinned */
    CHECK_EQ(info(s).memory, 10);
    CHECK(memcmp(p, "3456789", 7) == 0);
    stream_unpin(s, pin);
    CHECK_EQ(b->released, 1);
    CHECK_EQ(info(s).memory, 0);
    stream_free(s);
    borrow_free(b);
}

/* Pinned bytes stay valid and unchanged while writes append and reads
 * consume (and free) everything around them. */
static void test_pin_survives(void)
{
    stream_t *s = new_stream(0, -1);
    borrow_t *b = borrow_new(s, "-borrowed-", 10);
    CHECK_EQ(write_str(s, "owned"), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b->data, 10, borrow_release, b), STREAM_OK);
    CHECK_EQ(write_str(s, "tail"), STREAM_OK);
    CHECK_EQ(stream_skip(s, 2), 2);
    size_t mem0 = info(s).memory;

    const void *p1;
    size_t len1;
    stream_pin_t *pin1;
    CHECK_EQ(stream_pin_unread(s, &p1, &len1, &pin1), STREAM_OK);
    CHECK_EQ(len1, 17);
    CHECK(memcmp(p1, "ned-borrowed-tail", 17) == 0);
    /* merged: the borrowed chunk went back, one 17-byte copy came in */
    CHECK_EQ(b->released, 1);
    CHECK_EQ(mem0, 2 * 512 + 10);
    CHECK_EQ(info(s).memory, 17); /* the consumed head went too */
    CHECK_EQ(stream_tell(s), 2);
    CHECK_EQ(stream_unread(s), 17);

    /* a second pin of the same bytes is zero copy */
    const void *p2;
    size_t len2;
    stream_pin_t *pin2;
    CHECK_EQ(stream_pin_unread(s, &p2, &len2, &pin2), STREAM_OK);
    CHECK(p2 == p1);
    CHECK_EQ(len2, 17);

    /* more writes must not touch the pinned chunk */
    CHECK_EQ(write_str(s, "more"), STREAM_OK);
    char buf[64];
    CHECK_EQ(stream_read(s, buf, 64), 21);
    CHECK(memcmp(buf, "ned-borrowed-tailmore", 21) == 0);
    char *big = malloc(300 * KiB);
    for (int round = 0; round < 4; round++) {
        memset(big, 'A' + round, 300 * KiB);
        CHECK_EQ(stream_write(s, big, 300 * KiB), STREAM_OK);
        CHECK_EQ(write_str(s, "xyz"), STREAM_OK);
        CHECK_EQ(stream_skip(s, 300 * KiB + 3), 300 * KiB + 3);
    }
    free(big);
    CHECK(memcmp(p1, "ned-borrowed-tail", 17) == 0);
    stream_unpin(s, pin1);
    CHECK(memcmp(p2, "ned-borrowed-tail", 17) == 0);
    size_t mem1 = info(s).memory;
    stream_unpin(s, pin2);
    CHECK_EQ(info(s).memory, mem1 - 17);
    stream_free(s);
    borrow_free(b);
}

/* A pinned tail is never appended to; the pin's bytes stay exactly as they were. */
static void test_pin_tail_not_appended(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "abc"), STREAM_OK);
    const void *p;
    size_t len;
    stream_pin_t *pin;
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_OK);
    CHECK_EQ(len, 3);
    CHECK_EQ(write_str(s, "def"), STREAM_OK);
    CHECK_EQ(info(s).memory, 2 * 512);
    char buf[8];
    CHECK_EQ(stream_read(s, buf, 8), 6);
    CHECK(memcmp(buf, "abcdef", 6) == 0);
    CHECK(memcmp(p, "abc", 3) == 0);
    stream_unpin(s, pin);
    /* unpinned, the first chunk is not the tail any more: "def" stays alone */
    CHECK_EQ(stream_seek(s, 1), STREAM_OK);
    CHECK(read_is(s, 8, "bcdef"));
    stream_free(s);
}

/* Merging keeps consumed bytes reachable when keep_consumed is set. */
static void test_pin_merge_keeps_history(void)
{
    static const char *const parts[] = {"0123", "4567", "89"};
    stream_t *s = pieces(1, parts, 3);
    CHECK_EQ(stream_skip(s, 2), 2);
    const void *p;
    size_t len;
    stream_pin_t *pin;
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin), STREAM_OK);
    CHECK_EQ(len, 8);
    CHECK(memcmp(p, "23456789", 8) == 0);
    CHECK(p != parts[0] + 2);
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK(read_is(s, 100, "0123456789"));
    const void *p1 = p;
    CHECK_EQ(stream_write_borrowed(s, "ab", 2, NULL, NULL), STREAM_OK);
    CHECK_EQ(stream_seek(s, 2), STREAM_OK); /* merge from a chunk start */
    stream_pin_t *pin2;
    CHECK_EQ(stream_pin_unread(s, &p, &len, &pin2), STREAM_OK);
    CHECK_EQ(len, 10);
    CHECK(memcmp(p, "23456789ab", 10) == 0);
    CHECK(memcmp(p1, "23456789", 8) == 0);
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK(read_is(s, 100, "0123456789ab"));
    CHECK_EQ(stream_find(s, "1234567", 7, 0, SIZE_MAX), -1); /* at the end now */
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK_EQ(stream_find(s, "1234567", 7, 0, SIZE_MAX), 1);
    stream_unpin(s, pin);
    stream_unpin(s, pin2);
    stream_unpin(s, NULL);
    stream_free(s);
}

static void test_seek(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "0123456789"), STREAM_OK);
    CHECK_EQ(stream_skip(s, 10), 10);
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK(read_is(s, 3, "012"));
    CHECK_EQ(stream_seek(s, 7), STREAM_OK);
    CHECK(read_is(s, 10, "789"));
    CHECK_EQ(stream_seek(s, 10), STREAM_OK);
    CHECK_EQ(stream_seek(s, 11), STREAM_ESEEK); /* not yet written */
    CHECK_EQ(stream_tell(s), 10);
    CHECK_EQ(stream_seek(s, 5), STREAM_OK);
    CHECK_EQ(stream_close(s), STREAM_OK);
    CHECK_EQ(stream_seek(s, 1000), STREAM_OK); /* past EOF is fine after close */
    CHECK_EQ(stream_tell(s), 1000);
    CHECK_EQ(stream_unread(s), 0);
    CHECK_EQ(info(s).unread, 0);
    CHECK(stream_at_eof(s));
    char buf[4];
    CHECK_EQ(stream_read(s, buf, 4), 0);
    CHECK_EQ(stream_seek(s, 9), STREAM_OK);
    CHECK(read_is(s, 4, "9"));
    stream_free(s);

    /* without keep_consumed, freed bytes cannot be reached again */
    s = new_stream(0, -1);
    char *big = calloc(1, 200 * KiB);
    CHECK_EQ(stream_write(s, big, 100 * KiB), STREAM_OK);
    CHECK_EQ(stream_write(s, big, 100 * KiB), STREAM_OK);
    CHECK_EQ(stream_skip(s, 50 * KiB), 50 * KiB);
    CHECK_EQ(stream_seek(s, 10), STREAM_OK); /* same chunk: still held */
    CHECK_EQ(stream_skip(s, 150 * KiB), 150 * KiB);
    CHECK_EQ(info(s).memory, 100 * KiB);
    CHECK_EQ(stream_seek(s, 0), STREAM_ESEEK);
    CHECK_EQ(stream_seek(s, 100 * KiB), STREAM_OK);
    CHECK_EQ(stream_tell(s), 100 * KiB);
    CHECK_EQ(stream_seek(s, 200 * KiB), STREAM_OK);
    CHECK_EQ(info(s).memory, 0);
    CHECK_EQ(stream_seek(s, 200 * KiB - 1), STREAM_ESEEK);
    CHECK_EQ(stream_seek(s, 200 * KiB + 1), STREAM_ESEEK);
    free(big);
    stream_free(s);
}

/* keep_consumed=0: memory follows the unread bytes, not the history. */
static void test_consumed_freed(void)
{
    stream_t *s = new_stream(0, -1);
    char *big = calloc(1, 64 * KiB);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(stream_write(s, big, 64 * KiB), STREAM_OK);
        CHECK_EQ(stream_skip(s, 64 * KiB), 64 * KiB);
    }
    CHECK(info(s).memory <= 64 * KiB);
    for (int i = 0; i < 10000; i++) {
        CHECK_EQ(stream_write(s, "0123456789", 10), STREAM_OK);
        CHECK_EQ(stream_skip(s, 10), 10);
    }
    CHECK(info(s).memory <= 64 * KiB);
    CHECK_EQ(info(s).written, 100 * 64 * KiB + 100000);
    free(big);
    stream_free(s);
}

static void test_reader_enter(void)
{
    stream_t *s = new_stream(1, -1);
    CHECK_EQ(stream_reader_enter(s), STREAM_OK);
    CHECK_EQ(stream_reader_enter(s), STREAM_EBUSY);
    stream_reader_leave(s);
    CHECK_EQ(stream_reader_enter(s), STREAM_OK);
    stream_reader_leave(s);
    stream_free(s);
}

static void *enter_thread(void *arg)
{
    return (void *)(intptr_t)stream_reader_enter(arg);
}

static void test_reader_enter_threads(void)
{
    stream_t *s = new_stream(1, -1);
    pthread_t t;
    void *rc;
    CHECK_EQ(stream_reader_enter(s), STREAM_OK);
    pthread_create(&t, NULL, enter_thread, s);
    pthread_join(t, &rc);
    CHECK_EQ((intptr_t)rc, STREAM_EBUSY);
    stream_reader_leave(s);
    pthread_create(&t, NULL, enter_thread, s);
    pthread_join(t, &rc);
    CHECK_EQ((intptr_t)rc, STREAM_OK);
    stream_free(s);
}

/* ---- blocking waits ---- */

typedef struct {
    stream_t *s;
    size_t want;
    stream_waiter_t w;
    int use_w;
    int rc;
    size_t avail;
    int64_t elapsed_ms;
    int64_t end_ms; /* stream_now_ms() when the wait returned */
} waiter_arg;

static void *waiter_thread(void *p)
{
    waiter_arg *a = p;
    int64_t t0 = stream_now_ms();
    CHECK_EQ(stream_reader_enter(a->s), STREAM_OK);
    a->rc = stream_wait(a->s, a->want, a->use_w ? &a->w : NULL, &a->avail);
    stream_reader_leave(a->s);
    a->end_ms = stream_now_ms();
    a->elapsed_ms = a->end_ms - t0;
    return NULL;
}

/* Starts a reader blocked for `want` bytes, runs wake(s), returns its result. */
static waiter_arg blocked_reader(stream_t *s, size_t want, void (*wake)(stream_t *))
{
    waiter_arg a = {.s = s, .want = want};
    pthread_t t;
    pthread_create(&t, NULL, waiter_thread, &a);
    CHECK(wait_for_waiters(s, 1));
    wake(s);
    pthread_join(t, NULL);
    CHECK_EQ(info(s).waiting_readers, 0);
    return a;
}

static void wake_close(stream_t *s) { stream_close(s); }
static void wake_abort(stream_t *s) { stream_abort(s, "gone"); }
static void wake_reader_close(stream_t *s) { stream_reader_close(s); }
static void wake_write(stream_t *s)
{
    /* too little, then enough: only the second may end the wait */
    write_str(s, "1234");
    msleep(20);
    CHECK_EQ(info(s).waiting_readers, 1);
    write_str(s, "5678");
}

static void test_wait_woken(void)
{
    stream_t *s = new_stream(1, -1);
    waiter_arg a = blocked_reader(s, 8, wake_write);
    CHECK_EQ(a.rc, STREAM_OK);
    CHECK_EQ(a.avail, 8);
    stream_free(s);

    s = new_stream(1, -1);
    write_str(s, "abc");
    a = blocked_reader(s, 8, wake_close);
    CHECK_EQ(a.rc, STREAM_OK);
    CHECK_EQ(a.avail, 3);
    stream_free(s);

    s = new_stream(1, 100);
    write_str(s, "abc");
    a = blocked_reader(s, 8, wake_close);
    CHECK_EQ(a.rc, STREAM_ESHORT);
    CHECK_EQ(a.avail, 3);
    stream_free(s);

    s = new_stream(1, -1);
    write_str(s, "abc");
    a = blocked_reader(s, 8, wake_abort);
    CHECK_EQ(a.rc, STREAM_EABORTED);
    CHECK_EQ(a.avail, 0);
    stream_free(s);

    s = new_stream(1, -1);
    a = blocked_reader(s, 8, wake_reader_close);
    CHECK_EQ(a.rc, STREAM_ECLOSED);
    stream_free(s);
}

static void test_wait_deadline(void)
{
    stream_t *s = new_stream(1, -1);
    size_t avail = 99;
    stream_waiter_t w = {.deadline_ms = stream_now_ms() + 120};
    int64_t t0 = stream_now_ms();
    CHECK_EQ(stream_wait(s, 1, &w, &avail), STREAM_ETIMEDOUT);
    int64_t el = stream_now_ms() - t0;
    CHECK(el >= 119 && el < 2000);
    CHECK_EQ(avail, 0);
    /* data present: the deadline does not matter */
    write_str(s, "x");
    w.deadline_ms = 0;
    CHECK_EQ(stream_wait(s, 1, &w, &avail), STREAM_OK);
    CHECK_EQ(avail, 1);
    CHECK_EQ(stream_wait(s, 2, &w, &avail), STREAM_ETIMEDOUT);
    CHECK_EQ(avail, 1);
    stream_free(s);

    /* from another thread, with the waiter counted while blocked */
    s = new_stream(1, -1);
    waiter_arg a = {.s = s, .want = 1, .use_w = 1};
    a.w.deadline_ms = stream_now_ms() + 200;
    pthread_t t;
    pthread_create(&t, NULL, waiter_thread, &a);
    CHECK(wait_for_waiters(s, 1));
    pthread_join(t, NULL);
    CHECK_EQ(a.rc, STREAM_ETIMEDOUT);
    /* not before the deadline (the thread's own clock starts late on a
     * busy machine: 200 ms from its start is not what to check) */
    CHECK(a.end_ms >= a.w.deadline_ms);
    CHECK_EQ(info(s).waiting_readers, 0);
    stream_free(s);
}

typedef struct {
    atomic_int stop;
    atomic_int calls;
    stream_t *s;
} intr_arg;

static int intr_cb(void *p)
{
    intr_arg *a = p;
    atomic_fetch_add(&a->calls, 1);
    (void)stream_unread(a->s); /* would deadlock if the lock were held */
    return atomic_load(&a->stop);
}

static void test_wait_interrupted(void)
{
    stream_t *s = new_stream(1, -1);
    intr_arg ia = {.s = s};
    waiter_arg a = {.s = s, .want = 1, .use_w = 1};
    a.w.deadline_ms = -1;
    a.w.interrupted = intr_cb;
    a.w.arg = &ia;
    pthread_t t;
    pthread_create(&t, NULL, waiter_thread, &a);
    CHECK(wait_for_waiters(s, 1));
    msleep(120);
    CHECK_EQ(atomic_load(&ia.calls), 1); /* asked once before sleeping, never on a timer */
    stream_wake(s);                      /* a wake asks again; not interrupted: waits on */
    for (int i = 0; i < 5000 && atomic_load(&ia.calls) < 2; i++)
        msleep(1);
    CHECK_EQ(atomic_load(&ia.calls), 2);
    CHECK(wait_for_waiters(s, 1));
    atomic_store(&ia.stop, 1);
    stream_wake(s);                      /* only the wake ends the wait: no polling */
    pthread_join(t, NULL);
    CHECK_EQ(a.rc, STREAM_EINTERRUPTED);
    CHECK_EQ(info(s).waiting_readers, 0);
    stream_free(s);

    atomic_store(&ia.stop, 0);

    /* an interrupted callback does not mask data already there */
    s = new_stream(1, -1);
    ia.s = s;
    write_str(s, "x");
    size_t avail;
    CHECK_EQ(stream_wait(s, 1, &a.w, &avail), STREAM_OK);
    stream_free(s);
}

/* ---- drain notification ---- */

typedef struct {
    atomic_int fired;
    stream_t *s;
} drain_arg;

static void drain_cb(void *p)
{
    drain_arg *d = p;
    (void)stream_unread(d->s); /* not under the lock */
    atomic_fetch_add(&d->fired, 1);
}

static void test_drain(void)
{
    stream_opts_t o;
    stream_opts_default(&o);
    o.max_unread = 100; /* low watermark defaults to 50 */
    stream_t *s = stream_new(&o);
    drain_arg d = {.s = s};
    stream_set_drain_notify(s, drain_cb, &d);
    char buf[200] = {0};
    CHECK_EQ(stream_want_drain(s), 0);
    CHECK_EQ(stream_write(s, buf, 100), STREAM_OK);
    CHECK_EQ(stream_over_limit(s), 0);
    CHECK_EQ(stream_write(s, buf, 50), STREAM_OK);
    CHECK_EQ(stream_over_limit(s), 1);
    CHECK_EQ(stream_want_drain(s), 1);
    CHECK_EQ(stream_read(s, buf, 50), 50); /* 100 left */
    CHECK_EQ(d.fired, 0);
    CHECK_EQ(stream_over_limit(s), 0);
    CHECK_EQ(stream_skip(s, 49), 49); /* 51 left */
    CHECK_EQ(d.fired, 0);
    CHECK_EQ(stream_skip(s, 1), 1); /* 50 left: at the watermark */
    CHECK_EQ(d.fired, 1);
    CHECK_EQ(stream_skip(s, 10), 10);
    CHECK_EQ(d.fired, 1); /* one shot */
    CHECK_EQ(stream_want_drain(s), 0);
    CHECK_EQ(stream_write(s, buf, 60), STREAM_OK);
    CHECK_EQ(stream_want_drain(s), 1);
    CHECK_EQ(stream_seek(s, 159), STREAM_OK); /* a seek counts as reading */
    CHECK_EQ(d.fired, 1);
    CHECK_EQ(stream_seek(s, 160), STREAM_OK);
    CHECK_EQ(d.fired, 2);
    CHECK_EQ(stream_seek(s, 0), STREAM_OK);
    CHECK_EQ(stream_want_drain(s), 1);
    CHECK_EQ(stream_close(s), STREAM_OK); /* close fires a pending one */
    CHECK_EQ(d.fired, 3);
    CHECK_EQ(stream_want_drain(s), 0); /* closed: nothing to wait for */
    stream_free(s);

    s = stream_new(&o);
    d.s = s;
    d.fired = 0;
    stream_set_drain_notify(s, drain_cb, &d);
    CHECK_EQ(stream_write(s, buf, 120), STREAM_OK);
    CHECK_EQ(stream_want_drain(s), 1);
    stream_abort(s, "x");
    CHECK_EQ(d.fired, 1);
    CHECK_EQ(stream_want_drain(s), 0);
    stream_free(s);

    s = stream_new(&o);
    d.s = s;
    d.fired = 0;
    stream_set_drain_notify(s, drain_cb, &d);
    CHECK_EQ(stream_write(s, buf, 120), STREAM_OK);
    CHECK_EQ(stream_want_drain(s), 1);
    stream_reader_close(s);
    CHECK_EQ(d.fired, 1);
    stream_free(s);

    o.low_watermark = 10; /* explicit watermark kept */
    s = stream_new(&o);
    d.s = s;
    d.fired = 0;
    stream_set_drain_notify(s, drain_cb, &d);
    CHECK_EQ(stream_write(s, buf, 120), STREAM_OK);
    CHECK_EQ(stream_want_drain(s), 1);
    CHECK_EQ(stream_skip(s, 100), 100);
    CHECK_EQ(d.fired, 0);
    CHECK_EQ(stream_skip(s, 10), 10);
    CHECK_EQ(d.fired, 1);
    stream_free(s);
}

/* ---- event-loop readers (stream_notify_ready) ---- */

static void ready_cb(void *p)
{
    atomic_fetch_add((atomic_int *)p, 1); /* under the stream lock: nothing else */
}

static void test_notify_ready(void)
{
    atomic_int fired = 0;
    char buf[16] = "abcdefghijklmnop";
    stream_t *s = stream_new(NULL);
    CHECK_EQ(stream_notify_ready(s, 4, ready_cb, &fired), 1);
    CHECK_EQ(stream_notify_ready(s, 4, ready_cb, &fired), -1); /* one at a time */
    CHECK_EQ(stream_write(s, buf, 3), STREAM_OK);
    CHECK_EQ(fired, 0); /* 3 < 4 */
    CHECK_EQ(stream_write(s, buf, 1), STREAM_OK);
    CHECK_EQ(fired, 1);
    CHECK_EQ(stream_write(s, buf, 1), STREAM_OK);
    CHECK_EQ(fired, 1); /* one shot */
    CHECK_EQ(stream_notify_ready(s, 5, ready_cb, &fired), 0); /* already there */
    CHECK(stream_cancel_ready(s) == NULL);
    CHECK_EQ(stream_notify_ready(s, 6, ready_cb, &fired), 1);
    CHECK(stream_cancel_ready(s) == &fired); /* withdrawn: never fires */
    CHECK_EQ(stream_write(s, buf, 5), STREAM_OK);
    CHECK_EQ(fired, 1);
    CHECK_EQ(stream_notify_ready(s, 100, ready_cb, &fired), 1);
    stream_wake(s); /* a cancel: the reader looks again */
    CHECK_EQ(fired, 2);
    CHECK_EQ(stream_notify_ready(s, 100, ready_cb, &fired), 1);
    CHECK_EQ(stream_close(s), STREAM_OK);
    CHECK_EQ(fired, 3);
    CHECK_EQ(stream_notify_ready(s, 100, ready_cb, &fired), 0); /* EOF */
    stream_free(s);

    s = stream_new(NULL);
    CHECK_EQ(stream_notify_ready(s, 1, ready_cb, &fired), 1);
    stream_abort(s, "x");
    CHECK_EQ(fired, 4);
    CHECK_EQ(stream_notify_ready(s, 1, ready_cb, &fired), 0);
    stream_free(s);

    s = stream_new(NULL);
    CHECK_EQ(stream_notify_ready(s, 1, ready_cb, &fired), 1);
    stream_reader_close(s);
    CHECK_EQ(fired, 5);
    stream_free(s);

    s = stream_new(NULL);
    CHECK_EQ(stream_notify_ready(s, 2, ready_cb, &fired), 1);
    CHECK_EQ(stream_write_borrowed(s, buf, 2, NULL, NULL), STREAM_OK);
    CHECK_EQ(fired, 6);
    stream_free(s);

    s = stream_new(NULL);
    CHECK_EQ(stream_notify_ready(s, 2, ready_cb, &fired), 1);
    stream_free(s); /* still pending: handed back */
    CHECK_EQ(fired, 7);
}

/* ---- a writer and a reader thread ---- */

typedef struct {
    stream_t *s;
    uint64_t total;
    uint64_t seed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int drained;
    atomic_long borrowed_out; /* borrowed buffers not yet released */
    _Atomic long drain_waits;  /* the writer's; the reader waits for the first */
} pipe_arg;

typedef struct {
    pipe_arg *pa;
    char *mem;
} pipe_borrow;

static void pipe_release(void *ctx)
{
    pipe_borrow *b = ctx;
    atomic_fetch_sub(&b->pa->borrowed_out, 1);
    free(b->mem);
    free(b);
}

static void pipe_drained(void *ctx)
{
    pipe_arg *pa = ctx;
    pthread_mutex_lock(&pa->mu);
    pa->drained = 1;
    pthread_cond_signal(&pa->cv);
    pthread_mutex_unlock(&pa->mu);
}

static void *pipe_writer(void *p)
{
    pipe_arg *pa = p;
    uint64_t st = pa->seed, pos = 0;
    char *buf = malloc(256 * KiB);
    while (pos < pa->total) {
        uint64_t r = rnd(&st);
        size_t n = r % 4 == 0 ? 1 + r % 100 : 1 + (r >> 8) % (200 * KiB);
        if (n > pa->total - pos)
            n = (size_t)(pa->total - pos);
        char *dst = (r >> 40) % 3 == 0 ? malloc(n) : buf;
        for (size_t i = 0; i < n; i++)
            dst[i] = (char)byte_at(pos + i);
        int rc;
        if (dst != buf) {
            pipe_borrow *b = malloc(sizeof *b);
            b->pa = pa;
            b->mem = dst;
            atomic_fetch_add(&pa->borrowed_out, 1);
            rc = stream_write_borrowed(pa->s, dst, n, pipe_release, b);
        } else {
            rc = stream_write(pa->s, dst, n);
        }
        CHECK_EQ(rc, STREAM_OK);
        pos += n;
        /* backpressure as the NIF does it: wait for the drain notification */
        pthread_mutex_lock(&pa->mu);
        pa->drained = 0;
        pthread_mutex_unlock(&pa->mu);
        if (stream_over_limit(pa->s) && stream_want_drain(pa->s)) {
            atomic_fetch_add(&pa->drain_waits, 1);
            pthread_mutex_lock(&pa->mu);
            while (!pa->drained)
                pthread_cond_wait(&pa->cv, &pa->mu);
            pthread_mutex_unlock(&pa->mu);
            CHECK(stream_unread(pa->s) <= 2 * MiB);
        }
    }
    CHECK_EQ(stream_close(pa->s), STREAM_OK);
    free(buf);
    return NULL;
}

static void *pipe_reader(void *p)
{
    pipe_arg *pa = p;
    uint64_t st = pa->seed * 7 + 1, pos = 0;
    char *buf = malloc(300 * KiB);
    int bad = 0;
    /* Start once the writer is held back: a reader that keeps up from the
     * start would leave the backpressure path untested (the run failed so,
     * now and then, on a quiet machine). */
    while (atomic_load(&pa->drain_waits) == 0)
        usleep(100);
    CHECK_EQ(stream_reader_enter(pa->s), STREAM_OK);
    for (;;) {
        uint64_t r = rnd(&st);
        size_t want = 1 + r % (300 * KiB);
        size_t avail = 0;
        stream_waiter_t w = {.deadline_ms = stream_now_ms() + 30000};
        int rc = stream_wait(pa->s, want, &w, &avail);
        CHECK_EQ(rc, STREAM_OK);
        if (rc != STREAM_OK)
            break;
        if (avail == 0) {
            CHECK(stream_at_eof(pa->s));
            break;
        }
        if (avail < want)
            CHECK(info(pa->s).eof);
        if ((r >> 50) % 16 == 0)
            msleep(5); /* let a backlog build, so backpressure kicks in */
        size_t n;
        if ((r >> 32) % 5 == 0) { /* sometimes through a pin */
            const void *ptr;
            stream_pin_t *pin;
            CHECK_EQ(stream_pin_unread(pa->s, &ptr, &n, &pin), STREAM_OK);
            CHECK(n >= avail);
            n = n < want ? n : want;
            memcpy(buf, ptr, n);
            CHECK_EQ(stream_skip(pa->s, n), n);
            for (size_t i = 0; i < n && !bad; i++)
                bad = (uint8_t)((const char *)ptr)[i] != byte_at(pos + i);
            stream_unpin(pa->s, pin);
        } else {
            n = stream_read(pa->s, buf, want);
            CHECK(n == (avail < want ? avail : want));
        }
        for (size_t i = 0; i < n && !bad; i++)
            bad = (uint8_t)buf[i] != byte_at(pos + i);
        pos += n;
    }
    stream_reader_leave(pa->s);
    CHECK(!bad);
    CHECK_EQ(pos, pa->total);
    free(buf);
    return NULL;
}

static void run_pipeline(int keep, uint64_t seed, uint64_t total)
{
    stream_opts_t o;
    stream_opts_default(&o);
    o.keep_consumed = keep;
    o.max_unread = 1 * MiB;
    pipe_arg pa = {.total = total, .seed = seed};
    pa.s = stream_new(&o);
    pthread_mutex_init(&pa.mu, NULL);
    pthread_cond_init(&pa.cv, NULL);
    stream_set_drain_notify(pa.s, pipe_drained, &pa);
    pthread_t w, r;
    pthread_create(&r, NULL, pipe_reader, &pa);
    pthread_create(&w, NULL, pipe_writer, &pa);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    stream_info_t i = info(pa.s);
    CHECK_EQ(i.written, total);
    CHECK_EQ(i.read_pos, total);
    if (!keep)
        CHECK(i.memory <= 256 * KiB);
    else
        CHECK(i.memory >= total);
    CHECK(atomic_load(&pa.drain_waits) > 0);
    stream_free(pa.s);
    CHECK_EQ(atomic_load(&pa.borrowed_out), 0);
    pthread_mutex_destroy(&pa.mu);
    pthread_cond_destroy(&pa.cv);
}

static void test_pipeline_threads(void)
{
    run_pipeline(0, 12345, 48 * MiB);
    run_pipeline(0, 777, 20 * MiB + 13);
    run_pipeline(1, 4242, 16 * MiB + 1);
}

/* Pins released from another thread while the reader and writer go on. */
typedef struct {
    stream_t *s;
    stream_pin_t *pins[64];
    const void *ptrs[64];
    size_t lens[64];
    uint64_t starts[64];
    int n;
} unpin_arg;

static void *unpin_thread(void *p)
{
    unpin_arg *u = p;
    int ok = 1;
    for (int i = 0; i < u->n; i++) {
        for (size_t k = 0; k < u->lens[i] && ok; k++)
            ok = ((const uint8_t *)u->ptrs[i])[k] == byte_at(u->starts[i] + k);
        stream_unpin(u->s, u->pins[i]);
    }
    CHECK(ok);
    return NULL;
}

static void test_unpin_other_thread(void)
{
    stream_t *s = new_stream(0, -1);
    unpin_arg u = {.s = s};
    uint64_t pos = 0, rpos = 0, st = 99;
    char buf[5000];
    for (int i = 0; i < 64; i++) {
        size_t n = 1 + rnd(&st) % sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = (char)byte_at(pos + k);
        char *copy = malloc(n);
        memcpy(copy, buf, n);
        stream_write_borrowed(s, copy, n, free, copy);
        pos += n;
        u.starts[i] = rpos;
        CHECK_EQ(stream_pin_unread(s, &u.ptrs[i], &u.lens[i], &u.pins[i]), STREAM_OK);
        rpos += stream_skip(s, rnd(&st) % (2 * n));
    }
    u.n = 64;
    pthread_t t;
    pthread_create(&t, NULL, unpin_thread, &u);
    for (int i = 0; i < 200; i++) {
        stream_write(s, buf, sizeof buf);
        stream_skip(s, sizeof buf);
    }
    pthread_join(t, NULL);
    stream_skip(s, SIZE_MAX);
    CHECK(info(s).memory <= 64 * KiB);
    stream_free(s);
}

/* ---- runner ---- */


/* stream_read_through: a line within cap is copied and consumed in one call,
 * across chunk boundaries; otherwise nothing moves. */
static void test_read_through(void)
{
    static const char *const parts[] = {"ab\ncd", "ef", "g\nh"};
    stream_t *s = pieces(0, parts, 3);
    char buf[16];
    size_t n = 99;
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_OK);
    CHECK_EQ(n, 3);
    CHECK(memcmp(buf, "ab\n", 3) == 0);
    CHECK_EQ(stream_read_through(s, '\n', buf, 5, &n), STREAM_OK); /* "cdefg\n" is 6 */
    CHECK_EQ(n, 0);
    CHECK_EQ(stream_tell(s), 3);
    CHECK_EQ(stream_read_through(s, '\n', buf, 6, &n), STREAM_OK);
    CHECK_EQ(n, 6);
    CHECK(memcmp(buf, "cdefg\n", 6) == 0);
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_OK); /* "h": no newline yet */
    CHECK_EQ(n, 0);
    CHECK_EQ(stream_unread(s), 1);
    CHECK_EQ(info(s).memory, 3); /* consumed chunks freed (keep_consumed off) */
    CHECK_EQ(stream_read_through(s, 'h', buf, 0, &n), STREAM_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(stream_read_through(s, 'h', buf, 1, &n), STREAM_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_OK); /* nothing unread */
    CHECK_EQ(n, 0);
    CHECK_EQ(write_str(s, "busy\n"), STREAM_OK);
    CHECK_EQ(stream_reader_enter(s), STREAM_OK); /* another reader inside a read */
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_EBUSY);
    CHECK_EQ(n, 0);
    stream_reader_leave(s);
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_OK);
    CHECK_EQ(n, 5);
    stream_reader_close(s);
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_ECLOSED);
    CHECK_EQ(n, 0);
    stream_free(s);

    s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "x\ny"), STREAM_OK);
    stream_abort(s, "gone");
    CHECK_EQ(stream_read_through(s, '\n', buf, sizeof buf, &n), STREAM_EABORTED);
    CHECK_EQ(n, 0);
    stream_free(s);
}

/* A sink for stream_read_line: hands out room for one line at most, counts
 * its calls and the sizes asked; fails when told to. */
typedef struct {
    char room[32];
    int calls, fail;
    size_t asked;
} sink_t;

static void *test_sink(void *ctx, size_t n)
{
    sink_t *k = ctx;
    k->calls++;
    k->asked = n;
    return k->fail || n > sizeof k->room ? NULL : k->room;
}

/* stream_read_line: the sink is asked once, for the line's exact length,
 * inside a chunk and across chunks; a failing sink consumes nothing; kept
 * bytes and seek back work as for read_through. */
static void test_read_line(void)
{
    static const char *const parts[] = {"ab\ncd", "ef", "g\nh"};
    stream_t *s = pieces(1, parts, 3);
    sink_t k = {.calls = 0};
    size_t n = 99;
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 3);
    CHECK_EQ(k.calls, 1);
    CHECK_EQ(k.asked, 3);
    CHECK(memcmp(k.room, "ab\n", 3) == 0);
    k.fail = 1; /* across two chunk boundaries, refused: nothing moves */
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(k.calls, 2);
    CHECK_EQ(k.asked, 6);
    CHECK_EQ(stream_tell(s), 3);
    k.fail = 0;
    CHECK_EQ(stream_read_line(s, '\n', 5, test_sink, &k, &n), STREAM_OK); /* over cap */
    CHECK_EQ(n, 0);
    CHECK_EQ(k.calls, 2); /* no line, no sink */
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 6);
    CHECK(memcmp(k.room, "cdefg\n", 6) == 0);
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK); /* "h": no newline */
    CHECK_EQ(n, 0);
    CHECK_EQ(k.calls, 3);
    CHECK_EQ(stream_seek(s, 1), STREAM_OK); /* kept: seek back, read again mid-chunk */
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 2);
    CHECK(memcmp(k.room, "b\n", 2) == 0);
    CHECK_EQ(stream_seek(s, 5), STREAM_OK); /* the line starts at a chunk's end */
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 4);
    CHECK(memcmp(k.room, "efg\n", 4) == 0);
    CHECK_EQ(stream_close(s), STREAM_OK); /* EOF: the last line has no newline */
    CHECK_EQ(stream_read_line(s, '\n', 16, test_sink, &k, &n), STREAM_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(stream_unread(s), 1);
    CHECK_EQ(info(s).memory, 10); /* everything kept */
    stream_free(s);
}

/* stream_read_pinned: chunks as they lie, no merge, consumed as taken; the
 * views outlive consumption, freeing, more writes and an abort. */
static void test_read_pinned(void)
{
    stream_t *s = new_stream(0, -1);
    borrow_t *b1 = borrow_new(s, "0123456789", 10), *b2 = borrow_new(s, "abcdef", 6);
    CHECK_EQ(stream_write_borrowed(s, b1->data, 10, borrow_release, b1), STREAM_OK);
    CHECK_EQ(stream_write_borrowed(s, b2->data, 6, borrow_release, b2), STREAM_OK);
    CHECK_EQ(stream_skip(s, 2), 2);
    const void *p1, *p2, *p3, *p4;
    size_t l1, l2, l3, l4;
    stream_pin_t *pin1, *pin2, *pin3, *pin4;
    CHECK_EQ(stream_read_pinned(s, 3, &p1, &l1, &pin1), STREAM_OK);
    CHECK(p1 == b1->data + 2); /* zero copy */
    CHECK_EQ(l1, 3);
    CHECK_EQ(stream_read_pinned(s, SIZE_MAX, &p2, &l2, &pin2), STREAM_OK);
    CHECK(p2 == b1->data + 5); /* the rest of the first chunk only */
    CHECK_EQ(l2, 5);
    CHECK_EQ(stream_tell(s), 10);
    CHECK_EQ(b1->released, 0); /* consumed, pinned */
    CHECK_EQ(info(s).memory, 16);
    CHECK_EQ(stream_read_pinned(s, SIZE_MAX, &p3, &l3, &pin3), STREAM_OK);
    CHECK(p3 == b2->data);
    CHECK_EQ(l3, 6);
    CHECK_EQ(stream_read_pinned(s, SIZE_MAX, &p4, &l4, &pin4), STREAM_OK); /* nothing unread */
    CHECK_EQ(l4, 0);
    CHECK(p4 != NULL);
    stream_unpin(s, pin4);
    CHECK_EQ(stream_read_pinned(s, 0, &p4, &l4, &pin4), STREAM_OK);
    CHECK_EQ(l4, 0);
    stream_unpin(s, pin4);
    /* writes go on while views are held; an owned tail is not appended to
     * while pinned */
    CHECK_EQ(write_str(s, "xy"), STREAM_OK);
    CHECK_EQ(stream_read_pinned(s, 1, &p4, &l4, &pin4), STREAM_OK);
    CHECK_EQ(l4, 1);
    CHECK(memcmp(p4, "x", 1) == 0);
    CHECK_EQ(write_str(s, "z"), STREAM_OK);
    char buf[8];
    CHECK_EQ(stream_read(s, buf, 8), 2);
    CHECK(memcmp(buf, "yz", 2) == 0);
    stream_unpin(s, pin1);
    CHECK_EQ(b1->released, 0);
    stream_abort(s, "gone");
    CHECK_EQ(stream_read_pinned(s, 1, &p1, &l1, &pin1), STREAM_EABORTED);
    CHECK(pin1 == NULL);
    CHECK(memcmp(p2, "56789", 5) == 0 && memcmp(p3, "abcdef", 6) == 0 && memcmp(p4, "x", 1) == 0);
    stream_unpin(s, pin2);
    CHECK_EQ(b1->released, 1);
    stream_unpin(s, pin3);
    CHECK_EQ(b2->released, 1);
    stream_unpin(s, pin4);
    CHECK_EQ(info(s).memory, 0);
    stream_free(s);
    borrow_free(b1);
    borrow_free(b2);

    /* keep_consumed: pinned bytes stay seekable and unchanged */
    s = new_stream(1, -1);
    CHECK_EQ(write_str(s, "hello"), STREAM_OK);
    CHECK_EQ(stream_read_pinned(s, SIZE_MAX, &p1, &l1, &pin1), STREAM_OK);
    CHECK_EQ(l1, 5);
    CHECK_EQ(stream_seek(s, 1), STREAM_OK);
    CHECK(read_is(s, 8, "ello"));
    stream_reader_close(s);
    CHECK_EQ(stream_read_pinned(s, 1, &p2, &l2, &pin2), STREAM_ECLOSED);
    CHECK(memcmp(p1, "hello", 5) == 0);
    stream_unpin(s, pin1);
    stream_free(s);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

static const test_case tests[] = {
    {"opts_and_new", test_opts_and_new},
    {"write_read_basic", test_write_read_basic},
    {"small_writes_append", test_small_writes_append},
    {"prealloc", test_prealloc},
    {"overflow", test_overflow},
    {"enomem", test_enomem},
    {"close", test_close},
    {"eshort", test_eshort},
    {"abort", test_abort},
    {"reader_close", test_reader_close},
    {"borrowed_release", test_borrowed_release},
    {"peek_skip", test_peek_skip},
    {"find_basic", test_find_basic},
    {"find_straddle", test_find_straddle},
    {"find_long_needle", test_find_long_needle},
    {"find_large", test_find_large},
    {"pin_single_chunk", test_pin_single_chunk},
    {"pin_survives", test_pin_survives},
    {"pin_tail_not_appended", test_pin_tail_not_appended},
    {"pin_merge_keeps_history", test_pin_merge_keeps_history},
    {"seek", test_seek},
    {"consumed_freed", test_consumed_freed},
    {"reader_enter", test_reader_enter},
    {"reader_enter_threads", test_reader_enter_threads},
    {"wait_woken", test_wait_woken},
    {"wait_deadline", test_wait_deadline},
    {"wait_interrupted", test_wait_interrupted},
    {"drain", test_drain},
    {"notify_ready", test_notify_ready},
    {"pipeline_threads", test_pipeline_threads},
    {"unpin_other_thread", test_unpin_other_thread},
    {"read_through", test_read_through},
    {"read_line", test_read_line},
    {"read_pinned", test_read_pinned},
};

int main(void)
{
    int passed = 0, failed = 0;
    alarm(300); /* a hang is a failure */
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        test_failed = 0;
        tests[i].fn();
        if (test_failed) {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        } else {
            passed++;
            printf("ok   %s\n", tests[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
