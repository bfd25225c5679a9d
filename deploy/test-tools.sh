#!/usr/bin/env bash
# Everything the test suite needs besides the Python packages, installed once (cached) so that `make test`
# alone works on a fresh Debian machine; prints the folders to put on PATH (helm's).
#   Debian: Java 17 + Maven (the local Kafka), prometheus (promtool checks every /metrics exposition),
#           nodejs + npm (the official openai Node SDK against the gateway), chromium (the dashboard's browser tests);
#   helm, built once through the Go module proxy (deploy/helm/install-tools.sh);
#   focus-validator in its own Python >= 3.12 venv (deploy/focus/install-validator.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages the tests use)" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi
deploy/focus/install-validator.sh >/dev/null
deploy/helm/install-tools.sh
