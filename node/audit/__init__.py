"""The auditor's side: trust nothing a node says, check everything from genesis.

- `replay`: the replay of a chain (from a store, an archive, a node's API or an observer's
  sync) that verifies every certificate, link, signature, policy and state root.
- `archive`: a chain exported to one file and read back, for an auditor offline.
- `observer`: a read-only peer that syncs a chain from a hospital that admits it.
- `access_report`: who read a patient's data, when and under which grant, from the chain,
  and that timeline as a FHIR bundle.

Nothing here imports the daemon (an import-linter contract holds it): an auditor runs this
code with no node of its own.
"""
