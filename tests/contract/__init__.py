"""tests/contract."""
