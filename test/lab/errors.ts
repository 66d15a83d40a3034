/**
 * Typed errors of the lab. Callers (tests, the lab CLI) branch on the class or on `name`, never on
 * message text; every message says what to do next where there is something to do.
 */
import { GotoError } from '../../protocol/errors.js'

/** Base class of every lab failure. */
export class LabError extends GotoError {}
/** The lab needs root (namespaces, iptables, dockerd). */
export class LabNotRootError extends LabError {}
/** An operation needs a lab that `up` made, and there is none (no lab.json). */
export class LabNotUpError extends LabError {}
/** `up` found a lab (lab.json or namespaces with the prefix) already present. */
export class LabAlreadyUpError extends LabError {}
/** No host of that name in the lab. */
export class UnknownLabHostError extends LabError {}
/** A bad lab option (names it). */
export class LabConfigError extends LabError {}
/** An external command (ip, iptables, tar, umount, ...) failed. */
export class LabCommandError extends LabError {
  constructor (readonly command: string[], readonly code: number | null, readonly stderr: string) {
    super(`${command.join(' ')} failed (exit ${code ?? 'signal'}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`)
  }
}
/** A condition polled by waitFor did not become true before its deadline. */
export class LabTimeoutError extends LabError {}
/** A process the lab started exited while the lab waited for it to become ready. */
export class LabProcessExitedError extends LabError {}
/** A program the lab runs (dist/agent/main.js, dist/control/main.js) is not built. */
export class LabNotBuiltError extends LabError {}
/** `down` could not remove something (a mount that will not go, a process that will not die). */
export class LabCleanupError extends LabError {}
