/**
 * Sync of directory trees by difference (issue 16's first building block). A source describes its
 * tree — each entry's type, mode, owner, size, mtime, link target, hard-link group, xattrs, and for
 * regular files the sha256 of each SYNC_BLOCK_BYTES block — over one duplex byte stream; the
 * destination compares it with what it already holds (the live tree or a previous staging copy),
 * asks only for the blocks it has nowhere, verifies every block, builds a staging copy beside the
 * live tree and renames it in when complete.
 *
 *   // source host                               // destination host
 *   await syncSource(root, duplex, { signal })   await syncDestination(live, duplex, { signal, base })
 *
 * Both return the destination's SyncResult (what was linked, copied locally, received, changed or
 * gone at the source meanwhile). A caller doing rounds keeps one HashCache per side between them.
 * `listTree` lists a tree for comparisons; `memoryDuplexPair` joins both halves in one process.
 * The wire format is in docs/protocols.md ("Tree sync").
 */
export { syncSource, type SyncResult, type SyncSourceOptions } from './source.js'
export { syncDestination, recoverSyncLeftovers, type SyncDestinationOptions } from './destination.js'
export { listTree, listingDifferences, type ListedEntry } from './list.js'
export { HashCache } from './tree.js'
export { memoryDuplexPair } from './duplex.js'
export { attrTools, AttrTools, NO_XATTRS, type XattrAccess, type Xattrs } from './xattrs.js'
export { SYNC_BLOCK_BYTES, type ByteDuplex } from './wire.js'
