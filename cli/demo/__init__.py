"""`carechain demo`: the paper's scenario on a local 4-validator network, narrated.

- `runner`: the command, the network it starts and the cast (hospitals, patients, a clinic).
- `steps`: the narrated steps, from a patient's registration to an auditor's replay.
- `burst`: the overload step (a clinic's burst of registrations over p2p) and the commit
  watch the overload fault scenarios share.
- `ledger`: the demo's view of the ledger through a node's API (reads, readings, the access
  timeline, the auditor's replay).
"""
