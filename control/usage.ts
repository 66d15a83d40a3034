/**
 * The operator CLI's help text, in a module of its own so `goto --help` loads nothing else.
 */
export const USAGE = `Usage: goto [GLOBAL OPTIONS] COMMAND [options]

Operator CLI of the Go-To mesh.

Commands:
  peers                 list the mesh as the agent sees it (name, state, address, engine, labels)
  status [NAME]         status of the agent (or of the member NAME): version, uptime, engine, containers,
                        failover (safe or not, and per container: protected, owner, epoch, snapshot age,
                        replica holders)
  move CONTAINER --to NAME
                        move a running container to the member NAME: only the image layers it lacks
                        travel; the container is paused only for the last step; on any failure it
                        keeps running where it was
      --dry-run         print the plan (layers to send, layers already there, bytes; the link's
                        class, each layer's bytes and the estimated cost) and stop
      --allow-bind-mounts
                        move a container that bind-mounts host paths, without that data
      --allow-host-access
                        move a container with host-level powers (added capabilities, privileged,
                        devices, host namespaces, security options, sysctls) and keep them at the
                        destination; the signed order names this allowance. Without it such a
                        container is refused, each power named
      --max-rate RATE   cap what this move puts on the wire (after compression), e.g. 50Mbit,
                        100mbit, 10MiB/s, 2.5MB/s; the lower of it and the link's cap (link table)
                        holds; the progress bar shows the rate and the ETA against the cap
      --live            the container's processes move with their memory (a CRIU checkpoint
                        instead of a pause) and go on at the destination instead of restarting;
                        both hosts need CRIU 4.2+ and an engine started with --experimental,
                        the destination's CPU every flag of the source's, and the container no
                        established TCP connection to a peer outside it
                        (refused before anything freezes otherwise, saying what is missing; with
                        --dry-run, what each host found). Rollback restores the source from its
                        checkpoint (docs/operations.md)
      --live=auto       live where both hosts and the container allow it, otherwise an ordinary
                        move (its processes start afresh), said in the plan and the summary;
                        --live alone fails instead
  move --project PROJECT --to NAME
                        move every container of the compose project PROJECT (its
                        com.docker.compose.project label) from the member that runs it (found as
                        for a container; refused, naming them, if it runs on several members)
                        as one transaction, with their networks and volumes (and their labels):
                        all frozen together, restored in dependency order, all committed or all
                        rolled back. Takes --dry-run, --allow-bind-mounts, --allow-host-access
                        and --max-rate
  drain NAME            planned maintenance: move every running container of the member NAME to
                        the other alive members (fewest containers first), one move after another;
                        a compose project's containers go together to one member, as one
                        --project move (the plan shows them grouped);
                        a container (project) whose move fails keeps running on NAME and the drain goes on;
                        containers that are not running stay (listed). Takes --dry-run,
                        --allow-bind-mounts, --allow-host-access and --max-rate as move does
  protect CONTAINER     protect a container: it is snapshotted to replica holders, and if its host
                        dies it runs again on one survivor from its latest snapshot (the label
                        goto.protect=true does the same)
  unprotect CONTAINER   stop protecting it (overrides the label; held snapshots are left as they are)
  ca ...                the mesh CA: init, issue, revoke, list (see 'goto ca --help')
  install USER@HOST --ca-dir DIR --name NAME
                        install (or upgrade) the agent on a host over SSH and wait until it is
                        alive in the mesh (see 'goto install --help')
  uninstall USER@HOST   stop the agent on a host and remove it; --revoke also revokes its certificate
  cloud-init --name NAME --ca-dir DIR --release-url URL
                        print cloud-init user-data that makes a fresh EC2/Azure VM a mesh member

GLOBAL OPTIONS, of peers, status, move, drain, protect and unprotect; before or after the command
('goto --bundle B --agent A peers' is 'goto peers --bundle B --agent A'), each once. Before the
command, install takes --bundle and --agent, 'goto ca list' takes --json:
  --bundle DIR          operator bundle from 'goto ca issue --role operator' (env GOTO_BUNDLE)
  --agent MULTIADDR     agent to ask, e.g. /ip4/10.0.0.5/tcp/4001 (env GOTO_AGENT); /p2p/<id> optional.
                        An agent behind NAT through a relay: <relay address>/p2p/<relay id>/p2p-circuit/p2p/<id>
                        (its ADDRESS in 'goto peers --json'); other agents relay its status and moves anyway
  --json                machine-readable output (move: one JSON event per line, the last one
                        {"event":"done",...} or {"event":"failed",...}; drain: its own events
                        drain-plan, drain-move, and last drained, around each move's events)
  --timeout SECONDS     give up after this long (default 10; for move, on reaching the agent)
  -h, --help            show this help
  --version             print the version

Exit status: 0 success, 1 failure (agent unreachable, certificate rejected, unknown peer, a move
that failed), 2 usage.`
