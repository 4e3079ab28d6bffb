#!/usr/bin/env bash
# Installs the VS Code end-to-end client outside the repository: code-server 4.100.3 (the newest that runs on
# Node 20) and puppeteer-core, which drives the system Chromium. About 300 MB and a few minutes, once.
# Usage: editors/vscode/e2e/install.sh [DIR]   (default: ${XDG_CACHE_HOME:-~/.cache}/rustle/e2e)
# The plain `npm install code-server` fails here (root, kerberos headers, a postinstall that downloads
# ripgrep); these steps are the ones that work, as recorded in ../shared/EDITORS.md.
set -euo pipefail

VERSION=4.100.3
DIR=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/rustle/e2e}
CS=$DIR/code-server-$VERSION
mkdir -p "$DIR"

if [ -f "$CS/.installed" ] && [ -f "$DIR/node_modules/puppeteer-core/package.json" ]; then
  echo "e2e client already installed in $DIR"
  exit 0
fi

if ! command -v chromium >/dev/null || ! command -v rg >/dev/null || ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep chromium
  else
    echo "needs: apt-get install libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev ripgrep chromium" >&2
    exit 1
  fi
fi

if [ ! -f "$CS/.installed" ]; then
  rm -rf "$CS" "$DIR/package"
  (cd "$DIR" && npm pack --silent "code-server@$VERSION" >/dev/null && tar xzf "code-server-$VERSION.tgz" \
    && rm "code-server-$VERSION.tgz" && mv package "$CS")
  cd "$CS"
  npm install --omit=dev --ignore-scripts --no-audit --no-fund
  (cd lib/vscode && npm install --omit=dev --ignore-scripts --no-audit --no-fund)
  mkdir -p lib/vscode/node_modules/@vscode/ripgrep/bin
  cp "$(command -v rg)" lib/vscode/node_modules/@vscode/ripgrep/bin/rg
  (cd lib/vscode && npm_config_yes=true npm rebuild --unsafe-perm)
  # The links code-server's postinstall.sh makes.
  (cd lib/vscode && rm -rf node_modules.asar && ln -s node_modules node_modules.asar \
    && (cd bin/remote-cli && ln -sf code-linux.sh code-server) \
    && (cd bin/helpers && ln -sf browser-linux.sh browser.sh))
  (cd lib/vscode/extensions && npm install --omit=dev --no-audit --no-fund)
  npm rebuild --unsafe-perm
  touch .installed
fi

if [ ! -f "$DIR/node_modules/puppeteer-core/package.json" ]; then
  (cd "$DIR" && npm install --no-audit --no-fund --no-save puppeteer-core@24)
fi
echo "e2e client installed in $DIR"
