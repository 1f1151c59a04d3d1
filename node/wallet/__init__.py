"""The patient's and institutions' side: what holds keys and makes randomness, used by the
CLI, the patient's agent, the demo and the tests, and by no part of the daemon's consensus
path (an import-linter contract holds it: nothing here imports the daemon).

- `builders`: unsigned transaction drafts of every kind, to be signed by their keys.
- `keystore`: key files encrypted with argon2id and secretbox.
- `client`: the HTTP client of a node's API, and the chain and state read through it.
- `agent_rules`: the rules by which a patient's agent co-signs partials.

(The node itself uses `builders` to report equivocations it saw, and `keystore` to load its
own keys; the agent service and the patient's actions still live in `cli/`.)
"""
