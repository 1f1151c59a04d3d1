// Off-the-shelf CAR tools on carechain's archives, both ways.
//   node car.mjs read FILE.car OUT     read a CAR with @ipld/car, check every block against its
//                                      CID, export the file with ipfs-unixfs-exporter into OUT;
//                                      prints {root, blocks}
//   node car.mjs write SIZE FILE.car   import the seeded blob of SIZE bytes (vectors.mjs's) with
//                                      ipfs-unixfs-importer and write it as a CAR with @ipld/car;
//                                      prints {root}
import { createWriteStream } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { CarReader, CarWriter } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { exporter } from 'ipfs-unixfs-exporter'
import { importer } from 'ipfs-unixfs-importer'
import { sha256 } from 'multiformats/hashes/sha2'
import { base, blob } from './vectors.mjs'

const [mode, a, b] = process.argv.slice(2)
if (mode === 'read') {
  const reader = await CarReader.fromBytes(await readFile(a))
  const [root] = await reader.getRoots()
  const store = new MemoryBlockstore()
  let blocks = 0
  for await (const { cid, bytes } of reader.blocks()) {
    const digest = await sha256.digest(bytes)
    if (Buffer.compare(Buffer.from(digest.bytes), Buffer.from(cid.multihash.bytes)) !== 0) {
      throw new Error(`block ${cid} does not match its CID`)
    }
    await store.put(cid, bytes)
    blocks++
  }
  const entry = await exporter(root.toString(), store)
  const parts = []
  for await (const part of entry.content()) parts.push(part)
  await writeFile(b, Buffer.concat(parts))
  console.log(JSON.stringify({ root: root.toString(), blocks }))
} else if (mode === 'write') {
  const written = [] // the blocks as the importer writes them: leaves first, the root last
  const store = { put: async (cid, bytes) => { written.push({ cid, bytes }); return cid } }
  let root
  for await (const entry of importer([{ content: blob(Number(a), base()) }], store, { profile: 'unixfs-v1-2025' })) root = entry.cid
  const { writer, out } = CarWriter.create([root])
  const done = new Promise((resolve, reject) => Readable.from(out).pipe(createWriteStream(b)).on('finish', resolve).on('error', reject))
  for (const block of written) await writer.put(block)
  await writer.close()
  await done
  console.log(JSON.stringify({ root: root.toString() }))
} else {
  throw new Error('usage: node car.mjs read FILE.car OUT | write SIZE FILE.car')
}
