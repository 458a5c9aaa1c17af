/* unpreload.c - preloaded into beam.smp after libasan by scripts/test-asan.
 *
 * LD_PRELOAD brought libasan into the emulator; it must not go further: the
 * VM's ports (os:cmd, erl_child_setup) copy the environment the VM started
 * with, and the embedded Python's os.environ (subprocess) reads the C one
 * when the NIF starts it.  Removing the variable before main() keeps every
 * child free of it, while this process keeps the runtime it already has. */
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void)
{
    unsetenv("LD_PRELOAD");
}
