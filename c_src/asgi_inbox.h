/* asgi_inbox.h - how Erlang hands work to an event loop that runs for ever
 * in a worker thread (the ASGI runner, src/py_asgi.erl): a queue of terms
 * that any process fills without the GIL and the loop drains when the eventfd
 * it watches says so (the same eventfd that wakes its buffer readers). */
#ifndef ERLPY_ASGI_INBOX_H
#define ERLPY_ASGI_INBOX_H

#include "erlpy.h"

int inbox_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);
/* Registers erlang._Inbox (GIL held). */
int erlpy_inbox_type_init(PyObject *module);

ERL_NIF_TERM inbox_new_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM inbox_push_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define INBOX_NIFS                             \
    {"inbox_new", 0, inbox_new_nif, 0},        \
    {"inbox_push", 3, inbox_push_nif, 0},

#endif
