/**
 * The orders this agent accepted, on disk until they expire (`<state-dir>/orders`, one small file
 * per order, written whole before it counts: move/journal.ts). An agent that restarts within an
 * order's minute still refuses its replay: the verifier is built with what this file held.
 *
 *   const { memory, spent } = await openSpentOrders(join(stateDir, 'orders'), log)
 *   const orders = new OrderVerifier(trust, Date.now, memory, spent)
 */
import { Journal } from '../move/journal.js'
import { obj, str } from '../../protocol/parse.js'
import type { SpentOrder, SpentOrderMemory } from '../../protocol/orders.js'
import type { Logger } from '../log.js'

const KEY = /^(move|protect)-[0-9a-f]{16}$/

function parse (value: unknown, key: string): SpentOrder {
  const o = obj(value, 'spent order')
  const kind = o.kind === 'move' ? 'move' : o.kind === 'protect' ? 'protect' : undefined
  const id = str(o.id, 'spent order id', 16)
  if (kind === undefined || `${kind}-${id}` !== key) throw new TypeError(`spent order ${key} does not match its file`)
  if (typeof o.expiresAt !== 'number' || !Number.isFinite(o.expiresAt)) throw new TypeError(`spent order ${key} has no expiry`)
  return { kind, id, expiresAt: o.expiresAt }
}

/**
 * Opens the directory, removes the orders that expired while the agent was down, and returns the
 * memory for the verifier with the orders still to refuse. A file that cannot be read is logged and
 * left for the operator; it refuses nothing (an order lives a minute: its loss costs at most that).
 */
export async function openSpentOrders (dir: string, log: Logger, now = Date.now()): Promise<{ memory: SpentOrderMemory, spent: SpentOrder[] }> {
  const journal = await Journal.open<SpentOrder>(dir, { key: o => `${o.kind}-${o.id}`, keyPattern: KEY, parse })
  const { records, unreadable } = await journal.list()
  for (const u of unreadable) log.warn('unreadable record of a spent order, left in place', u)
  const spent: SpentOrder[] = []
  for (const o of records) {
    if (o.expiresAt > now) spent.push(o)
    else await journal.remove(`${o.kind}-${o.id}`)
  }
  return {
    memory: {
      remember: async o => { await journal.put(o) },
      forget: async o => { await journal.remove(`${o.kind}-${o.id}`) }
    },
    spent
  }
}
