/* buffer_nif.h - a py_buffer: the resource shared by Erlang (buffer_nif.c)
 * and Python (buffer_type.c), wrapping one stream. */
#ifndef ERLPY_BUFFER_NIF_H
#define ERLPY_BUFFER_NIF_H

#include <pthread.h>

#include "erlpy.h"
#include "stream.h"

/* A one-shot message to a process: {Tag, Token}. */
typedef struct {
    int armed;
    ErlNifPid pid;
    ErlNifUInt64 token;
} notifier_t;

typedef struct {
    stream_t *stream;         /* set once in new(); freed by the destructor */
    int64_t read_timeout_ms;  /* per blocking read, -1 = none; set once */
    size_t line_limit;        /* readline's bound, 0 = none; set once */
    size_t wait_cap;          /* most a reader may wait for at once; set once.  With
                               * max_unread set, a held-back writer resumes only
                               * when unread <= low_watermark, so a reader waiting
                               * for more than low_watermark + 1 bytes could wait
                               * for ever: it must consume first. */
    ERL_NIF_TERM wait_reply;  /* write's answer under backpressure: wait or
                               * {wait, WriteTimeoutMs}; set once, an immediate
                               * or built in a private env */
    ErlNifEnv *term_env;      /* holds wait_reply; set once */
    ErlNifMonitor monitor;    /* on the creating process; set once */
    pthread_mutex_t lock;     /* guards drain, reading and readable; a leaf lock */
    notifier_t drain;         /* a writer waits for {py_buffer_drained, Token} */
    notifier_t reading;       /* someone wants {py_buffer_reading, Token} */
    notifier_t readable;      /* an Erlang reader (buffer_take) waits for
                               * {py_buffer_readable, Token} */
} buffer_t;

/* A reader is about to wait for data: sends {py_buffer_reading, Token} once
 * if buffer_notify_read armed it.  Any thread, no lock held. */
void buffer_reading(buffer_t *buf);

/* erlang.PyBuffer internals for buffer_wake.c (GIL held): the buffer behind
 * obj (NULL with TypeError if obj is no PyBuffer), and the exception for a
 * failed stream status (returns NULL). */
buffer_t *erlpy_pybuffer_get(PyObject *obj);
PyObject *erlpy_pybuffer_raise(PyObject *obj, int status);

/* buffer_wake.c: PyBuffer.async_reader and the erlang._Waker type that wakes
 * an event loop through an eventfd (GIL held). */
PyObject *erlpy_pybuffer_async_reader(PyObject *self, PyObject *args, PyObject *kw);
int erlpy_waker_type_init(PyObject *module);

/* For asgi_inbox.c, which wakes the same loop through the same eventfd: a
 * counted reference to the waker behind an erlang._Waker (NULL with
 * TypeError otherwise; GIL held), its eventfd, and dropping the reference
 * (any thread, no GIL). */
typedef struct waker waker_t;
waker_t *erlpy_waker_acquire(PyObject *obj);
int erlpy_waker_fd(const waker_t *w);
void erlpy_waker_release(waker_t *w);

int buffer_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);

ERL_NIF_TERM buffer_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_write_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_close_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_abort_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_info_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_want_drain_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_cancel_drain_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_notify_read_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM buffer_take_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define BUFFER_NIFS                                           \
    {"buffer_new", 1, buffer_new_nif, 0},                     \
    {"buffer_write", 2, buffer_write_nif, 0},                 \
    {"buffer_close", 1, buffer_close_nif, 0},                 \
    {"buffer_abort", 2, buffer_abort_nif, 0},                 \
    {"buffer_info", 1, buffer_info_nif, 0},                   \
    {"buffer_want_drain", 2, buffer_want_drain_nif, 0},       \
    {"buffer_cancel_drain", 1, buffer_cancel_drain_nif, 0},   \
    {"buffer_notify_read", 2, buffer_notify_read_nif, 0},     \
    {"buffer_take", 3, buffer_take_nif, 0},

#endif
