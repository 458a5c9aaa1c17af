/* stream.h - the byte stream core behind py_buffer / erlang.PyBuffer.
 *
 * Includes neither erl_nif.h nor Python.h: it is unit tested, fuzzed and run
 * under sanitizers alone (test/c/).  One writer side (Erlang) appends chunks;
 * one reader side (Python) consumes them.  All functions are thread safe: a
 * stream has one mutex (s->lock) and one condition variable (s->readable).
 *
 * Lock order: stream lock is a leaf, but for the one lock a ready callback
 * takes (stream_notify_ready).  Never call into Python or Erlang while holding
 * it (but for stream_read_line's sink, which only allocates); the other
 * callbacks (release, drain notify) are invoked with it released.
 *
 * Positions are absolute byte offsets counted from the first byte written.
 */
#ifndef ERLPY_STREAM_H
#define ERLPY_STREAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct stream stream_t;
typedef struct stream_pin stream_pin_t;

enum stream_status {
    STREAM_OK = 0,
    STREAM_ECLOSED,      /* write after close/abort/reader close */
    STREAM_EOVERFLOW,    /* write beyond the declared content length */
    STREAM_ENOMEM,       /* allocation failed; nothing was changed */
    STREAM_EABORTED,     /* the stream was aborted: see stream_abort_reason */
    STREAM_ETIMEDOUT,    /* a wait passed its deadline */
    STREAM_EINTERRUPTED, /* a wait's interrupted() callback returned non-zero */
    STREAM_ESHORT,       /* closed with fewer bytes than the declared length */
    STREAM_EBUSY,        /* another reader is inside a read on this stream */
    STREAM_ESEEK,        /* position not reachable (consumed and freed, or not yet written) */
    STREAM_EINVAL        /* bad argument (negative position, bad options) */
};

typedef struct {
    int64_t content_length;  /* declared total length, -1 = unknown */
    size_t max_unread;       /* 0 = no backpressure; else stream_over_limit() past it */
    size_t low_watermark;    /* drain notification when unread falls to <= this */
    int keep_consumed;       /* 1: consumed bytes kept, seek back works */
    size_t line_limit;       /* 0 = none; used by callers for readline */
} stream_opts_t;

/* Fills defaults: unknown length, no backpressure, keep_consumed = 1. */
void stream_opts_default(stream_opts_t *o);

/* Releases memory the stream borrowed (e.g. an Erlang refc binary). Called once,
 * with no stream lock held, from whichever thread drops the last reference. */
typedef void (*stream_release_fn)(void *ctx);

/* Called (no lock held) once when unread bytes fall to <= low_watermark after a
 * stream_want_drain() returned 1, or when the stream closes/aborts/reader closes. */
typedef void (*stream_notify_fn)(void *ctx);

stream_t *stream_new(const stream_opts_t *opts); /* NULL on ENOMEM/EINVAL */
/* Frees all storage. Caller guarantees no thread is inside any stream call and
 * no pin is outstanding (pins keep the owner alive in the wrappers). */
void stream_free(stream_t *s);
void stream_set_drain_notify(stream_t *s, stream_notify_fn fn, void *ctx);

/* ---- writer side (never blocks) ---- */
int stream_write(stream_t *s, const void *data, size_t len);  /* copies */
/* Borrows [data, data+len) until release(ctx) is called; zero-copy.  On any
 * error release is NOT called (the caller still owns it). */
int stream_write_borrowed(stream_t *s, const void *data, size_t len,
                          stream_release_fn release, void *ctx);
int stream_close(stream_t *s);          /* EOF; STREAM_ECLOSED if already closed/aborted */
/* Breaks the stream: readers (blocked or future) get STREAM_EABORTED.
 * reason is copied (truncated to 63 bytes).  No-op if already aborted.
 * The stored bytes are dropped at once (borrowed ones released; pinned
 * chunks live until unpinned). */
void stream_abort(stream_t *s, const char *reason);
/* Reader side says it is done (Python close()): later writes get ECLOSED,
 * waits get ECLOSED, and the stored bytes are dropped as by stream_abort. */
void stream_reader_close(stream_t *s);
/* 1 after stream_reader_close. */
int stream_reader_closed(stream_t *s);
/* 1 if unread > max_unread (and max_unread != 0). */
int stream_over_limit(stream_t *s);
/* Ask for one drain notification.  Returns 1 if registered (caller should wait),
 * 0 if no wait is needed (already at/below low watermark, or closed/aborted). */
int stream_want_drain(stream_t *s);

/* ---- reader side ---- */
typedef struct {
    int64_t deadline_ms;            /* absolute stream_now_ms() value, -1 = none */
    /* Called before the first sleep and after each stream_wake(), never on a
     * timer: whoever makes it return non-zero calls stream_wake().  May be NULL. */
    int (*interrupted)(void *arg);
    void *arg;
} stream_waiter_t;

int64_t stream_now_ms(void);        /* CLOCK_MONOTONIC in ms */

/* Enter/leave a read.  Only one reader at a time: enter returns STREAM_EBUSY
 * when another thread is inside.  All functions below need the caller inside. */
int stream_reader_enter(stream_t *s);
void stream_reader_leave(stream_t *s);

/* Blocks until unread >= want, or EOF (close), or an error.  *avail receives
 * the unread count.  Returns STREAM_OK (then *avail >= want, or EOF was reached
 * with *avail < want), EABORTED, ECLOSED (stream_reader_close was called),
 * ESHORT (EOF reached at fewer bytes than the declared length and *avail <
 * want), ETIMEDOUT, EINTERRUPTED.  interrupted() is called without the lock.
 * Data written before an abort is not readable after it: EABORTED wins. */
int stream_wait(stream_t *s, size_t want, const stream_waiter_t *w, size_t *avail);

/* Any thread: readers inside stream_wait call their interrupted() again at
 * once (a cancelled call).  Nothing else changes. */
void stream_wake(stream_t *s);

/* Non-blocking: copy up to n unread bytes to dst and advance; returns count. */
size_t stream_read(stream_t *s, void *dst, size_t n);
/* Non-blocking: copy up to n bytes from offset `off` past the read position,
 * without advancing; returns count. */
size_t stream_peek(stream_t *s, void *dst, size_t n, size_t off);
/* Advance the read position by up to n unread bytes; returns count. */
size_t stream_skip(stream_t *s, size_t n);

/* Search unread bytes in [rpos+start, rpos+min(end, unread)) for needle.
 * Returns the index relative to the read position, or -1.  memchr for one
 * byte, memmem otherwise, matching across chunk boundaries.  nlen == 0 returns
 * start if start <= available, else -1. */
int64_t stream_find(stream_t *s, const void *needle, size_t nlen, size_t start, size_t end);

/* Pins the unread bytes as one contiguous read-only region (chunks are merged
 * into one new chunk if needed, a copy made once).  The region stays valid and
 * unchanged until stream_unpin, whatever is written or read meanwhile.  Writes
 * never fail because of pins.  len may be 0 (ptr then non-NULL).  Returns
 * STREAM_OK, EABORTED, ECLOSED (reader closed) or ENOMEM (*pin then NULL). */
int stream_pin_unread(stream_t *s, const void **ptr, size_t *len, stream_pin_t **pin);
void stream_unpin(stream_t *s, stream_pin_t *pin);  /* any thread, lock-free for callers */

/* ---- event-loop readers (buffer_wake.c) ----
 * A reader that must not block registers instead: fn(ctx) is called once,
 * when unread >= want or on close, abort, reader close or stream_wake, and
 * then forgotten.  Unlike the other callbacks fn runs WITH the stream lock
 * held (from inside the write that made data available): it may take only a
 * leaf lock of its own, must not block, and never calls Python or Erlang.
 * Returns 1 if registered, 0 if no wait is needed (fn is then not called),
 * -1 if a registration is already pending. */
typedef void (*stream_ready_fn)(void *ctx);
int stream_notify_ready(stream_t *s, size_t want, stream_ready_fn fn, void *ctx);
/* Withdraws a pending registration: returns its ctx (fn will not be called),
 * or NULL if none is pending (it fired, or there was none). */
void *stream_cancel_ready(stream_t *s);

/* Fast paths for the Python reader, one lock round each, never blocking. */

/* If `delim` is among the first min(cap, unread) unread bytes, copies the
 * bytes up to and including it to dst, advances past them and sets *n to
 * their count; otherwise copies nothing and sets *n to 0 (a line longer than
 * cap, or not complete yet).  Returns STREAM_OK, EABORTED, ECLOSED (reader
 * closed) or EBUSY (another thread is inside a read); *n is then 0.  One
 * step under the stream lock: the caller need not be inside. */
int stream_read_through(stream_t *s, int delim, void *dst, size_t cap, size_t *n);

/* stream_read_through, but the line is copied to the memory sink(ctx, n)
 * returns, asked for once the line's length n is known: the caller makes
 * its object of the right size and the bytes are copied once.  sink runs
 * WITH the stream lock held: it must not block, call into the stream, or
 * wait for any lock but a leaf one (e.g. an allocator's).  NULL from sink:
 * nothing is consumed and *n is 0. */
typedef void *(*stream_sink_fn)(void *ctx, size_t n);
int stream_read_line(stream_t *s, int delim, size_t cap, stream_sink_fn sink, void *ctx, size_t *n);

/* Takes up to max unread bytes as they lie in the chunk holding the read
 * position (no copy, no merge: at most the rest of that chunk) and advances
 * past them.  *ptr, *len describe them; they stay valid and unchanged until
 * stream_unpin(*pin), whatever is written, read or dropped (keep_consumed or
 * not) meanwhile, and writes never fail because of the pin.  *len is 0 when
 * nothing is unread or max is 0.  Returns STREAM_OK, EABORTED, ECLOSED
 * (reader closed) or ENOMEM (*pin then NULL, nothing consumed). */
int stream_read_pinned(stream_t *s, size_t max, const void **ptr, size_t *len,
                       stream_pin_t **pin);

/* ---- positions and state (any thread) ---- */
uint64_t stream_tell(stream_t *s);
/* Sets the read position.  ok if the bytes at pos are still held (keep_consumed,
 * or not yet freed) and pos <= written; after EOF any pos >= written is allowed
 * (reads then return nothing).  Otherwise STREAM_ESEEK. */
int stream_seek(stream_t *s, uint64_t pos);
int stream_seekable(stream_t *s);   /* keep_consumed */
size_t stream_unread(stream_t *s);
/* closed cleanly and nothing unread: not when aborted, nor when closed short
 * of the declared length (that must raise, never look like EOF) */
int stream_at_eof(stream_t *s);

typedef struct {
    uint64_t written;        /* bytes written so far */
    uint64_t read_pos;       /* absolute read position */
    uint64_t unread;         /* written - read_pos, 0 if read_pos > written,
                                and 0 after abort / reader close */
    int eof;                 /* closed by the writer */
    int aborted;
    int reader_closed;
    unsigned waiting_readers;/* threads inside stream_wait */
    size_t memory;           /* bytes of storage held (own + borrowed + pinned) */
    int64_t content_length;
} stream_info_t;
void stream_info(stream_t *s, stream_info_t *out);
/* Copies the abort reason (NUL terminated) into buf; "" if not aborted. */
void stream_abort_reason(stream_t *s, char *buf, size_t cap);

#endif
