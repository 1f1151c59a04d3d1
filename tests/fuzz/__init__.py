"""tests/fuzz."""
