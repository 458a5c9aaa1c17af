/* stream.c - the byte stream core: a list of refcounted chunks, a read
 * cursor, blocking waits and search.  The contract is in stream.h.
 *
 * Storage.  The list holds one reference per chunk and every pin holds one.
 * A chunk is owned (malloc'd, with room that small writes fill) or borrowed
 * (the writer's memory, handed back through release() exactly once).  Bytes
 * [data, data + len) never change once written, so a pin only has to keep
 * its chunk alive: only the tail is appended to, and only while unpinned.
 *
 * Read position.  cur is the chunk holding byte rpos, cur_off the offset in
 * it; cur is NULL exactly when nothing is unread.  Reads follow the cursor,
 * so they cost O(bytes), not O(chunks).
 *
 * Callbacks (release, drain notify) never run under the lock: each public
 * function collects them in a `deferred` and runs it after unlocking.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "stream.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Macros so that the tests and the fuzzer can shrink them. */
#ifndef STREAM_CHUNK_MIN
#define STREAM_CHUNK_MIN (64 * 1024)           /* owned chunks grow to this size */
#endif
#ifndef STREAM_CHUNK_FIRST
#define STREAM_CHUNK_FIRST 512                 /* first owned chunk of an unsized stream */
#endif
#ifndef STREAM_PREALLOC_MAX
#define STREAM_PREALLOC_MAX (16 * 1024 * 1024) /* declared lengths allocated at once */
#endif
#ifndef STREAM_FIND_WINDOW
#define STREAM_FIND_WINDOW 256 /* longest needle matched across chunks by memmem */
#endif
#define STREAM_SPIN_NS 20000 /* a few 64 KiB memcpys: the longest spin */

#define STREAM_SPIN_MIN_NS 1000 /* below this, no spin (sleep at once) */

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

struct chunk {
    struct chunk *prev, *next; /* list links; next also chains dead chunks */
    const char *data;
    size_t len;                /* bytes held; shrinks only in pin_unread */
    size_t cap;                /* owned: size of buf; borrowed: len */
    size_t mem;                /* share of stream_info.memory */
    uint64_t pos;              /* absolute position of data[0] */
    unsigned refs;             /* list + pins; guarded by the stream lock */
    int borrowed;
    stream_release_fn release;
    void *ctx;
    char buf[];                /* owned storage */
};

struct stream_pin {
    struct chunk *chunk; /* NULL for an empty pin */
};

struct stream {
    /* Leaf lock: no other lock is taken and no callback runs while it is
     * held.  It guards every field below `events`. */
    pthread_mutex_t lock;
    pthread_cond_t readable;   /* broadcast on data and on state changes */
    /* Bumped under the lock by every write and state change, read without
     * it by a reader spinning before it sleeps. */
    atomic_uint events;

    /* set by stream_new, read-only afterwards */
    int64_t content_length;
    size_t max_unread, low_watermark;
    int keep_consumed;

    struct chunk *head, *tail;       /* guarded by lock */
    struct chunk *cur;               /* guarded by lock */
    size_t cur_off;                  /* guarded by lock */
    uint64_t written, rpos;          /* guarded by lock */
    size_t memory;                   /* guarded by lock */
    int eof, aborted, reader_closed; /* guarded by lock */
    atomic_int reader_inside;        /* lock-free: a flag taken by exchange */
    unsigned waiting;                /* guarded by lock: readers asleep in wait */
    unsigned wakes;                  /* guarded by lock: stream_wake calls */
    size_t wait_want;                /* guarded by lock: least want among them */
    long spin_ns;                    /* guarded by lock: the reader's spin budget */
    int drain_wanted;                /* guarded by lock */
    stream_notify_fn drain_fn;       /* guarded by lock */
    void *drain_ctx;                 /* guarded by lock */
    stream_ready_fn ready_fn;        /* guarded by lock: an event-loop reader */
    void *ready_ctx;                 /* guarded by lock */
    size_t ready_want;               /* guarded by lock */
    char reason[64];                 /* guarded by lock */
#ifdef STREAM_CHECK_OWNER
    pthread_t owner;                 /* guarded by lock: for assert_locked */
    int owned;
#endif
};

/* Work for after the unlock. */
typedef struct {
    struct chunk *dead; /* chunks whose last reference went, chained by next */
    stream_notify_fn fn;
    void *ctx;
} deferred;

/* ---- locking ---- */

/* Lock-owner checks: in the unit tests and the fuzzer (test/c/Makefile),
 * not in the NIF, where they cost a pthread_self() per lock round, a tenth
 * of a readline (which takes one round). */
#if defined(STREAM_CHECK_OWNER) && !defined(NDEBUG)
#define OWN(s) ((s)->owner = pthread_self(), (s)->owned = 1)
#define DISOWN(s) ((s)->owned = 0)
#define assert_locked(s) assert((s)->owned && pthread_equal((s)->owner, pthread_self()))
#else
#define OWN(s) ((void)0)
#define DISOWN(s) ((void)0)
#define assert_locked(s) ((void)0)
#endif

static void lock(stream_t *s) { pthread_mutex_lock(&s->lock); OWN(s); }
static void unlock(stream_t *s) { DISOWN(s); pthread_mutex_unlock(&s->lock); }

static void run_deferred_all(deferred *d)
{
    while (d->dead) {
        struct chunk *c = d->dead;
        d->dead = c->next;
        if (c->release)
            c->release(c->ctx);
        free(c);
    }
    if (d->fn)
        d->fn(d->ctx);
}

/* Inline: most calls have nothing to run (readline pays it per line). */
static inline void run_deferred(deferred *d)
{
    if (d->dead || d->fn)
        run_deferred_all(d);
}

/* ---- chunks and the list ---- */

static int dead_locked(const stream_t *s) { return s->aborted || s->reader_closed; }

/* Abort and reader close drop the storage: nothing is readable after them. */
static size_t unread_locked(const stream_t *s)
{
    if (dead_locked(s) || s->rpos >= s->written)
        return 0;
    return (size_t)(s->written - s->rpos);
}

static struct chunk *chunk_new(size_t cap)
{
    struct chunk *c = NULL;
    if (cap <= SIZE_MAX - sizeof *c)
        c = malloc(sizeof *c + cap);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->data = c->buf;
    c->cap = c->mem = cap;
    c->refs = 1;
    return c;
}

/* The last reference goes: freed (and released) after the unlock. */
static void unref_locked(stream_t *s, struct chunk *c, deferred *d)
{
    assert_locked(s);
    assert(c->refs > 0);
    if (--c->refs > 0)
        return;
    s->memory -= c->mem;
    c->next = d->dead;
    d->dead = c;
}

static void unlink_locked(stream_t *s, struct chunk *c, deferred *d)
{
    assert_locked(s);
    *(c->prev ? &c->prev->next : &s->head) = c->next;
    *(c->next ? &c->next->prev : &s->tail) = c->prev;
    c->prev = c->next = NULL;
    unref_locked(s, c, d);
}

static void append_locked(stream_t *s, struct chunk *c)
{
    assert_locked(s);
    c->prev = s->tail;
    c->next = NULL;
    *(s->tail ? &s->tail->next : &s->head) = c;
    s->tail = c;
    s->memory += c->mem;
}

/* n bytes were added at the end of the tail chunk c. */
static void grew_locked(stream_t *s, struct chunk *c, size_t n)
{
    assert_locked(s);
    if (!s->cur && s->rpos == s->written) { /* the reader was waiting here */
        s->cur = c;
        s->cur_off = (size_t)(s->written - c->pos);
    }
    s->written += n;
}

static void link_new_locked(stream_t *s, struct chunk *c)
{
    c->pos = s->written;
    append_locked(s, c);
    grew_locked(s, c, c->len);
}

/* Room a write may fill in the tail: none in a borrowed or pinned chunk,
 * whose bytes someone else holds a pointer to. */
static size_t tail_room_locked(const stream_t *s)
{
    const struct chunk *t = s->tail;
    if (!t || t->borrowed || t->refs != 1)
        return 0;
    return t->cap - t->len;
}

/* Capacity of a new owned chunk for need bytes at absolute position at. */
static size_t chunk_cap(const stream_t *s, size_t need, uint64_t at)
{
    if (s->content_length >= 0 && s->content_length <= STREAM_PREALLOC_MAX) {
        uint64_t rest = (uint64_t)s->content_length - at;
        return rest > need ? (size_t)rest : need;
    }
    /* Grow with the stream: a short body costs a small chunk, a long one
     * gets chunks of STREAM_CHUNK_MIN. */
    size_t grow = at < STREAM_CHUNK_MIN ? (size_t)at : STREAM_CHUNK_MIN;
    if (grow < STREAM_CHUNK_FIRST)
        grow = STREAM_CHUNK_FIRST < STREAM_CHUNK_MIN ? STREAM_CHUNK_FIRST : STREAM_CHUNK_MIN;
    return need > grow ? need : grow;
}

static void drop_all_locked(stream_t *s, deferred *d)
{
    while (s->head)
        unlink_locked(s, s->head, d);
    s->cur = NULL;
    s->cur_off = 0;
}

/* Without keep_consumed, chunks wholly before the read position go; a read
 * tail with room left stays, or every small write would pay a new chunk. */
static void drop_consumed_locked(stream_t *s, deferred *d)
{
    if (s->keep_consumed)
        return;
    while (s->head && s->head != s->cur) {
        if (s->head == s->tail && tail_room_locked(s) > 0)
            break;
        unlink_locked(s, s->head, d);
    }
}

/* Copies n bytes (they must exist) from (*cp, *offp) to dst, or skips them
 * if dst is NULL, leaving the position on the next byte (NULL at the end). */
static void span_copy(struct chunk **cp, size_t *offp, char *dst, size_t n)
{
    struct chunk *c = *cp;
    size_t off = *offp;
    while (n > 0) {
        size_t take = MIN(c->len - off, n);
        if (dst) {
            memcpy(dst, c->data + off, take);
            dst += take;
        }
        n -= take;
        off += take;
        if (off == c->len) {
            c = c->next;
            off = 0;
        }
    }
    *cp = c;
    *offp = off;
}

static int span_equal(const struct chunk *c, size_t off, const char *p, size_t n)
{
    for (; n > 0; c = c->next, off = 0) {
        size_t take = MIN(c->len - off, n);
        if (memcmp(c->data + off, p, take) != 0)
            return 0;
        p += take;
        n -= take;
    }
    return 1;
}

/* ---- events ---- */

static void fire_ready_locked(stream_t *s, int all);

/* Data came (all == 0) or the state changed (all == 1). */
static void wake_locked(stream_t *s, int all)
{
    atomic_fetch_add_explicit(&s->events, 1, memory_order_release);
    if (s->waiting && (all || unread_locked(s) >= s->wait_want))
        pthread_cond_broadcast(&s->readable);
    fire_ready_locked(s, all);
}

static void fire_drain_locked(stream_t *s, deferred *d)
{
    if (!s->drain_wanted)
        return;
    s->drain_wanted = 0;
    d->fn = s->drain_fn;
    d->ctx = s->drain_ctx;
}

/* The read position moved. */
static inline void moved_locked(stream_t *s, deferred *d)
{
    if (!s->keep_consumed)
        drop_consumed_locked(s, d);
    if (s->drain_wanted && unread_locked(s) <= s->low_watermark)
        fire_drain_locked(s, d);
}

/* close, abort, reader close: nobody waits for anything any more. */
static void ended_locked(stream_t *s, deferred *d)
{
    if (dead_locked(s))
        drop_all_locked(s, d);
    fire_drain_locked(s, d);
    wake_locked(s, 1);
}

/* ---- life cycle ---- */

void stream_opts_default(stream_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->content_length = -1;
    o->keep_consumed = 1;
}

stream_t *stream_new(const stream_opts_t *opts)
{
    stream_opts_t o;
    pthread_condattr_t ca;
    stream_t *s;

    if (opts)
        o = *opts;
    else
        stream_opts_default(&o);
    if (o.content_length < -1 || !(s = calloc(1, sizeof *s)))
        return NULL;
    s->content_length = o.content_length;
    s->max_unread = o.max_unread;
    s->low_watermark = o.low_watermark;
    if (s->low_watermark == 0 && s->max_unread > 0)
        s->low_watermark = s->max_unread / 2;
    s->keep_consumed = o.keep_consumed != 0;
    s->wait_want = SIZE_MAX;
    s->spin_ns = STREAM_SPIN_NS;
    atomic_init(&s->events, 0);
    if (pthread_mutex_init(&s->lock, NULL) != 0)
        goto fail_mutex;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_cond;
    /* deadlines are monotonic: a wall clock jump must not end or stretch a wait */
    int bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
              pthread_cond_init(&s->readable, &ca) != 0;
    pthread_condattr_destroy(&ca);
    if (!bad)
        return s;
fail_cond:
    pthread_mutex_destroy(&s->lock);
fail_mutex:
    free(s);
    return NULL;
}

void stream_free(stream_t *s)
{
    deferred d = {0};
    if (!s)
        return;
    lock(s);
    drop_all_locked(s, &d);
    fire_ready_locked(s, 1); /* a pending registration is handed back, never leaked */
    unlock(s);
    run_deferred(&d);
    pthread_cond_destroy(&s->readable);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void stream_set_drain_notify(stream_t *s, stream_notify_fn fn, void *ctx)
{
    lock(s);
    s->drain_fn = fn;
    s->drain_ctx = ctx;
    unlock(s);
}

/* ---- writer side ---- */

static int write_check_locked(const stream_t *s, size_t len)
{
    if (s->eof || dead_locked(s))
        return STREAM_ECLOSED;
    if (s->content_length >= 0 && len > (uint64_t)s->content_length - s->written)
        return STREAM_EOVERFLOW;
    return STREAM_OK;
}

int stream_write(stream_t *s, const void *data, size_t len)
{
    const char *src = data;
    struct chunk *c = NULL;

    lock(s);
    int rc = write_check_locked(s, len);
    size_t room = tail_room_locked(s);
    if (rc != STREAM_OK || len == 0) {
        /* nothing to do */
    } else if (len > room && len >= STREAM_CHUNK_MIN) {
        /* A big write gets a chunk of its own, filled without the lock so
         * that a reader copying out meanwhile is not held up.  Checked again
         * afterwards: a close may have come in between. */
        size_t cap = chunk_cap(s, len, s->written);
        unlock(s);
        if (!(c = chunk_new(cap)))
            return STREAM_ENOMEM;
        memcpy(c->buf, src, len);
        c->len = len;
        lock(s);
        if ((rc = write_check_locked(s, len)) == STREAM_OK) {
            link_new_locked(s, c);
            c = NULL;
        }
    } else {
        /* fill the tail's room, the rest into a new chunk, allocated before
         * anything changes so that ENOMEM leaves the stream as it was */
        size_t first = MIN(len, room);
        if (first < len &&
            !(c = chunk_new(chunk_cap(s, len - first, s->written + first)))) {
            rc = STREAM_ENOMEM;
        } else {
            if (first > 0) {
                struct chunk *t = s->tail;
                memcpy(t->buf + t->len, src, first);
                t->len += first;
                grew_locked(s, t, first);
            }
            if (c) {
                memcpy(c->buf, src + first, len - first);
                c->len = len - first;
                link_new_locked(s, c);
                c = NULL;
            }
        }
    }
    if (rc == STREAM_OK)
        wake_locked(s, 0);
    unlock(s);
    free(c);
    return rc;
}

int stream_write_borrowed(stream_t *s, const void *data, size_t len,
                          stream_release_fn release, void *ctx)
{
    struct chunk *c = NULL;
    if (len > 0) {
        if (!(c = calloc(1, sizeof *c)))
            return STREAM_ENOMEM;
        c->data = data;
        c->len = c->cap = c->mem = len;
        c->refs = c->borrowed = 1;
        c->release = release;
        c->ctx = ctx;
    }
    lock(s);
    int rc = write_check_locked(s, len);
    if (rc == STREAM_OK && c) {
        link_new_locked(s, c);
        c = NULL;
        wake_locked(s, 0);
    }
    unlock(s);
    free(c);
    if (rc == STREAM_OK && len == 0 && release)
        release(ctx); /* nothing to hold on to */
    return rc;
}

int stream_close(stream_t *s)
{
    deferred d = {0};
    int rc = STREAM_ECLOSED;
    lock(s);
    if (!s->eof && !s->aborted) {
        s->eof = 1;
        ended_locked(s, &d);
        rc = STREAM_OK;
    }
    unlock(s);
    run_deferred(&d);
    return rc;
}

void stream_abort(stream_t *s, const char *reason)
{
    deferred d = {0};
    lock(s);
    if (!s->aborted) {
        size_t n = reason ? strnlen(reason, sizeof s->reason - 1) : 0;
        memcpy(s->reason, reason ? reason : "", n);
        s->reason[n] = '\0';
        s->aborted = 1;
        ended_locked(s, &d);
    }
    unlock(s);
    run_deferred(&d);
}

void stream_reader_close(stream_t *s)
{
    deferred d = {0};
    lock(s);
    if (!s->reader_closed) {
        s->reader_closed = 1;
        ended_locked(s, &d);
    }
    unlock(s);
    run_deferred(&d);
}

int stream_over_limit(stream_t *s)
{
    lock(s);
    int r = s->max_unread != 0 && unread_locked(s) > s->max_unread;
    unlock(s);
    return r;
}

int stream_want_drain(stream_t *s)
{
    lock(s);
    int r = !s->eof && !dead_locked(s) && unread_locked(s) > s->low_watermark;
    if (r)
        s->drain_wanted = 1;
    unlock(s);
    return r;
}

/* ---- reader side ---- */

int64_t stream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int stream_reader_enter(stream_t *s)
{
    return atomic_exchange(&s->reader_inside, 1) ? STREAM_EBUSY : STREAM_OK;
}

void stream_reader_leave(stream_t *s)
{
    atomic_store(&s->reader_inside, 0);
}

int stream_reader_closed(stream_t *s)
{
    lock(s);
    int closed = s->reader_closed;
    unlock(s);
    return closed;
}

/* Sleeps on readable until woken or until_ms (monotonic; -1: no limit). */
static void sleep_locked(stream_t *s, int64_t until_ms)
{
    assert_locked(s);
    DISOWN(s);
    if (until_ms < 0) {
        pthread_cond_wait(&s->readable, &s->lock);
    } else {
        struct timespec ts = {(time_t)(until_ms / 1000), (long)(until_ms % 1000) * 1000000L};
        pthread_cond_timedwait(&s->readable, &s->lock, &ts);
    }
    OWN(s);
}

/* Before sleeping, wait some microseconds for the writer, without the lock.
 * When writer and reader keep pace the data is one memcpy away, and a futex
 * sleep and wake per chunk costs more than the copy (measured: 2x slower on
 * a 64 KiB pipeline). */
static long elapsed_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static void spin_locked(stream_t *s, long budget_ns)
{
    unsigned seen = atomic_load_explicit(&s->events, memory_order_relaxed);
    struct timespec t0;
    unlock(s);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; atomic_load_explicit(&s->events, memory_order_acquire) == seen; i++) {
        if (i % 64 == 0 && elapsed_ns(&t0) > budget_ns)
            break;
#if defined(__x86_64__) || defined(__i386__)
        __asm__ __volatile__("pause");
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    }
    lock(s);
}

void stream_wake(stream_t *s)
{
    lock(s);
    s->wakes++;
    wake_locked(s, 1);
    unlock(s);
}

/* The spin adapts to the writer (like the workers' in workers.c): a wait
 * that a full spin would have covered sets the budget to twice its length
 * (at most the full spin), a longer one halves it.  A writer slower than
 * the spin (an upload arriving at the socket's pace) then costs the reader
 * no spinning, and on a busy machine the spin does not take the CPU the
 * writer needs. */
static void adapt_spin_locked(stream_t *s, long waited_ns)
{
    if (waited_ns <= STREAM_SPIN_NS)
        s->spin_ns = MIN(STREAM_SPIN_NS, MAX(s->spin_ns, 2 * waited_ns));
    else
        s->spin_ns /= 2;
}

int stream_wait(stream_t *s, size_t want, const stream_waiter_t *w, size_t *avail)
{
    int polled = 0, asleep = 0, spun = 0, rc;
    unsigned polled_wakes = 0;
    struct timespec t0;

    lock(s);
    for (;;) {
        size_t un = unread_locked(s);
        if (dead_locked(s)) {
            rc = s->aborted ? STREAM_EABORTED : STREAM_ECLOSED;
            break;
        }
        if (un >= want || s->eof) {
            rc = un < want && s->content_length >= 0 &&
                 s->written < (uint64_t)s->content_length ? STREAM_ESHORT : STREAM_OK;
            break;
        }
        int64_t now = stream_now_ms(), until = -1;
        if (w && w->deadline_ms >= 0) {
            if (now >= w->deadline_ms) {
                rc = STREAM_ETIMEDOUT;
                break;
            }
            until = w->deadline_ms;
        }
        if (w && w->interrupted && (!polled || polled_wakes != s->wakes)) {
            /* A wake after this line makes us ask again: no cancel is missed. */
            polled = 1;
            polled_wakes = s->wakes;
            unlock(s); /* the callback may look at anything, this stream too */
            int stop = w->interrupted(w->arg);
            lock(s);
            if (stop) {
                rc = STREAM_EINTERRUPTED;
                break;
            }
            continue; /* the state may have changed meanwhile */
        }
        if (!spun) {
            spun = 1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (s->spin_ns >= STREAM_SPIN_MIN_NS) {
                spin_locked(s, s->spin_ns);
                continue;
            }
        }
        if (!asleep) {
            asleep = 1;
            s->waiting++;
            s->wait_want = MIN(s->wait_want, want);
        }
        sleep_locked(s, until);
    }
    if (spun)
        adapt_spin_locked(s, elapsed_ns(&t0));
    if (asleep && --s->waiting == 0)
        s->wait_want = SIZE_MAX;
    *avail = unread_locked(s);
    unlock(s);
    return rc;
}

size_t stream_read(stream_t *s, void *dst, size_t n)
{
    deferred d = {0};
    lock(s);
    n = MIN(n, unread_locked(s));
    if (n > 0) {
        span_copy(&s->cur, &s->cur_off, dst, n);
        s->rpos += n;
        moved_locked(s, &d);
    }
    unlock(s);
    run_deferred(&d);
    return n;
}

size_t stream_skip(stream_t *s, size_t n)
{
    return stream_read(s, NULL, n);
}

size_t stream_peek(stream_t *s, void *dst, size_t n, size_t off)
{
    lock(s);
    size_t un = unread_locked(s);
    struct chunk *c = s->cur;
    size_t coff = s->cur_off;
    n = off < un ? MIN(n, un - off) : 0;
    if (n > 0) {
        span_copy(&c, &coff, NULL, off);
        span_copy(&c, &coff, dst, n);
    }
    unlock(s);
    return n;
}

/* A match beginning in [from, b) and ending past b: one that no per-chunk
 * search can see.  (c, off) is at relative position from.  Returns its
 * position, -1 if none, -2 if no match can start at or after from. */
static int64_t find_straddle(struct chunk *c, size_t off, size_t from, size_t b,
                             size_t hi, const char *nd, size_t nlen)
{
    if (from + nlen > hi)
        return -2;
    if (nlen <= STREAM_FIND_WINDOW) {
        char win[2 * (STREAM_FIND_WINDOW - 1)];
        size_t left = b - from, n = left + MIN(hi - b, nlen - 1);
        span_copy(&c, &off, win, n);
        const char *p = memmem(win, n, nd, nlen);
        return p && (size_t)(p - win) < left ? (int64_t)(from + (size_t)(p - win)) : -1;
    }
    /* Long needle: compare at each start whose first byte matches.  No start
     * is tried twice in one search (the caller moves from on), but a
     * pathological input costs up to nlen compares per start. */
    while (from < b) {
        size_t piece = MIN(c->len - off, b - from);
        const char *p = memchr(c->data + off, (unsigned char)nd[0], piece);
        size_t k = p ? (size_t)(p - (c->data + off)) : piece;
        from += k;
        off += k;
        if (p) {
            if (from + nlen > hi)
                return -2;
            if (span_equal(c, off, nd, nlen))
                return (int64_t)from;
            from++;
            off++;
        }
        if (off == c->len) {
            c = c->next;
            off = 0;
        }
    }
    return -1;
}

int64_t stream_find(stream_t *s, const void *needle, size_t nlen, size_t start, size_t end)
{
    const char *nd = needle;
    int64_t r = -1;

    lock(s);
    size_t hi = MIN(end, unread_locked(s));
    if (nlen == 0) {
        r = start <= hi ? (int64_t)start : -1;
        goto out;
    }
    if (start >= hi || hi - start < nlen)
        goto out;
    struct chunk *c = s->cur;
    size_t off = s->cur_off, pos = start;
    span_copy(&c, &off, NULL, start);
    /* the lag: the first start not yet tried across a chunk boundary */
    struct chunk *lc = c;
    size_t loff = off, lpos = start;
    while (pos < hi) {
        size_t seg = MIN(c->len - off, hi - pos);
        if (pos > start && nlen > 1) { /* a boundary: matches across it first */
            size_t from = pos - lpos < nlen - 1 ? lpos : pos - (nlen - 1);
            span_copy(&lc, &loff, NULL, from - lpos);
            if ((r = find_straddle(lc, loff, from, pos, hi, nd, nlen)) != -1) {
                r = r < 0 ? -1 : r;
                goto out;
            }
            lc = c;
            loff = off;
            lpos = pos;
        }
        const char *base = c->data + off, *p = NULL;
        if (nlen == 1)
            p = memchr(base, (unsigned char)nd[0], seg);
        else if (seg >= nlen)
            p = memmem(base, seg, nd, nlen);
        if (p) {
            r = (int64_t)(pos + (size_t)(p - base));
            goto out;
        }
        pos += seg;
        c = c->next;
        off = 0;
    }
out:
    unlock(s);
    return r;
}

/* ---- pins ---- */

static const char pin_empty[1]; /* what an empty pin points to */

/* A pin is allocated before the lock is taken, so that ENOMEM changes
 * nothing; it starts empty and *ptr, *len describe nothing. */
static stream_pin_t *pin_new(const void **ptr, size_t *len)
{
    stream_pin_t *p = malloc(sizeof *p);
    if (p)
        p->chunk = NULL;
    *ptr = pin_empty;
    *len = 0;
    return p;
}

/* p holds a reference to c from now on. */
static void pin_take_locked(stream_t *s, stream_pin_t *p, struct chunk *c)
{
    (void)s;
    assert_locked(s);
    c->refs++;
    p->chunk = c;
}

/* Ends a pinning call: unlocks, then hands p out, or frees it on error. */
static int pin_done(stream_t *s, deferred *d, stream_pin_t *p, int rc, stream_pin_t **pin)
{
    unlock(s);
    run_deferred(d);
    if (rc != STREAM_OK) {
        assert(!p->chunk);
        free(p);
        p = NULL;
    }
    *pin = p;
    return rc;
}

int stream_pin_unread(stream_t *s, const void **ptr, size_t *len, stream_pin_t **pin)
{
    deferred d = {0};
    int rc = STREAM_OK;
    stream_pin_t *p = pin_new(ptr, len);

    if (!(*pin = p))
        return STREAM_ENOMEM;
    lock(s);
    struct chunk *c = s->cur, *x = NULL;
    size_t un = unread_locked(s);
    if (dead_locked(s)) {
        rc = s->aborted ? STREAM_EABORTED : STREAM_ECLOSED;
    } else if (un == 0) {
        /* the empty pin */
    } else if (c == s->tail) { /* one chunk: pinned where it is */
        pin_take_locked(s, p, c);
        *ptr = c->data + s->cur_off;
        *len = un;
    } else if (!(x = chunk_new(un))) {
        rc = STREAM_ENOMEM;
    } else {
        /* Merge: one chunk with a copy of the unread bytes replaces those
         * that held them.  A consumed head stays, cut short, so that seeking
         * back still works; no pinned byte changes. */
        size_t off = s->cur_off;
        span_copy(&c, &off, x->buf, un);
        x->len = un;
        x->pos = s->rpos;
        x->refs = 2; /* the list's and the pin's */
        p->chunk = x;
        c = s->cur;
        if (s->cur_off > 0) {
            c->len = s->cur_off;
            c = c->next;
        }
        while (c) {
            struct chunk *next = c->next;
            unlink_locked(s, c, &d);
            c = next;
        }
        append_locked(s, x);
        s->cur = x;
        s->cur_off = 0;
        drop_consumed_locked(s, &d);
        *ptr = x->data;
        *len = un;
    }
    return pin_done(s, &d, p, rc, pin);
}

void stream_unpin(stream_t *s, stream_pin_t *pin)
{
    deferred d = {0};
    if (pin && pin->chunk) {
        lock(s);
        unref_locked(s, pin->chunk, &d);
        unlock(s);
        run_deferred(&d);
    }
    free(pin);
}

/* ---- event-loop readers ---- */

/* Under the lock, by contract (stream.h): the callback only queues and
 * writes an eventfd. */
static void fire_ready_locked(stream_t *s, int all)
{
    assert_locked(s);
    if (!s->ready_fn || (!all && unread_locked(s) < s->ready_want))
        return;
    stream_ready_fn fn = s->ready_fn;
    s->ready_fn = NULL;
    fn(s->ready_ctx);
}

int stream_notify_ready(stream_t *s, size_t want, stream_ready_fn fn, void *ctx)
{
    int r;
    lock(s);
    if (s->ready_fn) {
        r = -1;
    } else if (s->eof || dead_locked(s) || unread_locked(s) >= want) {
        r = 0;
    } else {
        s->ready_fn = fn;
        s->ready_ctx = ctx;
        s->ready_want = want;
        r = 1;
    }
    unlock(s);
    return r;
}

void *stream_cancel_ready(stream_t *s)
{
    lock(s);
    void *ctx = s->ready_fn ? s->ready_ctx : NULL;
    s->ready_fn = NULL;
    unlock(s);
    return ctx;
}

/* ---- positions and state ---- */

uint64_t stream_tell(stream_t *s)
{
    lock(s);
    uint64_t r = s->rpos;
    unlock(s);
    return r;
}

int stream_seek(stream_t *s, uint64_t pos)
{
    deferred d = {0};
    int rc = STREAM_ESEEK;

    lock(s);
    if (dead_locked(s)) {
        /* storage gone */
    } else if (pos > s->written) {
        if (s->eof) { /* past the end of a closed stream: reads return nothing */
            s->rpos = pos;
            s->cur = NULL;
            s->cur_off = 0;
            moved_locked(s, &d);
            rc = STREAM_OK;
        }
    } else if (pos >= (s->head ? s->head->pos : s->written)) { /* still held */
        struct chunk *c = s->cur && pos >= s->rpos ? s->cur : s->head;
        while (c && pos >= c->pos + c->len)
            c = c->next;
        s->cur = c;
        s->cur_off = c ? (size_t)(pos - c->pos) : 0;
        s->rpos = pos;
        moved_locked(s, &d);
        rc = STREAM_OK;
    }
    unlock(s);
    run_deferred(&d);
    return rc;
}

int stream_seekable(stream_t *s)
{
    return s->keep_consumed; /* read-only after stream_new */
}

size_t stream_unread(stream_t *s)
{
    lock(s);
    size_t r = unread_locked(s);
    unlock(s);
    return r;
}

int stream_at_eof(stream_t *s)
{
    lock(s);
    int r = s->eof && !s->aborted && unread_locked(s) == 0 &&
            (s->content_length < 0 || s->written == (uint64_t)s->content_length);
    unlock(s);
    return r;
}

void stream_info(stream_t *s, stream_info_t *out)
{
    lock(s);
    out->written = s->written;
    out->read_pos = s->rpos;
    out->unread = unread_locked(s);
    out->eof = s->eof;
    out->aborted = s->aborted;
    out->reader_closed = s->reader_closed;
    out->waiting_readers = s->waiting;
    out->memory = s->memory;
    out->content_length = s->content_length;
    unlock(s);
}

void stream_abort_reason(stream_t *s, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    lock(s);
    size_t n = MIN(strlen(s->reason), cap - 1);
    memcpy(buf, s->reason, n);
    buf[n] = '\0';
    unlock(s);
}

/* ---- fast paths (one lock round each) ---- */

int stream_read_through(stream_t *s, int delim, void *dst, size_t cap, size_t *n)
{
    return stream_read_line(s, delim, cap, NULL, dst, n);
}

int stream_read_line(stream_t *s, int delim, size_t cap, stream_sink_fn sink, void *ctx, size_t *n)
{
    deferred d = {NULL, NULL, NULL};
    char *dst;
    int rc = STREAM_OK;
    size_t got = 0;

    lock(s);
    if (dead_locked(s)) {
        rc = s->aborted ? STREAM_EABORTED : STREAM_ECLOSED;
        goto out;
    }
    /* One step under the lock needs no reader_enter: a reader inside a
     * longer read is told apart, one that enters meanwhile comes after us. */
    if (atomic_load_explicit(&s->reader_inside, memory_order_relaxed)) {
        rc = STREAM_EBUSY;
        goto out;
    }
    struct chunk *c = s->cur;
    if (!c || cap == 0) /* nothing unread */
        goto out;
    /* The common case, kept short (readline pays it per line): the line is
     * inside the chunk holding the read position, whose bytes are all
     * written, so unread >= c->len - off. */
    size_t off = s->cur_off, piece = MIN(c->len - off, cap);
    const char *base = c->data + off;
    const char *p = memchr(base, (unsigned char)delim, piece);
    if (p) {
        got = (size_t)(p - base) + 1;
        if (!(dst = sink ? sink(ctx, got) : ctx)) {
            got = 0;
            goto out;
        }
        memcpy(dst, base, got);
        if ((s->cur_off += got) == c->len) {
            s->cur = c->next;
            s->cur_off = 0;
        }
    } else {
        /* memchr per chunk: the line may straddle them */
        size_t lim = MIN(cap, unread_locked(s)), seen = piece;
        for (c = c->next; seen < lim && !got; c = c->next) {
            size_t more = MIN(c->len, lim - seen);
            if ((p = memchr(c->data, (unsigned char)delim, more)))
                got = seen + (size_t)(p - c->data) + 1;
            seen += more;
        }
        if (!got || !(dst = sink ? sink(ctx, got) : ctx)) {
            got = 0;
            goto out;
        }
        span_copy(&s->cur, &s->cur_off, dst, got);
    }
    s->rpos += got;
    moved_locked(s, &d);
out:
    unlock(s);
    run_deferred(&d);
    *n = got;
    return rc;
}

int stream_read_pinned(stream_t *s, size_t max, const void **ptr, size_t *len,
                       stream_pin_t **pin)
{
    deferred d = {0};
    int rc = STREAM_OK;
    stream_pin_t *p = pin_new(ptr, len);

    if (!(*pin = p))
        return STREAM_ENOMEM;
    lock(s);
    if (dead_locked(s)) {
        rc = s->aborted ? STREAM_EABORTED : STREAM_ECLOSED;
    } else if (s->cur && max > 0) {
        /* The rest of the current chunk, as it lies (all of it is unread):
         * its bytes never change and the pin's reference keeps the chunk
         * after it is dropped. */
        struct chunk *c = s->cur;
        size_t n = MIN(c->len - s->cur_off, max);
        pin_take_locked(s, p, c);
        *ptr = c->data + s->cur_off;
        *len = n;
        if ((s->cur_off += n) == c->len) {
            s->cur = c->next;
            s->cur_off = 0;
        }
        s->rpos += n;
        moved_locked(s, &d);
    }
    return pin_done(s, &d, p, rc, pin);
}
