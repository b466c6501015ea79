"""Moving requests between processes: shared-memory arenas, descriptor frames, ZeroMQ channels."""
