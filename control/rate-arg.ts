/**
 * The value of `goto move --max-rate RATE`: a number and a unit, as an operator writes a link's
 * speed, turned into whole bytes per second (what the move order carries, protocol/move-messages.ts).
 *
 *   parseRate('50Mbit')    // 6_250_000   (bits, SI: 10^6)
 *   parseRate('10MiB/s')   // 10_485_760  (bytes, binary: 2^20)
 *   parseRate('2.5MB/s')   // 2_500_000   (bytes, SI)
 *
 * Bit units: bit, kbit, Mbit, Gbit (also written kbps, Mbps, Gbps); byte units: B, kB, MB, GB
 * (SI) and KiB, MiB, GiB (binary); each with an optional `/s`. Bit units are read in any case, as
 * tc writes them ("mbit"); byte units only as written above, and "Mb"/"mb" is refused: it is read
 * both ways in the wild. Anything else is a ConfigError naming the option.
 */
import { ConfigError } from '../protocol/errors.js'

const OPTION = '--max-rate'

/** A cap below this (bytes/s) would make a layer of a few MiB take minutes: surely a unit mistake. */
export const MIN_MAX_RATE_BYTES_PER_SECOND = 12_500

const BIT_UNITS: Record<string, number> = { bit: 1 / 8, kbit: 1e3 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8, bps: 1 / 8, kbps: 1e3 / 8, mbps: 1e6 / 8, gbps: 1e9 / 8 }
const BYTE_UNITS: Record<string, number> = { B: 1, kB: 1e3, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 }
const RATE = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)(\/s)?$/

/** `text` as whole bytes per second; ConfigError when it is not a rate this accepts. */
export function parseRate (text: string): number {
  const m = RATE.exec(text.trim())
  const hint = "write a number and a unit, e.g. '50Mbit', '100mbit', '10MiB/s', '2.5MB/s'"
  if (m === null) throw new ConfigError(OPTION, `'${text}' is not a rate: ${hint}`)
  const [, num, unit] = m
  if (/^[mMgGkK]b$/.test(unit)) throw new ConfigError(OPTION, `'${text}': '${unit}' could be bits or bytes; write ${unit[0]}bit or ${unit[0].toUpperCase()}B`)
  const factor = BIT_UNITS[unit.toLowerCase()] ?? BYTE_UNITS[unit]
  if (factor === undefined) throw new ConfigError(OPTION, `'${text}': unknown unit '${unit}': ${hint}`)
  const bytesPerSecond = Math.round(Number(num) * factor)
  if (bytesPerSecond < MIN_MAX_RATE_BYTES_PER_SECOND) throw new ConfigError(OPTION, `'${text}' is below ${MIN_MAX_RATE_BYTES_PER_SECOND * 8 / 1000} kbit/s (a unit mistake?)`)
  if (!Number.isSafeInteger(bytesPerSecond)) throw new ConfigError(OPTION, `'${text}' is too large`)
  return bytesPerSecond
}
