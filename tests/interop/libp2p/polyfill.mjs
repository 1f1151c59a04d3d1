// Node 20 (Debian's) lacks Promise.withResolvers (Node 22 has it), which js-libp2p 3 uses.
// Imported first, before any libp2p module runs.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
