"""The node's HTTP API, one module per route family.

- `app`: the aiohttp application (`Api`), its middleware and the list of route families;
  `serve` runs it.
- `base`: what every family shares: `Route` (a route's declaration, from which the OpenAPI
  document is generated), request bodies, typed refusals, records as JSON.
- `status` (status, genesis), `transactions` (submit, batch, check, status, partials,
  co-signatures), `state` (accounts, vaults, records, grants, receipts, emergencies, raw
  state), `blocks`, `blobs`, `events`, `metrics`, `console` (the web console's files) and
  `openapi` (the document).

Route families do not import each other (an import-linter contract holds it); `app` gathers
them.
"""
