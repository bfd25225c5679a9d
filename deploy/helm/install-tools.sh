#!/usr/bin/env bash
# Puts helm (built from source through the Go module proxy, cached) and promtool on this machine.
# Prints the folder to add to PATH. Idempotent: a second run builds nothing.
#   GPULEDGER_TOOLS_CACHE  where helm, its Go toolchain and caches go (default ~/.cache/gpuledger/helm)
#   GPULEDGER_GO           the Go to start from (default: go on PATH, /usr/local/go/bin/go, else Debian's golang-go)
set -euo pipefail
HELM_VERSION=v3.22.0
HELM_GO=go1.26.0  # helm v3.22.0's go.mod asks for it
CACHE=${GPULEDGER_TOOLS_CACHE:-$HOME/.cache/gpuledger/helm}
BIN=$CACHE/bin
export GOPATH=$CACHE/gopath GOMODCACHE=$CACHE/gopath/pkg/mod GOCACHE=$CACHE/gocache GOFLAGS=-modcacherw

if ! [ -x "$BIN/helm" ] || ! "$BIN/helm" version 2>/dev/null | grep -q "${HELM_VERSION%.*}"; then
    GO=${GPULEDGER_GO:-$(command -v go || true)}
    [ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
    if [ -z "$GO" ]; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >&2
        GO=$(command -v go)
    fi
    minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
    if [ "$minor" -lt 21 ]; then
        # Too old to switch toolchains itself (Debian 12's golang-go is 1.19): fetch the Go release helm
        # needs as the module golang.org/toolchain through the module proxy, as Go >= 1.21 does by itself.
        arch=$("$GO" env GOOS)-$("$GO" env GOARCH)
        echo "$("$GO" version) is too old for helm $HELM_VERSION; fetching $HELM_GO through the module proxy" >&2
        dir=$("$GO" mod download -json "golang.org/toolchain@v0.0.1-$HELM_GO.$arch" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
        chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/*
        GO=$dir/bin/go
    fi
    echo "building helm $HELM_VERSION with $("$GO" version) (minutes, once; cached in $BIN)" >&2
    mkdir -p "$BIN"
    # Go >= 1.21 downloads $HELM_GO itself if it is older (GOTOOLCHAIN=auto).
    GOBIN=$BIN GOTOOLCHAIN=auto "$GO" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi

if ! command -v promtool >/dev/null 2>&1; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
fi
echo "$BIN"
