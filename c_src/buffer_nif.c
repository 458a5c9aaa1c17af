/* buffer_nif.c - the Erlang side of a py_buffer: the resource type and the
 * new/write/close/abort/info NIFs.  Every NIF here does bounded work: writes
 * of a few KiB or more borrow the refc binary instead of copying it, and
 * py_buffer.erl turns iolists into one binary (a yielding BIF) first. */
#include <string.h>

#include "buffer_nif.h"

/* Binaries at least this big are kept by reference, not copied. */
#define BORROW_MIN 2048

/* The most buffer_take copies in one call (bounded NIF work). */
#define TAKE_MAX (256 * 1024)

static void notify_once(ErlNifEnv *caller_env, buffer_t *buf, notifier_t *n, const char *tag);

/* Bytes arrived or the stream ended: an Erlang reader waiting is told. */
static void notify_readable(ErlNifEnv *caller_env, buffer_t *buf)
{
    notify_once(caller_env, buf, &buf->readable, "py_buffer_readable");
}

static void buffer_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    buffer_t *buf = obj;
    if (buf->stream)
        stream_free(buf->stream);
    if (buf->term_env)
        enif_free_env(buf->term_env);
    pthread_mutex_destroy(&buf->lock);
}

/* The creating process died: if it had not closed the stream, readers must
 * not wait for ever. */
static void buffer_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    (void)env;
    (void)pid;
    (void)mon;
    buffer_t *buf = obj;
    stream_info_t info;
    stream_info(buf->stream, &info);
    if (!info.eof)
        stream_abort(buf->stream, "writer_down");
    notify_readable(env, buf);
}

int buffer_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {.dtor = buffer_dtor, .down = buffer_down};
    ERLPY_BUFFER_RT = enif_open_resource_type_x(env, "erlpy_buffer", &init, flags, NULL);
    return ERLPY_BUFFER_RT ? 0 : -1;
}

static buffer_t *get_buffer(ErlNifEnv *env, ERL_NIF_TERM term)
{
    buffer_t *buf;
    return enif_get_resource(env, term, ERLPY_BUFFER_RT, (void **)&buf) ? buf : NULL;
}

/* Arms n for the calling process. */
static void arm(ErlNifEnv *env, buffer_t *buf, notifier_t *n, ErlNifUInt64 token)
{
    pthread_mutex_lock(&buf->lock);
    enif_self(env, &n->pid);
    n->token = token;
    n->armed = 1;
    pthread_mutex_unlock(&buf->lock);
}

/* Disarms n; returns whether it was armed, with a copy of it in *out. */
static int disarm(buffer_t *buf, notifier_t *n, notifier_t *out)
{
    pthread_mutex_lock(&buf->lock);
    *out = *n;
    n->armed = 0;
    pthread_mutex_unlock(&buf->lock);
    return out->armed;
}

/* Sends {Tag, Token} once, if n is armed.  caller_env: the NIF's or
 * callback's env, NULL on erlpy's own threads. */
static void notify_once(ErlNifEnv *caller_env, buffer_t *buf, notifier_t *n, const char *tag)
{
    notifier_t to;
    if (!disarm(buf, n, &to))
        return;
    ErlNifEnv *msg_env = enif_alloc_env();
    if (!msg_env)
        return; /* the waiter's own timeout is its way out */
    enif_send(caller_env, &to.pid, msg_env,
              enif_make_tuple2(msg_env, enif_make_atom(msg_env, tag), enif_make_uint64(msg_env, to.token)));
    enif_free_env(msg_env);
}

/* Called by the stream (no stream lock held) when a waiting writer may go on. */
static void notify_drained(void *ctx)
{
    buffer_t *buf = ctx;
    notify_once(NULL, buf, &buf->drain, "py_buffer_drained");
}

void buffer_reading(buffer_t *buf)
{
    notify_once(NULL, buf, &buf->reading, "py_buffer_reading");
}

static int get_size_opt(ErlNifEnv *env, ERL_NIF_TERM opts, ERL_NIF_TERM key, size_t *out)
{
    ERL_NIF_TERM v;
    ErlNifUInt64 n;
    if (!enif_get_map_value(env, opts, key, &v))
        return 1;
    if (enif_is_identical(v, ATOMS.undefined) || enif_is_identical(v, ATOMS.none))
        return 1;
    if (!enif_get_uint64(env, v, &n))
        return 0;
    *out = (size_t)n;
    return 1;
}

/* buffer_new(#{content_length, max_unread, low_watermark, keep_consumed,
 *              line_limit, read_timeout}) -> {ok, Buf} | {error, enomem} */
ERL_NIF_TERM buffer_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ERL_NIF_TERM opts = argv[0], v;
    if (!enif_is_map(env, opts))
        return enif_make_badarg(env);
    stream_opts_t so;
    stream_opts_default(&so);
    size_t content_length = SIZE_MAX, read_timeout = SIZE_MAX, write_timeout = SIZE_MAX;
    if (!get_size_opt(env, opts, ATOMS.content_length, &content_length) ||
        !get_size_opt(env, opts, ATOMS.max_unread, &so.max_unread) ||
        !get_size_opt(env, opts, ATOMS.low_watermark, &so.low_watermark) ||
        !get_size_opt(env, opts, ATOMS.line_limit, &so.line_limit) ||
        !get_size_opt(env, opts, ATOMS.read_timeout, &read_timeout) ||
        !get_size_opt(env, opts, enif_make_atom(env, "write_timeout"), &write_timeout) ||
        (content_length != SIZE_MAX && content_length > (size_t)INT64_MAX))
        return enif_make_badarg(env);
    if (content_length != SIZE_MAX)
        so.content_length = (int64_t)content_length;
    if (enif_get_map_value(env, opts, ATOMS.keep_consumed, &v)) {
        if (!enif_is_identical(v, ATOMS.true_) && !enif_is_identical(v, ATOMS.false_))
            return enif_make_badarg(env);
        so.keep_consumed = enif_is_identical(v, ATOMS.true_);
    }
    if (so.low_watermark > so.max_unread)
        return enif_make_badarg(env);

    buffer_t *buf = enif_alloc_resource(ERLPY_BUFFER_RT, sizeof *buf);
    if (!buf)
        return erlpy_make_error(env, ATOMS.enomem);
    memset(buf, 0, sizeof *buf);
    pthread_mutex_init(&buf->lock, NULL);
    buf->read_timeout_ms = read_timeout == SIZE_MAX ? -1 : (int64_t)read_timeout;
    buf->line_limit = so.line_limit;
    buf->wait_cap = so.max_unread ? so.low_watermark + 1 : SIZE_MAX;
    buf->term_env = enif_alloc_env();
    if (!buf->term_env) {
        enif_release_resource(buf);
        return erlpy_make_error(env, ATOMS.enomem);
    }
    buf->wait_reply = write_timeout == SIZE_MAX
                          ? ATOMS.wait
                          : enif_make_tuple2(buf->term_env, ATOMS.wait,
                                             enif_make_uint64(buf->term_env, write_timeout));
    buf->stream = stream_new(&so);
    if (!buf->stream) {
        enif_release_resource(buf);
        return erlpy_make_error(env, ATOMS.enomem);
    }
    stream_set_drain_notify(buf->stream, notify_drained, buf);
    ErlNifPid self;
    if (enif_self(env, &self))
        enif_monitor_process(env, buf, &self, &buf->monitor);
    ERL_NIF_TERM term = enif_make_resource(env, buf);
    enif_release_resource(buf);
    return enif_make_tuple2(env, ATOMS.ok, term);
}

static ERL_NIF_TERM status_error(ErlNifEnv *env, int status)
{
    switch (status) {
    case STREAM_EOVERFLOW:
        return erlpy_make_error(env, ATOMS.overflow);
    case STREAM_ENOMEM:
        return erlpy_make_error(env, ATOMS.enomem);
    default:
        return erlpy_make_error(env, ATOMS.closed);
    }
}

static void release_env(void *ctx)
{
    enif_free_env(ctx);
}

/* Borrows a big binary: a private env keeps the refc binary alive. */
static int write_borrowed(stream_t *s, ERL_NIF_TERM bin_term)
{
    ErlNifEnv *holder = enif_alloc_env();
    if (!holder)
        return STREAM_ENOMEM;
    ErlNifBinary bin;
    ERL_NIF_TERM copy = enif_make_copy(holder, bin_term);
    enif_inspect_binary(holder, copy, &bin);
    int status = stream_write_borrowed(s, bin.data, bin.size, release_env, holder);
    if (status != STREAM_OK)
        enif_free_env(holder);
    return status;
}

/* buffer_write(Buf, Binary) -> ok | wait | {wait, Ms} | {error, closed | overflow | enomem}.
 * wait: the data was taken, but unread bytes exceed max_unread; Ms is the
 * buffer's write_timeout. */
ERL_NIF_TERM buffer_write_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    ErlNifBinary bin;
    if (!buf || !enif_inspect_binary(env, argv[1], &bin))
        return enif_make_badarg(env);
    int status = bin.size >= BORROW_MIN ? write_borrowed(buf->stream, argv[1])
                                        : stream_write(buf->stream, bin.data, bin.size);
    if (status != STREAM_OK)
        return status_error(env, status);
    notify_readable(env, buf);
    /* A write costs about a microsecond: charge it, so a writing loop yields
     * like one doing other work. */
    (void)enif_consume_timeslice(env, 1);
    return stream_over_limit(buf->stream) ? enif_make_copy(env, buf->wait_reply) : ATOMS.ok;
}

/* buffer_want_drain(Buf, Token) -> ok | wait.  `wait`: {py_buffer_drained,
 * Token} will be sent to the caller when the reader has caught up, or when
 * the stream ends. */
ERL_NIF_TERM buffer_want_drain_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    ErlNifUInt64 token;
    if (!buf || !enif_get_uint64(env, argv[1], &token))
        return enif_make_badarg(env);
    arm(env, buf, &buf->drain, token);
    if (stream_want_drain(buf->stream))
        return ATOMS.wait;
    notifier_t was;
    disarm(buf, &buf->drain, &was);
    return ATOMS.ok;
}

/* buffer_cancel_drain(Buf) -> ok | sent.  `sent`: the message is on its way. */
ERL_NIF_TERM buffer_cancel_drain_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    if (!buf)
        return enif_make_badarg(env);
    notifier_t was;
    return disarm(buf, &buf->drain, &was) ? ATOMS.ok : enif_make_atom(env, "sent");
}

/* buffer_notify_read(Buf, Token) -> ok.  The caller gets {py_buffer_reading,
 * Token} once, when a reader first waits for data not written yet. */
ERL_NIF_TERM buffer_notify_read_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    ErlNifUInt64 token;
    if (!buf || !enif_get_uint64(env, argv[1], &token))
        return enif_make_badarg(env);
    arm(env, buf, &buf->reading, token);
    return ATOMS.ok;
}

/* buffer_close(Buf) -> ok | {error, closed} */
ERL_NIF_TERM buffer_close_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    if (!buf)
        return enif_make_badarg(env);
    int status = stream_close(buf->stream);
    notify_readable(env, buf);
    return status == STREAM_OK ? ATOMS.ok : status_error(env, status);
}

/* buffer_abort(Buf, Reason :: atom()) -> ok */
ERL_NIF_TERM buffer_abort_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    char reason[64];
    if (!buf || enif_get_atom(env, argv[1], reason, sizeof reason, ERL_NIF_LATIN1) <= 0)
        return enif_make_badarg(env);
    stream_abort(buf->stream, reason);
    notify_readable(env, buf);
    return ATOMS.ok;
}

/* What buffer_take answers when nothing is unread: eof (closed; the
 * caller's own reader finds out whether it was closed short), the end of
 * the stream as an error, or 0 while it is open. */
static ERL_NIF_TERM take_end(ErlNifEnv *env, buffer_t *buf)
{
    stream_info_t i;
    stream_info(buf->stream, &i);
    if (i.aborted) {
        char reason[64];
        stream_abort_reason(buf->stream, reason, sizeof reason);
        return erlpy_make_error(env, enif_make_tuple2(env, ATOMS.aborted, enif_make_atom(env, reason)));
    }
    if (i.reader_closed)
        return erlpy_make_error(env, ATOMS.closed);
    return i.eof ? ATOMS.eof : 0;
}

/* Up to max unread bytes, copied, as {ok, Binary}; with nothing unread,
 * what take_end says.  The caller is inside a read. */
static ERL_NIF_TERM take_now(ErlNifEnv *env, buffer_t *buf, size_t max)
{
    size_t n = stream_unread(buf->stream);
    if (n == 0)
        return take_end(env, buf);
    if (n > max)
        n = max;
    ERL_NIF_TERM bin;
    unsigned char *dst = enif_make_new_binary(env, n, &bin);
    size_t got = stream_read(buf->stream, dst, n);
    return enif_make_tuple2(env, ATOMS.ok, enif_make_sub_binary(env, bin, 0, got));
}

/* Another live Erlang process waits to read this buffer: readers take
 * turns only by being one (two relays of one buffer would split it). */
static int armed_by_another(ErlNifEnv *env, buffer_t *buf)
{
    ErlNifPid self, armed;
    enif_self(env, &self);
    pthread_mutex_lock(&buf->lock);
    int is_armed = buf->readable.armed;
    armed = buf->readable.pid;
    pthread_mutex_unlock(&buf->lock);
    return is_armed && enif_compare_pids(&armed, &self) != 0 && enif_is_process_alive(env, &armed);
}

/* buffer_take(Buf, Max, Token) -> {ok, Binary} | eof | wait
 *                                | {error, {aborted, Reason} | closed | busy}
 * An Erlang process reading the buffer (py_nodes_buffer's relay to a worker
 * node): takes up to Max unread bytes (at most TAKE_MAX), copied.  With
 * nothing unread and the stream open, arms {py_buffer_readable, Token} for
 * the caller, sent once bytes arrive or the stream ends, and answers wait.
 * The message may come after all (a write that raced the check): a caller
 * takes again on it and may get wait again.  busy: a Python reader is
 * inside a read, or another Erlang process waits on the buffer. */
ERL_NIF_TERM buffer_take_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    ErlNifUInt64 max, token;
    if (!buf || !enif_get_uint64(env, argv[1], &max) || max == 0 || !enif_get_uint64(env, argv[2], &token))
        return enif_make_badarg(env);
    if (max > TAKE_MAX)
        max = TAKE_MAX;
    if (armed_by_another(env, buf) || stream_reader_enter(buf->stream) != STREAM_OK)
        return erlpy_make_error(env, ATOMS.busy);
    ERL_NIF_TERM result = take_now(env, buf, (size_t)max);
    if (!result) {
        /* Armed first, then looked again: a write in between is seen
         * here or sends the message. */
        arm(env, buf, &buf->readable, token);
        result = take_now(env, buf, (size_t)max);
        if (result) {
            notifier_t was;
            disarm(buf, &buf->readable, &was);
        } else {
            result = ATOMS.wait;
        }
    }
    stream_reader_leave(buf->stream);
    (void)enif_consume_timeslice(env, 1);
    return result;
}

/* buffer_info(Buf) -> #{written, read_pos, unread, eof, aborted, ...} */
ERL_NIF_TERM buffer_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    buffer_t *buf = get_buffer(env, argv[0]);
    if (!buf)
        return enif_make_badarg(env);
    stream_info_t i;
    stream_info(buf->stream, &i);
    ERL_NIF_TERM keys[] = {ATOMS.written, ATOMS.read_pos, ATOMS.unread, ATOMS.eof, ATOMS.aborted,
                           ATOMS.reader_closed, ATOMS.waiting_readers, ATOMS.memory,
                           ATOMS.content_length, ATOMS.seekable};
    ERL_NIF_TERM values[] = {
        enif_make_uint64(env, i.written),
        enif_make_uint64(env, i.read_pos),
        enif_make_uint64(env, i.unread),
        i.eof ? ATOMS.true_ : ATOMS.false_,
        i.aborted ? ATOMS.true_ : ATOMS.false_,
        i.reader_closed ? ATOMS.true_ : ATOMS.false_,
        enif_make_uint(env, i.waiting_readers),
        enif_make_uint64(env, i.memory),
        i.content_length < 0 ? ATOMS.undefined : enif_make_int64(env, i.content_length),
        stream_seekable(buf->stream) ? ATOMS.true_ : ATOMS.false_,
    };
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, sizeof keys / sizeof keys[0], &map);
    return map;
}
