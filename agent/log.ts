/**
 * The agent's one root logger: JSON lines on stdout through winston. Components take a child with
 * `component` set and add fields such as `peer`, `name`, `container`. Never pass key material,
 * certificate bodies or passwords as fields.
 */
import winston from 'winston'

export type Logger = winston.Logger

export function createRootLogger (level: string, base: Record<string, string>): Logger {
  return winston.createLogger({
    level,
    defaultMeta: base,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), winston.format.json()),
    transports: [new winston.transports.Console()]
  })
}
