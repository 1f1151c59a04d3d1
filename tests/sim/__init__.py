"""tests/sim."""
