/* convert.h - Erlang term <-> Python object conversion.  Callers hold the GIL. */
#ifndef ERLPY_CONVERT_H
#define ERLPY_CONVERT_H

#include "erlpy.h"

/* Deeper structures than this are refused both ways (a clean error, not a
 * C stack overflow). */
#define ERLPY_MAX_DEPTH 10000

typedef enum { CONV_OK = 0, CONV_PYERR, CONV_TOO_DEEP } conv_status_t;

/* New reference, or NULL with a Python exception set (RecursionError from
 * erlpy_nesting_error() when too deep). */
PyObject *erlpy_to_py(ErlNifEnv *env, ERL_NIF_TERM term);
/* Builds *out in env.  On failure a Python exception is set. */
conv_status_t erlpy_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out);

/* Converts a map with atom/binary keys into a dict of str keys (kwargs). */
PyObject *erlpy_kwargs_to_py(ErlNifEnv *env, ERL_NIF_TERM map);

/* The opaque handle for a Python object; takes a new reference. */
ERL_NIF_TERM erlpy_make_object_handle(ErlNifEnv *env, PyObject *obj);

/* {error, {python, Type, Message, Traceback}} for the current exception
 * (cleared), or {error, too_deep}. */
ERL_NIF_TERM erlpy_error_from_exception(ErlNifEnv *env);

/* Hooks the buffer module provides (buffer_nif.c / buffer_type.c). */
PyObject *erlpy_buffer_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int *is_buffer);
int erlpy_buffer_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out);

#endif
