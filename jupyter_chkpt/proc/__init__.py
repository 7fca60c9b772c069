"""OS access: ptrace, registers, /proc, memory I/O, syscall injection.

The bottom layer: it imports nothing from the rest of jupyter_chkpt except
`errors` and `image` (pure data).
"""
