"""The ledger state machine: transaction kinds, policies, vaults, grants (see the ledger issue)."""
