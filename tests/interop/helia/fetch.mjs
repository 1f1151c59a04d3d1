// A real IPFS client fetching a record's blob from a carechain node's trustless gateway:
// @helia/verified-fetch on a Helia node whose only source of blocks is that gateway
// (no delegated routing, no libp2p dialling), adding the signed blob request header to each
// request, as an application would its credentials. verified-fetch asks for each block
// (application/vnd.ipld.raw), checks it against its CID, walks the UnixFS tree and returns
// the file's bytes.
//   node fetch.mjs GATEWAY CID REQUEST_HEX OUT SECONDS   (REQUEST_HEX "-" sends no header)
// prints {status, bytes} (bytes written to OUT when status is 200). A gateway that refuses
// every block leaves Helia looking for another provider until SECONDS have passed.
import { writeFile } from 'node:fs/promises'
import { fallbackRouter } from '@helia/fallback-router'
import { withHTTP } from '@helia/http'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'

const [gateway, cid, request, out, seconds] = process.argv.slice(2)
const helia = createHeliaLight()
// The gateway as the one provider of every CID. A fallback-only routing hangs Helia's
// findProviders (it waits for a default router to finish), so it is offered as a default one.
const gateways = fallbackRouter({ gateways: [gateway] })
helia.addRouter({ name: 'carechain-gateway', findProviders: (cid, options) => gateways.findProviders(cid, options) })
await withHTTP(helia, {
  delegatedRouters: [],
  recursiveGateways: [],
  allowInsecure: true, // the node's API on loopback in this test: plain HTTP
  allowLocal: true,
  transformRequestInit: (init) => {
    if (request !== '-') init.headers = { ...init.headers, 'X-Carechain-Blob-Request': request }
    return init
  }
}).start()
const verifiedFetch = await createVerifiedFetch(helia)
let status = 0
let bytes = 0
// Helia's search for another provider holds no timer, and AbortSignal.timeout's does not
// keep node running: without this the process would end mid-fetch (exit code 13).
const alive = setInterval(() => {}, 1000)
try {
  const response = await verifiedFetch(`ipfs://${cid}`, { signal: AbortSignal.timeout(Number(seconds) * 1000) })
  status = response.status
  if (status === 200) {
    const body = Buffer.from(await response.arrayBuffer())
    await writeFile(out, body)
    bytes = body.length
  }
} catch (error) {
  status = error.name === 'TimeoutError' || error.name === 'AbortError' ? 504 : 500
  console.error(String(error))
} finally {
  clearInterval(alive)
  await verifiedFetch.stop()
  await helia.stop()
}
console.log(JSON.stringify({ status, bytes }))
