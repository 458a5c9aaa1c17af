/* stream_fuzz.c - libFuzzer target for c_src/stream.c.
 *
 * The input is a list of operations run against a stream and against a
 * reference model (a flat byte array and a few flags); any difference
 * abort()s.  Built with small chunk sizes (see the Makefile) so that short
 * inputs cross chunk boundaries.  Checked besides results: pinned bytes never
 * change, borrowed memory is released exactly once (ASan catches a use after
 * release), drain notifications fire when the model says, and everything is
 * given back at the end. */
#include "stream.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                         \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, \
                    #cond);                                                   \
            abort();                                                          \
        }                                                                     \
    } while (0)

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static unsigned u8(input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static unsigned u16(input *in)
{
    unsigned lo = u8(in);
    return lo | u8(in) << 8;
}

/* Bytes from a small alphabet, so that searches find something. */
static void gen(uint8_t *dst, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        dst[i] = (uint8_t)("aab\r\n"[x % 5]);
    }
}

typedef struct {
    uint8_t *mem;
    int released;
} borrow;

static int borrows_out;

static void borrow_release(void *ctx)
{
    borrow *b = ctx;
    REQUIRE(!b->released);
    b->released = 1;
    borrows_out--;
    free(b->mem);
    free(b);
}

static int drains_fired;
static void on_drain(void *ctx)
{
    (void)ctx;
    drains_fired++;
}

#define MAX_PINS 8
typedef struct {
    stream_pin_t *pin;
    const void *ptr;
    size_t len;
    uint64_t start;
} pin_rec;

typedef struct {
    /* the reference */
    uint8_t *data;
    size_t len, cap;       /* written bytes */
    uint64_t rpos;
    int eof, aborted, rclosed, keep, drain_pending, drains;
    int64_t clen;
    size_t low;
    pin_rec pins[MAX_PINS];
    int npins;
} model;

static size_t m_unread(const model *m)
{
    if (m->aborted || m->rclosed || m->rpos >= m->len)
        return 0;
    return (size_t)(m->len - m->rpos);
}

static int m_short(const model *m)
{
    return m->clen >= 0 && (uint64_t)m->len < (uint64_t)m->clen;
}

static int m_write_rc(const model *m, size_t n)
{
    if (m->eof || m->aborted || m->rclosed)
        return STREAM_ECLOSED;
    if (m->clen >= 0 && m->len + n > (uint64_t)m->clen)
        return STREAM_EOVERFLOW;
    return STREAM_OK;
}

static void m_append(model *m, const uint8_t *src, size_t n)
{
    if (n == 0)
        return;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->data = realloc(m->data, m->cap);
        REQUIRE(m->data);
    }
    memcpy(m->data + m->len, src, n);
    m->len += n;
}

static void m_moved(model *m)
{
    if (m->drain_pending && m_unread(m) <= m->low) {
        m->drain_pending = 0;
        m->drains++;
    }
}

static void m_ended(model *m)
{
    if (m->drain_pending) {
        m->drain_pending = 0;
        m->drains++;
    }
}

static void check_state(stream_t *s, const model *m)
{
    stream_info_t i;
    stream_info(s, &i);
    REQUIRE(i.written == m->len);
    REQUIRE(i.read_pos == m->rpos);
    REQUIRE(i.unread == m_unread(m));
    REQUIRE(i.eof == m->eof);
    REQUIRE(i.aborted == m->aborted);
    REQUIRE(i.reader_closed == m->rclosed);
    REQUIRE(i.waiting_readers == 0);
    REQUIRE(i.content_length == m->clen);
    REQUIRE(i.memory >= i.unread);
    if (m->keep && !m->aborted && !m->rclosed)
        REQUIRE(i.memory >= i.written);
    REQUIRE(stream_unread(s) == m_unread(m));
    REQUIRE(stream_tell(s) == m->rpos);
    REQUIRE(stream_at_eof(s) ==
            (m->eof && !m->aborted && !m_short(m) && m_unread(m) == 0));
    REQUIRE(drains_fired == m->drains);
    for (int k = 0; k < m->npins; k++) {
        const pin_rec *p = &m->pins[k];
        REQUIRE(p->ptr != NULL);
        REQUIRE(p->len == 0 || memcmp(p->ptr, m->data + p->start, p->len) == 0);
    }
}

static int64_t ref_find(const model *m, const uint8_t *nd, size_t nlen,
                        size_t start, size_t end)
{
    size_t hi = m_unread(m);
    if (end < hi)
        hi = end;
    if (nlen == 0)
        return start <= hi ? (int64_t)start : -1;
    if (start >= hi || hi - start < nlen)
        return -1;
    const uint8_t *base = m->data + m->rpos;
    for (size_t i = start; i + nlen <= hi; i++)
        if (memcmp(base + i, nd, nlen) == 0)
            return (int64_t)i;
    return -1;
}

/* stream_read_line's sink: room for any line (cap <= its size), or a refusal. */
typedef struct {
    uint8_t *room;
    int calls, fail;
    size_t asked;
} line_sink_t;

static void *fuzz_sink(void *ctx, size_t n)
{
    line_sink_t *k = ctx;
    k->calls++;
    k->asked = n;
    return k->fail ? NULL : k->room;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    model m;
    memset(&m, 0, sizeof m);
    drains_fired = 0;
    borrows_out = 0;

    stream_opts_t o;
    stream_opts_default(&o);
    unsigned flags = u8(&in);
    m.keep = o.keep_consumed = flags & 1;
    switch ((flags >> 1) & 3) {
    case 1: o.content_length = u8(&in); break;          /* preallocated */
    case 2: o.content_length = u16(&in) % 4096; break;  /* maybe not */
    default: o.content_length = -1; break;
    }
    m.clen = o.content_length;
    if (flags & 8) {
        o.max_unread = 1 + u8(&in) * 4;
        if (flags & 16)
            o.low_watermark = u8(&in);
    }
    m.low = o.low_watermark ? o.low_watermark : o.max_unread / 2;
    stream_t *s = stream_new(&o);
    REQUIRE(s);
    stream_set_drain_notify(s, on_drain, NULL);

    uint8_t buf[2048], nd[1024];
    int nops = 0;
    while (in.n > 0 && nops++ < 2000) {
        unsigned op = u8(&in);
        if (op >= 252) { /* rare ops that end the stream */
            if (op < 254) {
                int want = m.eof || m.aborted ? STREAM_ECLOSED : STREAM_OK;
                REQUIRE(stream_close(s) == want);
                if (want == STREAM_OK) {
                    m.eof = 1;
                    m_ended(&m);
                }
            } else if (op == 254) {
                char reason[80];
                memset(reason, 'x', sizeof reason);
                reason[u8(&in) % sizeof reason] = '\0';
                reason[sizeof reason - 1] = '\0';
                if (!m.aborted) {
                    m.aborted = 1;
                    m_ended(&m);
                }
                stream_abort(s, reason);
                char got[64];
                stream_abort_reason(s, got, sizeof got);
                REQUIRE(strlen(got) <= 63);
            } else {
                if (!m.rclosed) {
                    m.rclosed = 1;
                    m_ended(&m);
                }
                stream_reader_close(s);
            }
            check_state(s, &m);
            continue;
        }
        switch (op % 15) {
        case 0: /* copying write */
        case 1: {
            size_t n = op % 15 == 0 ? u8(&in) % 40 : u16(&in) % sizeof buf;
            gen(buf, n, u8(&in));
            int want = m_write_rc(&m, n);
            REQUIRE(stream_write(s, buf, n) == want);
            if (want == STREAM_OK)
                m_append(&m, buf, n);
            break;
        }
        case 2: { /* borrowed write */
            size_t n = u16(&in) % 300;
            borrow *b = malloc(sizeof *b);
            b->mem = malloc(n ? n : 1);
            b->released = 0;
            gen(buf, n, u8(&in));
            memcpy(b->mem, buf, n);
            int want = m_write_rc(&m, n), before = borrows_out++;
            int rc = stream_write_borrowed(s, b->mem, n, borrow_release, b);
            REQUIRE(rc == want);
            if (rc == STREAM_OK) {
                m_append(&m, buf, n);
                if (n == 0) /* nothing to hold: released at once */
                    REQUIRE(borrows_out == before);
            } else {
                borrows_out--;
                free(b->mem);
                free(b);
            }
            break;
        }
        case 3: { /* read */
            size_t n = u16(&in) % sizeof buf;
            size_t want = n < m_unread(&m) ? n : m_unread(&m);
            REQUIRE(stream_read(s, buf, n) == want);
            REQUIRE(want == 0 || memcmp(buf, m.data + m.rpos, want) == 0);
            if (want) {
                m.rpos += want;
                m_moved(&m);
            }
            break;
        }
        case 4: { /* peek */
            size_t n = u16(&in) % sizeof buf, off = u16(&in) % 1024;
            size_t un = m_unread(&m);
            size_t want = off >= un ? 0 : (n < un - off ? n : un - off);
            REQUIRE(stream_peek(s, buf, n, off) == want);
            REQUIRE(want == 0 || memcmp(buf, m.data + m.rpos + off, want) == 0);
            break;
        }
        case 5: { /* skip */
            size_t n = u16(&in) % 1024;
            size_t want = n < m_unread(&m) ? n : m_unread(&m);
            REQUIRE(stream_skip(s, n) == want);
            if (want) {
                m.rpos += want;
                m_moved(&m);
            }
            break;
        }
        case 6: /* find */
        case 7: {
            unsigned how = u8(&in);
            size_t nlen = (how & 1) ? u16(&in) % 600 : u8(&in) % 12;
            size_t un = m_unread(&m);
            if ((how & 2) && un > 0) { /* a needle taken from the data */
                size_t at = u16(&in) % un;
                if (nlen > un - at)
                    nlen = un - at;
                memcpy(nd, m.data + m.rpos + at, nlen);
                if ((how & 4) && nlen > 0)
                    nd[nlen - 1] ^= 1; /* almost a match */
            } else {
                gen(nd, nlen, u8(&in));
            }
            size_t start = (how & 8) ? u16(&in) % 1200 : 0;
            size_t end = (how & 16) ? u16(&in) % 1200 : SIZE_MAX;
            REQUIRE(stream_find(s, nd, nlen, start, end) ==
                    ref_find(&m, nd, nlen, start, end));
            break;
        }
        case 8: { /* pin */
            if (m.npins == MAX_PINS)
                break;
            pin_rec *p = &m.pins[m.npins];
            int want = m.aborted ? STREAM_EABORTED : m.rclosed ? STREAM_ECLOSED : STREAM_OK;
            REQUIRE(stream_pin_unread(s, &p->ptr, &p->len, &p->pin) == want);
            if (want == STREAM_OK) {
                REQUIRE(p->len == m_unread(&m));
                p->start = m.rpos < m.len ? m.rpos : m.len;
                m.npins++;
            }
            break;
        }
        case 9: { /* unpin */
            if (m.npins == 0)
                break;
            int k = (int)(u8(&in) % (unsigned)m.npins);
            stream_unpin(s, m.pins[k].pin);
            m.pins[k] = m.pins[--m.npins];
            break;
        }
        case 10: { /* seek */
            uint64_t pos = u16(&in) % (m.len + 20);
            int rc = stream_seek(s, pos), want;
            if (m.aborted || m.rclosed)
                want = STREAM_ESEEK;
            else if (pos > m.len)
                want = m.eof ? STREAM_OK : STREAM_ESEEK;
            else if (m.keep || pos >= m.rpos)
                want = STREAM_OK;
            else /* backwards without keep_consumed: depends on what was freed */
                want = rc == STREAM_ESEEK ? STREAM_ESEEK : STREAM_OK;
            REQUIRE(rc == want);
            if (rc == STREAM_OK) {
                m.rpos = pos;
                m_moved(&m);
            }
            break;
        }
        case 11: { /* non-blocking wait */
            size_t wantn = u16(&in) % 2048, avail = 12345;
            stream_waiter_t w = {.deadline_ms = 0};
            int rc = stream_wait(s, wantn, &w, &avail), want;
            size_t un = m_unread(&m);
            if (m.aborted)
                want = STREAM_EABORTED;
            else if (m.rclosed)
                want = STREAM_ECLOSED;
            else if (un >= wantn)
                want = STREAM_OK;
            else if (m.eof)
                want = m_short(&m) ? STREAM_ESHORT : STREAM_OK;
            else
                want = STREAM_ETIMEDOUT;
            REQUIRE(rc == want);
            REQUIRE(avail == un);
            break;
        }
        case 12: { /* backpressure */
            size_t un = m_unread(&m);
            REQUIRE(stream_over_limit(s) == (o.max_unread && un > o.max_unread));
            int want = !(m.eof || m.aborted || m.rclosed || un <= m.low);
            REQUIRE(stream_want_drain(s) == want);
            if (want)
                m.drain_pending = 1;
            break;
        }
        case 13: { /* readline's fast path: the line, if whole within cap */
            int delim = "ab\r\n"[u8(&in) % 4];
            size_t cap = u16(&in) % (sizeof buf + 1), n = 99;
            line_sink_t k = {buf, 0, u8(&in) % 8 == 0, 0};
            int rc = stream_read_line(s, delim, cap, fuzz_sink, &k, &n);
            size_t un = m_unread(&m), lim = cap < un ? cap : un, want = 0;
            const uint8_t *hit = lim ? memchr(m.data + m.rpos, delim, lim) : NULL;
            if (hit)
                want = (size_t)(hit - (m.data + m.rpos)) + 1;
            REQUIRE(rc == (m.aborted ? STREAM_EABORTED : m.rclosed ? STREAM_ECLOSED : STREAM_OK));
            REQUIRE(k.calls == (want > 0));
            REQUIRE(!k.calls || k.asked == want);
            if (k.fail)
                want = 0; /* a refusing sink: nothing consumed */
            REQUIRE(n == want);
            REQUIRE(want == 0 || memcmp(buf, m.data + m.rpos, want) == 0);
            if (want) {
                m.rpos += want;
                m_moved(&m);
            }
            break;
        }
        case 14: { /* readview: a chunk's bytes as they lie, pinned, consumed */
            if (m.npins == MAX_PINS)
                break;
            pin_rec *p = &m.pins[m.npins];
            size_t max = u8(&in) % 64 == 0 ? SIZE_MAX : u16(&in) % 1200;
            int want = m.aborted ? STREAM_EABORTED : m.rclosed ? STREAM_ECLOSED : STREAM_OK;
            REQUIRE(stream_read_pinned(s, max, &p->ptr, &p->len, &p->pin) == want);
            if (want != STREAM_OK) {
                REQUIRE(p->pin == NULL);
                break;
            }
            REQUIRE(p->len <= m_unread(&m) && p->len <= max);
            REQUIRE(p->len > 0 || m_unread(&m) == 0 || max == 0);
            p->start = m.rpos;
            m.npins++;
            if (p->len) {
                m.rpos += p->len;
                m_moved(&m);
            }
            break;
        }
        }
        check_state(s, &m);
    }

    /* everything goes back: pins, then the storage */
    while (m.npins > 0)
        stream_unpin(s, m.pins[--m.npins].pin);
    stream_reader_close(s);
    stream_info_t i;
    stream_info(s, &i);
    REQUIRE(i.memory == 0);
    REQUIRE(borrows_out == 0);
    stream_free(s);
    free(m.data);
    return 0;
}
