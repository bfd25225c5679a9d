#!/usr/bin/env bash
# Regenerates deploy/k8s/collector.yaml from the Helm chart (tests/deploy checks that it is current).
set -euo pipefail
cd "$(dirname "$0")/../.."
{
    echo "# gpuledger GPU collector, generated from the Helm chart by deploy/k8s/render-collector.sh: do not edit by hand."
    echo "# Apply without Helm: kubectl create namespace gpuledger && kubectl apply -n gpuledger -f deploy/k8s/collector.yaml"
    echo "# (set GPULEDGER_KAFKA__BOOTSTRAP_SERVERS in the settings ConfigMap first; the ServiceMonitor needs the Prometheus Operator CRDs)."
    helm template gpuledger deploy/helm/gpuledger --namespace gpuledger --kube-version 1.33.0 -f deploy/k8s/collector-values.yaml
} > deploy/k8s/collector.yaml.tmp
mv deploy/k8s/collector.yaml.tmp deploy/k8s/collector.yaml
