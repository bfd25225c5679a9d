#!/usr/bin/env bash
# Lints and renders the gpuledger chart (defaults and ci/all-on.yaml) and validates every rendered object
# offline against the Kubernetes schemas. Used by .ci/run; runnable by hand:
#   deploy/helm/check-chart.sh [path/to/kubernetes-validate]
# Needs helm on PATH (deploy/helm/install-tools.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
KUBERNETES_VALIDATE=${1:-.venv/bin/kubernetes-validate}
CHART=deploy/helm/gpuledger
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# The Prometheus Operator's kinds have no schema in kubernetes-validate; tests/deploy checks them.
CRDS='ServiceMonitor|PrometheusRule'

for values in defaults all-on; do
    args=()
    [ "$values" = all-on ] && args=(-f "$CHART/ci/all-on.yaml")
    helm lint --strict "$CHART" "${args[@]}"
    # helm built with `go install` assumes Kubernetes v1.20, below the chart's kubeVersion: name one
    helm template gpuledger "$CHART" --namespace gpuledger --kube-version 1.33.0 "${args[@]}" > "$OUT/$values.yaml"
    echo "rendered $values: $(grep -c '^kind:' "$OUT/$values.yaml") objects"
    "$KUBERNETES_VALIDATE" --strict --quiet "$OUT/$values.yaml" 2>&1 | tee "$OUT/$values.log"
    if grep -v -E "Couldn't find schema for kind ($CRDS) with api version monitoring.coreos.com/v1" "$OUT/$values.log" | grep -q .; then
        echo "kubernetes-validate --strict reported problems in the $values rendering" >&2
        exit 1
    fi
done
echo "chart OK: helm lint clean, every built-in object valid (kubernetes-validate --strict)"
