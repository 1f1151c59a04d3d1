"""The BFT proof-of-authority engine (see the consensus issue)."""
