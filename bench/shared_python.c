/* A python3 that runs Debian's shared libpython3.11.so, the library erlpy
 * embeds (and uWSGI too), where /usr/bin/python3 has libpython linked in
 * statically and built for speed (PGO, no -fPIC).  bench/bench_nodes.erl
 * runs its port baseline with both, to tell what the interpreter's build
 * costs apart from what the transport costs. */
#include <Python.h>

int main(int argc, char **argv)
{
    return Py_BytesMain(argc, argv);
}
