#!/usr/bin/env bash
# Builds the self-contained release that goes onto mesh hosts: dist/ (agent, CLI, CA, protocol, and
# bin/, the bundled CLI that `goto` runs; V8 code caches are made on the host),
# the production node_modules, package.json and install/ (goto-install.sh, provision.sh), as
# release/go-to-<version>.tar.gz. Hosts need only Node.js and Docker: no npm registry access.
# `npm run release` builds first and then runs this; `--out DIR` writes elsewhere (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
out=release
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    *) echo "build-release: unknown option $1 (usage: build-release.sh [--out DIR])" >&2; exit 2 ;;
  esac
done
[ -f dist/agent/main.js ] && [ -f dist/bin/goto.js ] || { echo "build-release: dist/ is not built; run npm run build (or npm run release)" >&2; exit 1; }
version=$(node -p 'require("./package.json").version')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
top=$stage/go-to
mkdir -p "$top/dist" "$top/install"
for d in agent control certs protocol bin; do cp -R "dist/$d" "$top/dist/"; done
find "$top/dist" \( -name '*.map' -o -name '*.v8cache' \) -delete
cp package.json package-lock.json "$top/"
cp install/goto-install.sh install/provision.sh "$top/install/"
chmod 755 "$top/install/"*.sh "$top/dist/agent/main.js" "$top/dist/control/main.js" "$top/dist/bin/goto.js"
echo "$version" > "$top/RELEASE"
# The development tree's modules, less the dev dependencies: no registry needed, same versions.
cp -R node_modules "$top/"
(cd "$top" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$out"
file=$out/go-to-$version.tar.gz
tar -czf "$file.tmp" -C "$stage" --owner=0 --group=0 go-to
mv "$file.tmp" "$file"
echo "$file $(sha256sum "$file" | cut -d' ' -f1) $(du -h "$file" | cut -f1)"
