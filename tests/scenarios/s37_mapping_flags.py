"""Mappings with flags of their own (MADV_DONTFORK, mlock): one loses its flag since
the snapshot, one is unmapped; the restore puts both back with their flags."""

SETUP = """
import ctypes, mmap
def s37_flags(addr):
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            if line[:1].islower() or line[:1].isdigit():
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                inside = start <= addr < end
            elif inside and line.startswith("VmFlags:"):
                return sorted(set(line.split()[1:]) & {"dc", "lo"})
    return None
s37_a = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
s37_b = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
s37_a[:4] = b"keep"; s37_b[:4] = b"lock"
s37_a.madvise(mmap.MADV_DONTFORK)
s37_addr = lambda m: ctypes.addressof(ctypes.c_char.from_buffer(m))
s37_where = (s37_addr(s37_a), s37_addr(s37_b))
ctypes.CDLL(None).mlock(ctypes.c_void_p(s37_where[1]), ctypes.c_size_t(1 << 16))
"""
FINGERPRINT = "(s37_flags(s37_where[0]), s37_flags(s37_where[1]), s37_a[:4], s37_b[:4])"
MUTATE = "s37_a.madvise(mmap.MADV_DOFORK); s37_b.close()"
