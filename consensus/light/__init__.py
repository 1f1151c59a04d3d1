"""The light client's pure verification: headers, certificates, validator-set changes and state
proofs, checked without the chain's state (the shell that fetches lives in `node/light/`)."""
