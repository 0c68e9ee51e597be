#!/usr/bin/env bash
# The documentation site in a real browser: build it (mkdocs --strict), serve it locally, open the home page,
# a how-to page and the API reference (its top, and a class with its parameter table) in headless Chromium, save a screenshot of each and check what the
# browser saw (Material's header and search rendered, no raw Sphinx role, no failed request or script error).
#   scripts/docs_screenshots.sh [out dir]        (default: docs/measurements/screenshots)
# Chromium comes from the npm registry alone (@sparticuz/chromium ships a headless build inside its package;
# 143.x runs on Node >= 20.11), with puppeteer-core to drive it; both go to ~/.cache/r3exp-docs-browser.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/measurements/screenshots}"
BROWSER_DIR="${R3EXP_DOCS_BROWSER_DIR:-$HOME/.cache/r3exp-docs-browser}"
SITE="$(mktemp -d)"
PORT="${R3EXP_DOCS_PORT:-8765}"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet --site-dir "$SITE"
if [ ! -d "$BROWSER_DIR/node_modules/@sparticuz/chromium" ]; then
  mkdir -p "$BROWSER_DIR"
  (cd "$BROWSER_DIR" && npm init -y >/dev/null && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --silent \
    @sparticuz/chromium@143.0.4 puppeteer-core@24)
fi
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER; rm -rf "$SITE"' EXIT
sleep 1
cp scripts/docs_screenshots.mjs "$BROWSER_DIR/"
OUT_ABS="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"
(cd "$BROWSER_DIR" && node docs_screenshots.mjs "http://127.0.0.1:$PORT/" "$OUT_ABS" "" how-to/own-task/ reference/api/ \
  "reference/api/#r3exp.rollout.engines.vllm_engine.VLLMEngine")
