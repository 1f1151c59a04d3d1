"""tests/security."""
