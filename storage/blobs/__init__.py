"""Off-chain blob storage referenced by content id (see the storage issue)."""
