#!/usr/bin/env bash
# Puts helm (built from source through the Go module proxy, cached) and promtool on this machine.
# Prints the folder to add to PATH. Idempotent: a second run builds nothing.
set -euo pipefail
HELM_VERSION=v3.22.0
CACHE=${GPULEDGER_TOOLS_CACHE:-$HOME/.cache/gpuledger/helm}
BIN=$CACHE/bin

if ! [ -x "$BIN/helm" ] || ! "$BIN/helm" version 2>/dev/null | grep -q "${HELM_VERSION%.*}"; then
    GO=$(command -v go || true)
    [ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
    if [ -z "$GO" ]; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >&2
        GO=$(command -v go)
    fi
    minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
    if [ "$minor" -lt 21 ]; then
        # Go >= 1.21 fetches the newer toolchain helm asks for through the module proxy (GOTOOLCHAIN=auto).
        echo "error: $("$GO" version) cannot build helm $HELM_VERSION (it needs Go >= 1.21 to fetch the toolchain helm requires); install a newer Go" >&2
        exit 1
    fi
    echo "building helm $HELM_VERSION with $("$GO" version) (minutes, once; cached in $BIN)" >&2
    mkdir -p "$BIN"
    GOBIN=$BIN GOPATH=$CACHE/gopath GOCACHE=$CACHE/gocache GOFLAGS=-modcacherw GOTOOLCHAIN=auto \
        "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi

if ! command -v promtool >/dev/null 2>&1; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
fi
echo "$BIN"
