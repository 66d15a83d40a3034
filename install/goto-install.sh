#!/bin/sh
# goto-install.sh: installs, upgrades, checks and removes the Go-To agent on one Linux host.
#
# One script for every way a host joins a mesh, so they stay in step: `goto install USER@HOST`
# uploads it over SSH and runs it; the Vagrant provisioner and the cloud-init user-data run it from
# the release through install/provision.sh. Plain POSIX sh; run as root (except `check`).
#
#   goto-install.sh check     [--docker ENDPOINT]
#   goto-install.sh install   --release TARBALL --bundle DIR [--name NAME] [--listen MULTIADDR]
#                             [--announce MULTIADDR]... [--bootstrap MULTIADDR]... [--label K=V]...
#                             [--config-json JSON] [--docker ENDPOINT] [--supervisor auto|systemd|background]
#   goto-install.sh print-config [install options]   (the agent.json install would write; changes nothing)
#
# --config-json is the agent's part of the config as one JSON object ({"labels": ["k=v"],
# "bootstrap": [...], "announce": [...], "listen": "..."}: what `goto install` and `goto cloud-init`
# pass); the single options add to it. A value with a control character is refused (exit 2) before
# anything is changed, and the options reach agent.json as arguments of one Node.js call, never as
# lines a newline could add keys to.
#   goto-install.sh uninstall [--keep-state]
#   goto-install.sh start | stop | status | logs | show-cert | print-unit
#
# Layout: /opt/goto/releases/<id>/ (the release: dist/, node_modules/, this script), /opt/goto/current
# (symlink to the running release), /opt/goto/bin/goto-agent (runs it with Node.js); /etc/goto/agent.json
# (the agent's config file), /etc/goto/bundle/ (0700; identity.key 0600); /var/lib/goto/ (0700, the
# agent's state). Where systemd is PID 1 the agent runs as goto-agent.service; elsewhere a small
# supervisor started by this script keeps it running (pidfiles in /var/lib/goto, log agent.log), and
# something must run `goto-install.sh start` at boot (see docs/operations.md).
#
# Exit status: 0 done, 1 failed, 2 bad usage, 3 a prerequisite is missing (nothing was changed).
set -eu

OPT=/opt/goto
ETC=/etc/goto
STATE=/var/lib/goto
UNIT=/etc/systemd/system/goto-agent.service
# Node.js 20 is what the agent is built and tested for (libp2p 3 needs its APIs).
MIN_NODE_MAJOR=20
# Docker Engine 20.10 (API 1.41) is the oldest engine the agent is tested with (Debian 12's).
MIN_DOCKER_MAJOR=20
# An unpacked release is ~90 MiB and two are kept (current and previous, for a rollback).
MIN_FREE_OPT_MIB=300
# The agent stages image layers of incoming moves under its state directory.
MIN_FREE_STATE_MIB=1024
# How long a stopping agent gets before SIGKILL (it stops its parts in well under a second).
STOP_GRACE_S=15
# How long the background supervisor waits before restarting an agent that exited with an error.
RESTART_DELAY_S=5
DEFAULT_DOCKER=unix:///var/run/docker.sock

die () { echo "goto-install: error: $*" >&2; exit 1; }
usage () { echo "goto-install: usage: $*" >&2; exit 2; }
say () { echo "$*"; }

need_root () {
  [ "$(id -u)" = 0 ] || die "must run as root (it writes $OPT, $ETC, $STATE and starts a service)"
}

# --- prerequisites -------------------------------------------------------------------------------

node_bin () { command -v node 2>/dev/null || true; }

# Prints "VERSION APIVERSION" of the engine at $1, or fails with the reason on stderr.
docker_version () {
  node=$(node_bin)
  if [ -n "$node" ]; then
    "$node" -e '
      const http = require("http")
      const u = process.argv[1]
      const o = u.startsWith("unix://") ? { socketPath: u.slice(7) } : (() => { const x = new URL(u.replace(/^tcp:/, "http:")); return { host: x.hostname, port: x.port || 2375 } })()
      const req = http.get({ ...o, path: "/version", timeout: 5000 }, r => {
        let b = ""; r.setEncoding("utf8"); r.on("data", d => { b += d })
        r.on("end", () => { try { const j = JSON.parse(b); console.log(j.Version + " " + j.ApiVersion) } catch { console.error("not a Docker Engine answer"); process.exit(1) } })
      })
      req.on("timeout", () => { req.destroy(new Error("no answer within 5 s")) })
      req.on("error", e => { console.error(e.message); process.exit(1) })' "$1"
  elif command -v docker >/dev/null 2>&1; then
    docker -H "$1" version --format '{{.Server.Version}} {{.Server.APIVersion}}'
  else
    echo "cannot ask the engine without Node.js or the docker CLI" >&2
    return 1
  fi
}

# Free MiB on the filesystem that holds $1 (or its nearest existing parent).
free_mib () {
  d=$1
  while [ ! -e "$d" ]; do d=$(dirname "$d"); done
  df -Pk "$d" | awk 'NR==2 { print int($4 / 1024) }'
}

has_systemd () { [ -d /run/systemd/system ]; }

# Prints one line per prerequisite, "ok KEY: VALUE" or "missing KEY: what to install";
# returns 3 when something is missing.
check () {
  docker=$1
  missing=0
  if [ "$(uname -s)" != Linux ]; then echo "missing os: $(uname -s) is not Linux; the agent runs on Linux hosts"; missing=1
  else
    os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-Linux}" || echo Linux)
    echo "ok os: $os ($(uname -m))"
  fi
  for tool in tar gzip sha256sum; do
    command -v $tool >/dev/null 2>&1 || { echo "missing $tool: install $tool (Debian/Ubuntu: apt-get install $tool)"; missing=1; }
  done
  node=$(node_bin)
  if [ -z "$node" ]; then
    echo "missing node: Node.js $MIN_NODE_MAJOR or newer is not installed; install it (Ubuntu/Debian: NodeSource's nodejs package for 22.x, see docs/clouds.md)"; missing=1
  else
    v=$("$node" -e 'process.stdout.write(process.versions.node)' 2>/dev/null || echo 0)
    if [ "${v%%.*}" -lt $MIN_NODE_MAJOR ] 2>/dev/null; then
      echo "missing node: Node.js $v at $node is too old; install Node.js $MIN_NODE_MAJOR or newer (NodeSource's nodejs package for 22.x)"; missing=1
    else
      echo "ok node: v$v ($node)"
    fi
  fi
  if out=$(docker_version "$docker" 2>&1); then
    dv=${out%% *}
    if [ "${dv%%.*}" -lt $MIN_DOCKER_MAJOR ] 2>/dev/null; then
      echo "missing docker: Docker Engine $dv at $docker is too old; install Docker Engine $MIN_DOCKER_MAJOR.10 or newer"; missing=1
    else
      echo "ok docker: Engine $dv, API ${out#* } ($docker)"
    fi
  else
    echo "missing docker: no Docker Engine answers at $docker ($(echo "$out" | tail -n 1)); install Docker Engine (Ubuntu/Debian: apt-get install docker.io) and start it"; missing=1
  fi
  fo=$(free_mib $OPT); fs=$(free_mib $STATE)
  if [ "$fo" -lt $MIN_FREE_OPT_MIB ]; then echo "missing disk: $fo MiB free for $OPT, need $MIN_FREE_OPT_MIB MiB"; missing=1
  elif [ "$fs" -lt $MIN_FREE_STATE_MIB ]; then echo "missing disk: $fs MiB free for $STATE, need $MIN_FREE_STATE_MIB MiB"; missing=1
  else echo "ok disk: $fo MiB free for $OPT, $fs MiB for $STATE"
  fi
  if has_systemd; then echo "ok supervisor: systemd"; else echo "ok supervisor: background (systemd is not running)"; fi
  [ $missing = 0 ] || return 3
}

# --- the agent process -----------------------------------------------------------------------------

supervisor_kind () {
  case "${SUPERVISOR:-auto}" in
    systemd) echo systemd ;;
    background) echo background ;;
    *) if has_systemd; then echo systemd; else echo background; fi ;;
  esac
}

pid_alive () { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
read_pid () { cat "$1" 2>/dev/null || true; }

agent_running () {
  if [ "$(supervisor_kind)" = systemd ]; then systemctl is-active --quiet goto-agent.service
  else pid_alive "$(read_pid $STATE/supervisor.pid)"
  fi
}

start_agent () {
  if [ "$(supervisor_kind)" = systemd ]; then
    systemctl daemon-reload
    systemctl enable --quiet goto-agent.service
    systemctl restart goto-agent.service
  else
    [ -x $OPT/current/install/goto-install.sh ] || die "no release installed in $OPT/current"
    # setsid: the supervisor outlives the SSH session or provisioner that started it.
    setsid $OPT/current/install/goto-install.sh supervise </dev/null >>$STATE/agent.log 2>&1 &
    echo $! > $STATE/supervisor.pid
  fi
}

stop_agent () {
  if has_systemd && [ -f $UNIT ]; then systemctl stop goto-agent.service 2>/dev/null || true; fi
  pid=$(read_pid $STATE/supervisor.pid)
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while pid_alive "$pid" && [ $i -lt $((STOP_GRACE_S * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  apid=$(read_pid $STATE/agent.pid)
  pid_alive "$apid" && kill -KILL "$apid" 2>/dev/null || true
  rm -f $STATE/supervisor.pid $STATE/agent.pid
}

# The background supervisor: runs the agent, restarts it after an error, stops it on SIGTERM.
supervise () {
  child=
  trap 'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -f $STATE/agent.pid; exit 0' TERM INT
  stopping=
  while :; do
    $OPT/bin/goto-agent --config $ETC/agent.json &
    child=$!
    echo $child > $STATE/agent.pid
    rc=0; wait $child || rc=$?
    [ -n "$stopping" ] && exit 0
    # 2 is a configuration error: restarting would only repeat it.
    if [ $rc = 2 ]; then echo "goto-install: the agent refused its configuration (exit 2); not restarting" >&2; exit 2; fi
    echo "goto-install: the agent exited ($rc); restarting in $RESTART_DELAY_S s" >&2
    sleep $RESTART_DELAY_S
  done
}

# --- install -------------------------------------------------------------------------------------

# Writes $2 from stdin only if it differs from $1's content; prints "changed" or "unchanged".
replace_if_changed () {
  tmp=$1.new.$$
  cat > "$tmp"
  chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; echo unchanged
  else mv -f "$tmp" "$1"; echo changed
  fi
}

install_release () {
  tarball=$1
  sum=$(sha256sum "$tarball" | cut -c1-12)
  version=$(tar -xzf "$tarball" -O go-to/RELEASE 2>/dev/null) || die "$tarball is not a Go-To release (no go-to/RELEASE in it); build one with npm run release"
  id="$version-$sum"
  mkdir -p $OPT/releases $OPT/bin
  if [ -d "$OPT/releases/$id" ]; then
    say "release $id: already unpacked"
  else
    rm -rf "$OPT/releases/$id.tmp"
    mkdir "$OPT/releases/$id.tmp"
    tar -xzf "$tarball" -C "$OPT/releases/$id.tmp" --strip-components=1 --no-same-owner
    mv "$OPT/releases/$id.tmp" "$OPT/releases/$id"
    say "release $id: unpacked into $OPT/releases/$id"
  fi
  old=$(readlink $OPT/current 2>/dev/null || true)
  if [ "$old" = "releases/$id" ]; then
    RELEASE_CHANGED=
  else
    ln -sfn "releases/$id" $OPT/current.new && mv -T $OPT/current.new $OPT/current
    RELEASE_CHANGED=1
    say "release $id: now current${old:+ (was ${old#releases/})}"
  fi
  # Keep the current release and the one before it; older ones go.
  for d in $OPT/releases/*; do
    b=releases/$(basename "$d")
    [ "$b" = "releases/$id" ] || [ "$b" = "$old" ] || { rm -rf "$d"; say "release ${b#releases/}: removed"; }
  done
  node=$(node_bin)
  printf '#!/bin/sh\n# Written by goto-install.sh: the agent of the current release, on Node.js %s.\nexec %s %s/current/dist/agent/main.js "$@"\n' \
    "$("$node" -v)" "$node" "$OPT" | replace_if_changed $OPT/bin/goto-agent 755 >/dev/null
  printf '#!/bin/sh\n# Written by goto-install.sh: the operator CLI of the current release.\nexec %s %s/current/dist/bin/goto.js "$@"\n' \
    "$node" "$OPT" | replace_if_changed $OPT/bin/goto 755 >/dev/null
}

install_bundle () {
  src=$1
  for f in identity.key cert.pem ca.pem; do [ -f "$src/$f" ] || die "$src/$f is missing: --bundle must be a bundle from 'goto ca issue --role agent'"; done
  mkdir -p $ETC
  chmod 755 $ETC
  new=$ETC/bundle.new.$$
  rm -rf "$new"
  mkdir -m 700 "$new"
  for f in identity.key cert.pem ca.pem crl.json bundle.json; do
    [ -f "$src/$f" ] || continue
    cp "$src/$f" "$new/$f"
    if [ $f = identity.key ]; then chmod 600 "$new/$f"; else chmod 644 "$new/$f"; fi
  done
  chown -R 0:0 "$new"
  if [ -d $ETC/bundle ] && diff -r "$new" $ETC/bundle >/dev/null 2>&1; then
    rm -rf "$new"; BUNDLE_CHANGED=; say "bundle: unchanged"
  else
    rm -rf $ETC/bundle.old; [ -d $ETC/bundle ] && mv $ETC/bundle $ETC/bundle.old
    mv "$new" $ETC/bundle; rm -rf $ETC/bundle.old
    BUNDLE_CHANGED=1; say "bundle: installed in $ETC/bundle (identity.key mode 0600)"
  fi
}

# agent.json on stdout from BUNDLE STATE_DIR and install options (--name --listen --docker
# --announce --bootstrap --label --config-json): the bundle, the state directory and the engine
# first, then the name, the listen address, and the lists in the order they first appear (the same
# bytes earlier versions wrote for the same options, so an upgrade changes nothing). Exit 2 on a
# value that is no text or holds a control character, or a key of --config-json it does not know.
print_config () {
  "$(node_bin)" -e '
    const [bundle, stateDir, ...a] = process.argv.slice(1)
    const LISTS = { "--announce": "announce", "--bootstrap": "bootstrap", "--label": "labels" }
    const SCALARS = { "--name": "name", "--listen": "listen", "--docker": "docker" }
    const KEYS = Object.fromEntries([...Object.entries(LISTS), ...Object.entries(SCALARS)].map(([o, k]) => [k, o]))
    const fail = m => { process.stderr.write("goto-install: usage: " + m + "\n"); process.exit(2) }
    const scalars = { bundle, stateDir }, lists = {}
    const text = (opt, v) => {
      if (typeof v !== "string") fail(opt + ": " + JSON.stringify(v) + " is not text")
      if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) fail(opt + ": " + JSON.stringify(v) + " has a control character; refused, nothing was changed")
      return v
    }
    const put = (opt, v) => {
      if (Object.hasOwn(LISTS, opt)) (lists[LISTS[opt]] ??= []).push(text(opt, v))
      else scalars[SCALARS[opt]] = text(opt, v)
    }
    for (let i = 0; i < a.length; i += 2) {
      if (a[i] === "--config-json") {
        let c
        try { c = JSON.parse(a[i + 1]) } catch { fail("--config-json is not JSON") }
        if (c === null || typeof c !== "object" || Array.isArray(c)) fail("--config-json must be a JSON object")
        for (const [k, v] of Object.entries(c)) {
          if (!Object.hasOwn(KEYS, k)) fail("--config-json: unknown key " + JSON.stringify(k))
          const opt = KEYS[k]
          if (!Object.hasOwn(LISTS, opt)) put(opt, v)
          else if (Array.isArray(v)) for (const x of v) put(opt, x)
          else fail("--config-json: " + k + " must be a list")
        }
      } else if (Object.hasOwn(LISTS, a[i]) || Object.hasOwn(SCALARS, a[i])) put(a[i], a[i + 1])
      else fail("unknown option " + a[i])
    }
    const c = {}
    for (const k of ["bundle", "stateDir", "docker", "name", "listen"]) if (scalars[k] !== undefined && scalars[k] !== "") c[k] = scalars[k]
    process.stdout.write(JSON.stringify({ ...c, ...lists }, null, 2) + "\n")' "$@"
}

# Writes agent.json ($1: its text) when it differs.
install_config () {
  r=$(printf '%s\n' "$1" | replace_if_changed $ETC/agent.json 644)
  if [ "$r" = changed ]; then CONFIG_CHANGED=1; say "config: written to $ETC/agent.json"; else CONFIG_CHANGED=; say "config: unchanged"; fi
}

# The systemd unit (also `goto-install.sh print-unit`, which tests check with systemd-analyze).
print_unit () {
  cat <<EOF
# Written by goto-install.sh. The Go-To agent: joins the mesh, answers the operator CLI, moves containers.
[Unit]
Description=Go-To agent
After=network-online.target docker.service
Wants=network-online.target

[Service]
ExecStart=$OPT/bin/goto-agent --config $ETC/agent.json
Restart=on-failure
RestartSec=$RESTART_DELAY_S
# Exit 2 is a configuration error: restarting would only repeat it.
RestartPreventExitStatus=2
TimeoutStopSec=$STOP_GRACE_S

[Install]
WantedBy=multi-user.target
EOF
}

install_unit () {
  r=$(print_unit | replace_if_changed $UNIT 644)
  [ "$r" = unchanged ] || { UNIT_CHANGED=1; say "service: wrote $UNIT"; }
}

do_install () {
  mode=$1; shift
  tarball=; bundle=; docker=$DEFAULT_DOCKER
  # Every option is checked before anything is done: the script's own are taken out, the agent's
  # config options stay in "$@" (each moved to its end in turn) for print_config.
  n=$#
  while [ $n -gt 0 ]; do
    [ $n -ge 2 ] || usage "$1 needs a value"
    opt=$1; val=$2; shift 2; n=$((n - 2))
    case $val in *[[:cntrl:]]*) usage "$opt: the value has a control character (a newline, an escape, ...); refused, nothing was changed" ;; esac
    case $opt in
      --release) tarball=$val ;;
      --bundle) bundle=$val ;;
      --docker) docker=$val; set -- "$@" "$opt" "$val" ;;
      --name|--listen|--announce|--bootstrap|--label|--config-json) set -- "$@" "$opt" "$val" ;;
      --supervisor) case $val in auto|systemd|background) SUPERVISOR=$val ;; *) usage "--supervisor must be auto, systemd or background" ;; esac ;;
      *) usage "install: unknown option $opt" ;;
    esac
  done
  if [ "$mode" = print ]; then print_config $ETC/bundle $STATE --docker "$DEFAULT_DOCKER" "$@"; return; fi
  need_root
  [ -n "$tarball" ] && [ -f "$tarball" ] || usage "install needs --release TARBALL (an existing file from npm run release)"
  [ -n "$bundle" ] && [ -d "$bundle" ] || usage "install needs --bundle DIR (a bundle directory from goto ca issue --role agent)"
  say "checking prerequisites"
  rc=0; out=$(check "$docker") || rc=$?
  printf '%s\n' "$out" | sed 's/^/  /'
  [ $rc = 0 ] || { echo "goto-install: a prerequisite is missing; nothing was changed" >&2; exit 3; }
  # The config file: the bundle, the state directory, then what the operator gave.
  config=$(print_config $ETC/bundle $STATE --docker "$DEFAULT_DOCKER" "$@") || exit 2

  mkdir -p $STATE && chmod 700 $STATE
  install_release "$tarball"
  install_bundle "$bundle"
  install_config "$config"

  UNIT_CHANGED=
  kind=$(supervisor_kind)
  if [ "$kind" = systemd ]; then install_unit; fi
  echo "$kind" > $STATE/supervisor
  if [ -n "$RELEASE_CHANGED$BUNDLE_CHANGED$CONFIG_CHANGED$UNIT_CHANGED" ] || ! agent_running; then
    was_running=; agent_running && was_running=1
    stop_agent
    start_agent
    if [ -n "$was_running" ]; then say "agent: restarted ($kind)"; else say "agent: started ($kind)"; fi
  else
    say "agent: already running, nothing changed ($kind)"
  fi
}

do_uninstall () {
  need_root
  keep_state=
  while [ $# -gt 0 ]; do
    case $1 in --keep-state) keep_state=1 ;; *) usage "uninstall: unknown option $1" ;; esac
    shift
  done
  stop_agent
  say "agent: stopped"
  if [ -f $UNIT ]; then
    if has_systemd; then systemctl disable --quiet goto-agent.service 2>/dev/null || true; fi
    rm -f $UNIT
    if has_systemd; then systemctl daemon-reload; fi
    say "service: removed $UNIT"
  fi
  # Contents first: in a test lab these directories are mount points that cannot go themselves.
  dirs="$OPT $ETC"
  [ -n "$keep_state" ] || dirs="$dirs $STATE"
  for d in $dirs; do
    if [ -e "$d" ]; then
      find "$d" -mindepth 1 -delete
      rmdir "$d" 2>/dev/null || true
      say "removed $d"
    fi
  done
  [ -z "$keep_state" ] || say "kept $STATE (the agent's state)"
}

do_status () {
  if [ -L $OPT/current ]; then say "release: $(basename "$(readlink $OPT/current)")"; else say "release: none"; return 0; fi
  SUPERVISOR=$(cat $STATE/supervisor 2>/dev/null || echo auto)
  kind=$(supervisor_kind)
  if agent_running; then say "agent: running ($kind)"; else say "agent: stopped ($kind)"; fi
}

do_logs () {
  SUPERVISOR=$(cat $STATE/supervisor 2>/dev/null || echo auto)
  if [ "$(supervisor_kind)" = systemd ]; then journalctl -u goto-agent.service -n 30 --no-pager 2>/dev/null || true
  else tail -n 30 $STATE/agent.log 2>/dev/null || true
  fi
}

do_start () {
  need_root
  SUPERVISOR=$(cat $STATE/supervisor 2>/dev/null || echo auto)
  agent_running && { say "agent: already running"; return 0; }
  start_agent
  say "agent: started ($(supervisor_kind))"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  check)
    docker=$DEFAULT_DOCKER
    while [ $# -gt 0 ]; do
      case $1 in --docker) [ $# -ge 2 ] || usage "--docker needs a value"; docker=$2; shift ;; *) usage "check: unknown option $1" ;; esac
      shift
    done
    check "$docker" ;;
  install) do_install install "$@" ;;
  print-config) do_install print "$@" ;;
  uninstall) do_uninstall "$@" ;;
  status) do_status ;;
  logs) do_logs ;;
  start) do_start ;;
  stop) need_root; stop_agent; say "agent: stopped" ;;
  show-cert) cat $ETC/bundle/cert.pem 2>/dev/null || exit 4 ;;
  print-unit) print_unit ;;
  supervise) supervise ;;
  *) usage "goto-install.sh check|install|print-config|uninstall|start|stop|status|logs|show-cert|print-unit (see the comment at the top)" ;;
esac
