"""Where checkpoints are kept: the interface (base), its in-memory twin (memory) and Redis."""
