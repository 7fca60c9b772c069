/* A shared library for the late dlopen scenario (ctypes.CDLL after the snapshot). */
static int calls; /* gives the library a data segment of its own */

int probe_value(void)
{
    calls++;
    return 0x5eed;
}

int probe_add(int a, int b) { return a + b; }
