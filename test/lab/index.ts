/**
 * The lab library: simulated Docker hosts (network namespace + dockerd + Go-To agent each) for
 * integration tests, benchmarks and the demo. See lab.ts for the Lab class; cli.ts is
 * `npm run lab`, demo.ts is `npm run demo`.
 */
export {
  Lab, defaultHosts, tcpOpen, BASE_IMAGE, DEFAULT_PREFIX, DEFAULT_SUBNET, DEFAULT_NAT_SUBNET, DEFAULT_AGENT_PORT, PROVIDERS,
  AGENT_READY_TIMEOUT_MS, CLI_TIMEOUT_MS
} from './lab.js'
export type {
  LabOptions, HostSpec, SshdOptions, SshdHandle, LabHost, ExtraAgentOptions, AgentHandle, CliOptions, CliResult, HostStatus, DownReport
} from './lab.js'
export { waitFor } from './wait.js'
export { HOST_PRIVATE_PATHS } from './sshd.js'
export type { LabUser } from './sshd.js'
export type { WaitOptions } from './wait.js'
export {
  LabError, LabNotRootError, LabNotUpError, LabAlreadyUpError, UnknownLabHostError, LabConfigError,
  LabCommandError, LabTimeoutError, LabProcessExitedError, LabNotBuiltError, LabCleanupError
} from './errors.js'
