{{/* Names, labels and the pod pieces every component shares. */}}

{{- define "gpuledger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpuledger.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "gpuledger.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gpuledger.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "worker") */}}
{{- define "gpuledger.componentName" -}}
{{- printf "%s-%s" (include "gpuledger.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpuledger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpuledger.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpuledger.labels" -}}
{{ include "gpuledger.selectorLabels" . }}
app.kubernetes.io/part-of: gpuledger
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "gpuledger.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Pod-level fields shared by every component: (dict "root" $ "values" .Values.worker) */}}
{{- define "gpuledger.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml (default .root.Values.podSecurityContext .values.podSecurityContext) | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container-level fields shared by every gpuledger container: (dict "root" $ "values" .Values.worker) */}}
{{- define "gpuledger.containerCommon" -}}
image: {{ include "gpuledger.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml (default .root.Values.securityContext .values.securityContext) | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
{{- end -}}

{{/* A ServiceMonitor for one component's `metrics` port: (dict "root" $ "component" "gateway") */}}
{{- define "gpuledger.serviceMonitor" -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "gpuledger.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "gpuledger.labels" . | nindent 4 }}
    {{- with .root.Values.monitoring.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "gpuledger.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ .root.Release.Namespace | quote }}]
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ .root.Values.monitoring.interval }}
{{- end -}}

{{/* A headless Service exposing one component's `metrics` port: (dict "root" $ "component" "worker" "port" 9403) */}}
{{- define "gpuledger.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "gpuledger.componentName" . }}-metrics
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "gpuledger.labels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "gpuledger.selectorLabels" . | nindent 4 }}
  ports:
    - {name: metrics, port: {{ .port }}, targetPort: metrics, protocol: TCP}
{{- end -}}

{{/* The Service in front of one component's `http` port; metricsPort adds a `metrics` port on the same container port
     (for a component serving /metrics on its one port): (dict "root" $ "component" "gateway" "service" .Values.gateway.service "metricsPort" 8080) */}}
{{- define "gpuledger.httpService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "gpuledger.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "gpuledger.labels" . | nindent 4 }}
spec:
  type: {{ .service.type }}
  selector:
    {{- include "gpuledger.selectorLabels" . | nindent 4 }}
  ports:
    - {name: http, port: {{ .service.port }}, targetPort: http, protocol: TCP}
    {{- with .metricsPort }}
    # served on the one port; the ServiceMonitor scrapes it by this name
    - {name: metrics, port: {{ . }}, targetPort: http, protocol: TCP}
    {{- end }}
{{- end -}}

{{/* An Ingress to one component's Service (its `http` port): (dict "root" $ "component" "gateway" "ingress" .Values.gateway.ingress) */}}
{{- define "gpuledger.ingress" -}}
{{- $svc := include "gpuledger.componentName" . -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $svc }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "gpuledger.labels" . | nindent 4 }}
  {{- with .ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with .ingress.tls }}
  tls:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    {{- range .ingress.hosts }}
    - host: {{ .host | quote }}
      http:
        paths:
          {{- range .paths }}
          - path: {{ .path }}
            pathType: {{ .pathType }}
            backend:
              service:
                name: {{ $svc }}
                port: {name: http}
          {{- end }}
    {{- end }}
{{- end -}}

{{/* The worker's or notifier's /metrics endpoint as env: listen on every address when the chart exposes it, else off
(port 0). (dict "prefix" "GPULEDGER_WORKER__" "metrics" .Values.worker.metrics) */}}
{{- define "gpuledger.metricsEnv" -}}
- {name: {{ .prefix }}METRICS_HOST, value: {{ ternary "0.0.0.0" "127.0.0.1" .metrics.enabled | quote }}}
- {name: {{ .prefix }}METRICS_PORT, value: {{ ternary .metrics.port 0 .metrics.enabled | toString | quote }}}
{{- end -}}

{{/* The container port of a /metrics endpoint, and a readiness probe on its /healthz. */}}
{{- define "gpuledger.metricsPort" -}}
ports:
  - {name: metrics, containerPort: {{ .port }}, protocol: TCP}
readinessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 15
  failureThreshold: 4
{{- end -}}
