// Known-answer content ids from the reference IPFS importer (ipfs-unixfs-importer, the one
// behind Helia) under profile unixfs-v1-2025, for the seeded blobs `tests/unixfs_blobs.py`
// makes the same way. `node vectors.mjs` prints the JSON that tests/vectors/unixfs.json holds;
// `node vectors.mjs SIZE...` prints the ids of those sizes only (the live test).
import { importer } from 'ipfs-unixfs-importer'
import { MemoryBlockstore } from 'blockstore-core/memory'

const CHUNK = 1 << 20
export const SIZES = [0, 1, 1000, 262144, 262145, CHUNK, CHUNK + 1, 5 * CHUNK, 1024 * CHUNK + 1]

// 1 MiB of an LCG's bytes (x = x * 1103515245 + 12345 mod 2^31, byte = x >> 16 & 255, x0 = 2026)
export function base () {
  const bytes = new Uint8Array(CHUNK)
  let x = 2026
  for (let i = 0; i < CHUNK; i++) {
    x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff
    bytes[i] = (x >>> 16) & 0xff
  }
  return bytes
}

// chunk k of a blob: the base rotated left by k * 7919 mod 1 MiB; a blob is their concatenation
export async function * blob (size, seed) {
  for (let k = 0, left = size; left > 0; k++) {
    const r = (k * 7919) % CHUNK
    const chunk = new Uint8Array(CHUNK)
    chunk.set(seed.subarray(r), 0)
    chunk.set(seed.subarray(0, r), CHUNK - r)
    const take = Math.min(left, CHUNK)
    yield chunk.subarray(0, take)
    left -= take
  }
}

// a blockstore that keeps nothing: the ids are all this needs, and 1 GiB stays out of memory
class Discarding extends MemoryBlockstore {
  async put (cid) { return cid }
}

async function idOf (size, seed) {
  const entries = importer([{ content: blob(size, seed) }], new Discarding(), { profile: 'unixfs-v1-2025' })
  let last
  for await (const entry of entries) last = entry
  return last.cid.toString()
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seed = base()
  const sizes = process.argv.length > 2 ? process.argv.slice(2).map(Number) : SIZES
  const ids = {}
  for (const size of sizes) ids[size] = await idOf(size, seed)
  console.log(JSON.stringify({ importer: 'ipfs-unixfs-importer@17.1.1', profile: 'unixfs-v1-2025', ids }, null, 2))
}

