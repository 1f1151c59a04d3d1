"""The deterministic, sans-IO core: everything every node must compute identically.

Nothing here performs I/O, reads a clock, draws randomness from the OS or runs an event loop;
import-linter enforces that (see pyproject.toml).
"""
