#!/bin/sh
# provision.sh: turns a fresh Ubuntu/Debian machine into a mesh member. Used by the Vagrantfile
# (release and bundles from the synced /vagrant folder) and by `goto cloud-init` user-data (release
# from an operator-given URL, bundle written by cloud-init). It installs what is missing (Docker
# Engine from the distribution, Node.js 22 from NodeSource), fetches the release, checks its
# sha256 and runs the release's own goto-install.sh, so every way onto a host ends in that script.
#
#   provision.sh --release PATH|file://PATH|https://URL [--sha256 HEX] --bundle DIR [--delete-bundle]
#                [--no-packages] [goto-install.sh install options: --name --label --bootstrap
#                --announce --listen --docker --supervisor --config-json]; a value with a control
#                character is refused before anything is done
#
# A URL needs --sha256 (the release must be the one the operator built). --delete-bundle removes
# DIR after the install (cloud-init's copy). --no-packages never runs apt-get.
set -eu

# Node.js major version installed from NodeSource when the host has none or an older one.
NODE_MAJOR=22
MIN_NODE_MAJOR=20

die () { echo "provision: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

release=; sha=; bundle=; delete_bundle=; packages=1
# Every option is checked before anything is done; goto-install.sh's options stay in "$@" (each
# moved to its end in turn), so they reach it as the words they were, whatever they hold.
n=$#
while [ $n -gt 0 ]; do
  opt=$1; shift; n=$((n - 1))
  case $opt in
    --delete-bundle) delete_bundle=1; continue ;;
    --no-packages) packages=; continue ;;
    --release|--sha256|--bundle|--name|--label|--bootstrap|--announce|--listen|--docker|--supervisor|--config-json) ;;
    *) die "unknown option $opt" ;;
  esac
  [ $n -ge 1 ] || die "$opt needs a value"
  val=$1; shift; n=$((n - 1))
  case $val in *[[:cntrl:]]*) die "$opt: the value has a control character (a newline, an escape, ...); refused, nothing was changed" ;; esac
  case $opt in
    --release) release=$val ;;
    --sha256) sha=$val ;;
    --bundle) bundle=$val ;;
    *) set -- "$@" "$opt" "$val" ;;
  esac
done
[ -n "$release" ] || die "--release is required (a path, file:// or https:// URL of go-to-<version>.tar.gz)"
[ -n "$bundle" ] && [ -d "$bundle" ] || die "--bundle DIR is required and must exist"

apt_install () {
  [ -n "$packages" ] || die "$1 is missing and --no-packages was given; install it first"
  command -v apt-get >/dev/null || die "$1 is missing and this is not a Debian/Ubuntu host; install it first"
  echo "provision: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

node_ok () {
  command -v node >/dev/null && [ "$(node -e 'process.stdout.write(process.versions.node.split(".")[0])')" -ge $MIN_NODE_MAJOR ]
}

if ! command -v dockerd >/dev/null; then
  [ -z "$packages" ] || apt-get update -q >/dev/null
  apt_install docker.io
  if [ -d /run/systemd/system ]; then systemctl enable --now docker >/dev/null; fi
else
  echo "provision: Docker Engine is installed ($(command -v dockerd))"
fi
if ! node_ok; then
  # NodeSource's documented apt setup: its signing key and repository, then the nodejs package.
  apt_install ca-certificates curl gnupg
  mkdir -p /etc/apt/keyrings
  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
  echo "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_$NODE_MAJOR.x nodistro main" > /etc/apt/sources.list.d/nodesource.list
  apt-get update -q >/dev/null
  apt_install nodejs
else
  echo "provision: Node.js $(node -v) is installed"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$work/go-to.tar.gz
case $release in
  http://*|https://*)
    [ -n "$sha" ] || die "a release URL needs --sha256 (from npm run release) so a changed file is refused"
    command -v curl >/dev/null || apt_install curl
    echo "provision: fetching $release"
    curl -fsSL --retry 3 -o "$tarball" "$release" || die "cannot fetch $release" ;;
  file://*) cp "${release#file://}" "$tarball" || die "cannot read ${release#file://}" ;;
  *) cp "$release" "$tarball" || die "cannot read $release" ;;
esac
if [ -n "$sha" ]; then
  got=$(sha256sum "$tarball" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || die "the release's sha256 is $got, expected $sha: refusing it"
  echo "provision: release sha256 verified"
fi
tar -xzf "$tarball" -C "$work" go-to/install/goto-install.sh || die "$release is not a Go-To release"

sh "$work/go-to/install/goto-install.sh" install --release "$tarball" --bundle "$bundle" "$@"
if [ -n "$delete_bundle" ]; then rm -rf "$bundle"; echo "provision: removed $bundle (installed in /etc/goto/bundle)"; fi
