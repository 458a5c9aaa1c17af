/* buffer_nif.h - the Erlang side of py_buffer. */
#ifndef ERLPY_BUFFER_NIF_H
#define ERLPY_BUFFER_NIF_H

#include "erlpy.h"

int buffer_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags);

#define BUFFER_NIFS

#endif
