"""The helper daemon: one per user, it snapshots and restores that user's kernels.

Layers: `protocol` (the wire format, shared by both ends), `paths` (where the
socket and log live), `client` (what kernels and the server extension use; it
imports no engine code), `server` (the daemon; it drives the engine).
"""
