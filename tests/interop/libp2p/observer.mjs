// A carechain observer written on js-libp2p, as another organisation's stack would be.
//   node observer.mjs CONFIG.json
// CONFIG: {address: a validator's multiaddr with /p2p/, seed: this peer's Ed25519 seed (hex),
//          blocks: how many gossiped blocks to wait for, first, last: a height range to
//          fetch over /carechain/sync/1, seconds: the time allowed}
// Prints one JSON line: {peer_id, gossip: [{height, hash}], sync: [{height, hash}],
// message_streams, score, error}: message_streams counts the streams the validator opened on
// its consensus protocol, which it should open to validators only. Every block is checked here as carechain's own nodes check it: the block
// hash is the sha256 of the header's canonical msgpack encoding, and must equal the hash the
// gossip message leads with and the one its commit certificate signs.
import './polyfill.mjs'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { decode, encode } from '@msgpack/msgpack'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const BLOCK_TOPIC = '/carechain/block/1'
const SYNC = '/carechain/sync/1'
const MESSAGES = '/carechain/messages/1'
const BLOCK_ID_BYTES = 32

const config = JSON.parse(await readFile(process.argv[2], 'utf8'))
const sha256 = (bytes) => new Uint8Array(createHash('sha256').update(bytes).digest())
const hex = (bytes) => Buffer.from(bytes).toString('hex')

// carechain's message id: a block message is named by the block hash it leads with, any
// other message by the sha256 of its data (p2p/network.py, message_id)
const msgIdFn = (message) => message.topic === BLOCK_TOPIC
  ? message.data.subarray(0, BLOCK_ID_BYTES)
  : sha256(message.data)

/** A Commit (msgpack [version, block, certificate]) checked: {height, hash}. */
function checkedCommit (bytes) {
  const [, block, certificate] = decode(bytes, { useBigInt64: true })
  const [, header] = block
  const hash = sha256(encode(header, { useBigInt64: true }))
  const [, height, , certified] = certificate
  if (hex(certified) !== hex(hash)) throw new Error(`height ${height}: the certificate signs another block`)
  if (BigInt(header[2]) !== BigInt(height)) throw new Error(`height ${height}: the header says ${header[2]}`)
  return { height: Number(height), hash: hex(hash) }
}

/** carechain's framing: a 4-byte big-endian length and a 1-byte tag, then the payload. */
function frame (tag, payload) {
  const out = new Uint8Array(5 + payload.length)
  new DataView(out.buffer).setUint32(0, payload.length)
  out[4] = tag
  out.set(payload, 5)
  return out
}

async function syncRange (node, peer, first, last) {
  const request = new Uint8Array(16)
  const view = new DataView(request.buffer)
  view.setBigUint64(0, BigInt(first))
  view.setBigUint64(8, BigInt(last))
  const stream = await node.dialProtocol(peer, SYNC)
  stream.send(frame(0, request))
  let buffer = new Uint8Array(0)
  const blocks = []
  for await (const chunk of stream) {
    const piece = chunk.subarray ? chunk.subarray() : chunk
    const joined = new Uint8Array(buffer.length + piece.length)
    joined.set(buffer)
    joined.set(piece, buffer.length)
    buffer = joined
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(0)
      if (buffer.length < 5 + length) break
      const tag = buffer[4]
      const payload = buffer.subarray(5, 5 + length)
      buffer = buffer.subarray(5 + length)
      if (tag === 1) throw new Error(`the validator refused: ${Buffer.from(payload)}`)
      if (length === 0) { // END
        await stream.close()
        return blocks
      }
      blocks.push(checkedCommit(payload))
    }
  }
  throw new Error('the sync stream ended before its END frame')
}

const privateKey = await generateKeyPairFromSeed('Ed25519', Buffer.from(config.seed, 'hex'))
const node = await createLibp2p({
  privateKey,
  addresses: { listen: [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    pubsub: gossipsub({ globalSignaturePolicy: 'StrictNoSign', msgIdFn, emitSelf: false })
  }
})
const result = { peer_id: node.peerId.toString(), gossip: [], sync: [], message_streams: 0, score: null, error: null }
await node.handle(MESSAGES, (stream) => {
  result.message_streams++
  stream.abort(new Error('an observer takes no consensus messages'))
})
const timer = setTimeout(() => { result.error = 'timed out'; done() }, config.seconds * 1000)
let finished = false

async function done () {
  if (finished) return
  finished = true
  clearTimeout(timer)
  const validator = node.getConnections()[0]?.remotePeer
  if (validator != null) result.score = node.services.pubsub.getScore(validator.toString())
  await node.stop()
  console.log(JSON.stringify(result))
}

node.services.pubsub.addEventListener('message', (event) => {
  const message = event.detail
  if (message.topic !== BLOCK_TOPIC || finished) return
  try {
    const block = checkedCommit(message.data.subarray(BLOCK_ID_BYTES))
    if (hex(message.data.subarray(0, BLOCK_ID_BYTES)) !== block.hash) throw new Error(`height ${block.height}: the message names another block`)
    result.gossip.push(block)
  } catch (error) {
    result.error = `gossip: ${error.message}`
    done()
    return
  }
  if (result.gossip.length >= config.blocks) done()
})
node.services.pubsub.subscribe(BLOCK_TOPIC)
try {
  const address = multiaddr(config.address)
  await node.dial(address)
  result.sync = await syncRange(node, address, config.first, config.last)
} catch (error) {
  result.error = `${error.name}: ${error.message}`
  await done()
}
