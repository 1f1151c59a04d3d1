"""The light client's shell: fetching light blocks and proved entries from nodes, keeping what
it trusts on disk, and cross-checking witnesses (the verification is `consensus/light/`)."""
