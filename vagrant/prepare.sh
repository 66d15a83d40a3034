#!/usr/bin/env bash
# Runs on the operator's machine before `vagrant up` (a trigger in the Vagrantfile calls it with the
# VM names): builds the release if there is none, creates the mesh CA in vagrant/mesh-ca once, and
# issues a bundle per VM and one for the operator into vagrant/bundles. Safe to run again: it only
# makes what is missing. Needs Node.js 20+ and `npm ci` done in the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"
[ $# -gt 0 ] || { echo "usage: vagrant/prepare.sh NAME... (the VM names)" >&2; exit 2; }
version=$(node -p 'require("./package.json").version')
[ -f "release/go-to-$version.tar.gz" ] || npm run --silent release
[ -f dist/control/main.js ] || npm run --silent build
goto() { node "$repo/dist/control/main.js" "$@"; }
[ -f "$here/mesh-ca/ca.key" ] || goto ca init --dir "$here/mesh-ca" --name "Go-To Vagrant mesh CA"
for name in "$@"; do
  [ -d "$here/bundles/$name" ] || goto ca issue --dir "$here/mesh-ca" --role agent --name "$name" --out "$here/bundles/$name"
done
[ -d "$here/bundles/operator" ] || goto ca issue --dir "$here/mesh-ca" --role operator --name operator --out "$here/bundles/operator"
echo "vagrant/prepare.sh: release/go-to-$version.tar.gz, CA vagrant/mesh-ca, bundles for $* and operator in vagrant/bundles"
