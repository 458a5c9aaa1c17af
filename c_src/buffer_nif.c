/* buffer_nif.c - placeholder until the stream lands. */
#include "buffer_nif.h"
#include "convert.h"

int buffer_rt_open(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    (void)env;
    (void)flags;
    return 0;
}

PyObject *erlpy_buffer_to_py(ErlNifEnv *env, ERL_NIF_TERM term, int *is_buffer)
{
    (void)env;
    (void)term;
    *is_buffer = 0;
    return NULL;
}

int erlpy_buffer_from_py(ErlNifEnv *env, PyObject *obj, ERL_NIF_TERM *out)
{
    (void)env;
    (void)obj;
    (void)out;
    return 0;
}

int erlpy_buffer_type_init(PyObject *module)
{
    (void)module;
    return 0;
}
