{{/*
The ONE place where values become the settings the processes read. Everything else includes these.
  settings.<field>           -> GPULEDGER_<FIELD>             (gpuledger/settings.py)
  settings.<section>.<field> -> GPULEDGER_<SECTION>__<FIELD>
  collector.settings.<field> -> GPULEDGER_COLLECTOR__<FIELD>  (the collector section, gpuledger/sections/collector.py)
  notifier.settings.<field>  -> GPULEDGER_NOTIFIER__<FIELD>   (the notifier section, gpuledger/sections/notifier.py)
  ui.settings.<field>        -> GPULEDGER_UI__<FIELD>         (gpuledger/settings.py UISettings; the dashboard's own ConfigMap)
  secrets.*                  -> secretKeyRef env vars and read-only files, named here
  gateway.config             -> gateway: in the settings file the gateway reads (`gpuledger --config FILE gateway`;
                                gpuledger/sections/gateway.py; see gateway/configmap.yaml)
All are sections of the one settings tree (gpuledger/settings.py), read by one loader.
Each "...Settings" template returns a YAML map NAME: "string"; use it with fromYaml.
*/}}

{{/* One value as the string an environment variable carries (whole numbers without an exponent, lists/maps as JSON). */}}
{{- define "gpuledger.scalar" -}}
{{- if kindIs "float64" . -}}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if or (kindIs "slice" .) (kindIs "map" .) -}}
{{- toJson . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* (dict "values" MAP "prefix" "GPULEDGER_" "nested" "__"): a nested map one level deep when nested != "". Null values are left out. */}}
{{- define "gpuledger.flatten" -}}
{{- $out := dict -}}
{{- $prefix := .prefix -}}
{{- $nested := .nested -}}
{{- range $key, $value := .values -}}
{{- if and $nested (kindIs "map" $value) -}}
{{- range $field, $inner := $value -}}
{{- if not (kindIs "invalid" $inner) -}}
{{- $_ := set $out (printf "%s%s%s%s" $prefix (upper $key) $nested (upper $field)) (include "gpuledger.scalar" $inner) -}}
{{- end -}}
{{- end -}}
{{- else if not (kindIs "invalid" $value) -}}
{{- $_ := set $out (printf "%s%s" $prefix (upper $key)) (include "gpuledger.scalar" $value) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "gpuledger.kafkaTlsDir" -}}/etc/gpuledger/kafka-tls{{- end -}}
{{- define "gpuledger.clickhouseCaDir" -}}/etc/gpuledger/clickhouse-ca{{- end -}}

{{/* GPULEDGER_* for every component (the shared ConfigMap), with the paths of the mounted TLS files. */}}
{{- define "gpuledger.sharedSettings" -}}
{{- $s := .Values.settings -}}
{{- $kafka := default dict $s.kafka -}}
{{- $ch := default dict $s.clickhouse -}}
{{- if hasKey $kafka "sasl_password" }}{{ fail "settings.kafka.sasl_password: passwords do not go in values; create a Secret and name it in secrets.kafka.sasl.existingSecret" }}{{ end -}}
{{- if hasKey $s "ui" }}{{ fail "settings.ui: the dashboard's settings go in ui.settings (its own ConfigMap), not in the settings every component reads" }}{{ end -}}
{{- if hasKey $ch "password" }}{{ fail "settings.clickhouse.password: passwords do not go in values; create a Secret and name it in secrets.clickhouse.existingSecret" }}{{ end -}}
{{- if and .Values.secrets.kafka.sasl.usernameKey (hasKey $kafka "sasl_username") }}{{ fail "set either settings.kafka.sasl_username or secrets.kafka.sasl.usernameKey, not both" }}{{ end -}}
{{- if and .Values.secrets.clickhouse.userKey (hasKey $ch "user") }}{{ fail "set either settings.clickhouse.user or secrets.clickhouse.userKey, not both" }}{{ end -}}
{{- $out := include "gpuledger.flatten" (dict "values" $s "prefix" "GPULEDGER_" "nested" "__") | fromYaml -}}
{{- with .Values.secrets.kafka.tls -}}
{{- if .existingSecret -}}
{{- if .caKey }}{{ $_ := set $out "GPULEDGER_KAFKA__SSL_CAFILE" (printf "%s/%s" (include "gpuledger.kafkaTlsDir" $) .caKey) }}{{ end -}}
{{- if .certKey }}{{ $_ := set $out "GPULEDGER_KAFKA__SSL_CERTFILE" (printf "%s/%s" (include "gpuledger.kafkaTlsDir" $) .certKey) }}{{ end -}}
{{- if .keyKey }}{{ $_ := set $out "GPULEDGER_KAFKA__SSL_KEYFILE" (printf "%s/%s" (include "gpuledger.kafkaTlsDir" $) .keyKey) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- with .Values.secrets.clickhouse.ca -}}
{{- if .existingSecret }}{{ $_ := set $out "GPULEDGER_CLICKHOUSE__CA_CERT" (printf "%s/%s" (include "gpuledger.clickhouseCaDir" $) .key) }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* GPULEDGER_COLLECTOR__* (the collector section has no nested sections). */}}
{{- define "gpuledger.collectorSettings" -}}
{{- include "gpuledger.flatten" (dict "values" .Values.collector.settings "prefix" "GPULEDGER_COLLECTOR__" "nested" "") -}}
{{- end -}}

{{/* GPULEDGER_NOTIFIER__*: its settings and the default target's name and format (its URL is a secret). It reads settings.topics.budget_alerts. */}}
{{- define "gpuledger.notifierSettings" -}}
{{- $n := .Values.notifier -}}
{{- if or (hasKey $n.settings "routes") (hasKey $n.settings "default") }}{{ fail "notifier.settings: routes and the default target carry webhook URLs; set them in notifier.routes and notifier.default (urlSecret)" }}{{ end -}}
{{- $out := include "gpuledger.flatten" (dict "values" $n.settings "prefix" "GPULEDGER_NOTIFIER__" "nested" "__") | fromYaml -}}
{{- with $n.default -}}
{{- if .name }}{{ $_ := set $out "GPULEDGER_NOTIFIER__DEFAULT__NAME" .name }}{{ end -}}
{{- if .format }}{{ $_ := set $out "GPULEDGER_NOTIFIER__DEFAULT__FORMAT" .format }}{{ end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* GPULEDGER_UI__* for the dashboard: ui.settings, readonly=1 on every ClickHouse query, nothing secret.
     Its ClickHouse user and password come from ui.clickhouse.existingSecret (gpuledger.uiSecretEnv). */}}
{{- define "gpuledger.uiSettings" -}}
{{- $u := .Values.ui -}}
{{- $s := $u.settings -}}
{{- range list "host" "port" }}{{ if hasKey $s . }}{{ fail (printf "ui.settings.%s: set by the chart (the pod binds 0.0.0.0, port ui.port); remove it" .) }}{{ end }}{{ end -}}
{{- range list "clickhouse_user" "clickhouse_password" }}{{ if hasKey $s . }}{{ fail (printf "ui.settings.%s: the dashboard's read-only ClickHouse user comes from a Secret; name it in ui.clickhouse.existingSecret" .) }}{{ end }}{{ end -}}
{{- if eq (default "refuse" $s.anonymous) "admin" }}{{ fail "ui.settings.anonymous=admin: anonymous admin is only allowed on a loopback address and the pod binds 0.0.0.0; use ui.settings.tokens or an authenticating proxy (ui.settings.trusted_proxies)" }}{{ end -}}
{{- if and $s.tokens $u.tokensSecret.name }}{{ fail "set either ui.settings.tokens or ui.tokensSecret.name, not both" }}{{ end -}}
{{- if not (or $s.tokens $u.tokensSecret.name $s.trusted_proxies) }}{{ fail "ui.enabled: nobody could sign in; set ui.settings.tokens (SHA-256 digests), ui.tokensSecret, or ui.settings.trusted_proxies (an authenticating proxy)" }}{{ end -}}
{{- $out := include "gpuledger.flatten" (dict "values" $s "prefix" "GPULEDGER_UI__" "nested" "") | fromYaml -}}
{{- $_ := set $out "GPULEDGER_CLICKHOUSE__READONLY" "true" -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The dashboard's Secret-backed env: its own read-only ClickHouse user, and its hashed tokens when they come from a Secret. */}}
{{- define "gpuledger.uiSecretEnv" -}}
{{- $u := .Values.ui -}}
{{- $secret := required "ui.clickhouse.existingSecret: the dashboard reads ClickHouse as its own read-only user; create a Secret with its name and password (README, Deploying on Kubernetes) and name it here" $u.clickhouse.existingSecret }}
- name: GPULEDGER_UI__CLICKHOUSE_USER
  valueFrom: {secretKeyRef: {name: {{ $secret | quote }}, key: {{ required "ui.clickhouse.userKey" $u.clickhouse.userKey | quote }}}}
- name: GPULEDGER_UI__CLICKHOUSE_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $secret | quote }}, key: {{ required "ui.clickhouse.passwordKey" $u.clickhouse.passwordKey | quote }}}}
{{- with $u.tokensSecret }}
{{- if .name }}
- name: GPULEDGER_UI__TOKENS
  valueFrom: {secretKeyRef: {name: {{ .name | quote }}, key: {{ required "ui.tokensSecret.key" .key | quote }}}}
{{- end }}
{{- end }}
{{- end -}}

{{/* A settings map as an env list (for the migration hook, which runs before any ConfigMap exists). */}}
{{- define "gpuledger.envList" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end -}}
{{- end -}}

{{/* Secret-backed env vars: (dict "root" $ "kafka" true "clickhouse" true) */}}
{{- define "gpuledger.secretEnv" -}}
{{- $sec := .root.Values.secrets -}}
{{- if .kafka }}
{{- with $sec.kafka.sasl }}
{{- if .existingSecret }}
- name: GPULEDGER_KAFKA__SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .passwordKey | quote }}}}
{{- if .usernameKey }}
- name: GPULEDGER_KAFKA__SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .usernameKey | quote }}}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if .clickhouse }}
{{- with $sec.clickhouse }}
{{- if .existingSecret }}
- name: GPULEDGER_CLICKHOUSE__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .passwordKey | quote }}}}
{{- if .userKey }}
- name: GPULEDGER_CLICKHOUSE__USER
  valueFrom: {secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .userKey | quote }}}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Webhook URLs of the notifier: the default target's URL, then the routes as JSON whose URLs Kubernetes fills in from the env vars before them ($(VAR) expansion). */}}
{{- define "gpuledger.notifierWebhookEnv" -}}
{{- $n := .Values.notifier -}}
{{- with $n.default }}
{{- if .urlSecret }}
- name: GPULEDGER_NOTIFIER__DEFAULT__URL
  valueFrom: {secretKeyRef: {name: {{ required "notifier.default.urlSecret.name" .urlSecret.name | quote }}, key: {{ required "notifier.default.urlSecret.key" .urlSecret.key | quote }}}}
{{- end }}
{{- end }}
{{- if $n.routes }}
{{- $routes := list }}
{{- range $i, $r := $n.routes }}
- name: WEBHOOK_URL_{{ $i }}
  valueFrom: {secretKeyRef: {name: {{ required (printf "notifier.routes[%d].urlSecret.name" $i) (dig "urlSecret" "name" "" $r) | quote }}, key: {{ required (printf "notifier.routes[%d].urlSecret.key" $i) (dig "urlSecret" "key" "" $r) | quote }}}}
{{- $route := dict "name" (required (printf "notifier.routes[%d].name" $i) $r.name) "match" (required (printf "notifier.routes[%d].match" $i) $r.match) "format" (default "slack" $r.format) "url" (printf "$(WEBHOOK_URL_%d)" $i) }}
{{- $routes = append $routes $route }}
{{- end }}
- name: GPULEDGER_NOTIFIER__ROUTES
  value: {{ toJson $routes | quote }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts for the TLS files named in secrets.*: (dict "root" $ "kafka" true "clickhouse" true) */}}
{{- define "gpuledger.secretVolumes" -}}
{{- if and .kafka .root.Values.secrets.kafka.tls.existingSecret }}
- name: kafka-tls
  secret: {secretName: {{ .root.Values.secrets.kafka.tls.existingSecret | quote }}, defaultMode: 0440}
{{- end }}
{{- if and .clickhouse .root.Values.secrets.clickhouse.ca.existingSecret }}
- name: clickhouse-ca
  secret: {secretName: {{ .root.Values.secrets.clickhouse.ca.existingSecret | quote }}, defaultMode: 0440}
{{- end }}
{{- end -}}

{{- define "gpuledger.secretMounts" -}}
{{- if and .kafka .root.Values.secrets.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "gpuledger.kafkaTlsDir" .root }}
  readOnly: true
{{- end }}
{{- if and .clickhouse .root.Values.secrets.clickhouse.ca.existingSecret }}
- name: clickhouse-ca
  mountPath: {{ include "gpuledger.clickhouseCaDir" .root }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "gpuledger.gatewayKeysDir" -}}/etc/gpuledger/gateway-keys{{- end -}}

{{/* The gateway's settings file: gateway.config as its `gateway:` section, plus keys_file when virtual keys come from a Secret.
     Every backend's api_key_env must be fed by gateway.apiKeys. Kafka and topics come from the shared ConfigMap's env. */}}
{{- define "gpuledger.gatewayConfig" -}}
{{- $g := .Values.gateway -}}
{{- $config := deepCopy $g.config -}}
{{- $fed := list -}}
{{- range $g.apiKeys }}{{ $fed = append $fed (required "gateway.apiKeys[].env" .env) }}{{ end -}}
{{- range $config.backends -}}
{{- if and .api_key_env (not (has .api_key_env $fed)) -}}
{{- fail (printf "gateway.config backend %q reads its API key from $%s, but gateway.apiKeys has no entry with env: %s (name the Secret holding it)" .name .api_key_env .api_key_env) -}}
{{- end -}}
{{- end -}}
{{- if $g.virtualKeys.existingSecret -}}
{{- if hasKey $config "keys_file" }}{{ fail "gateway.config.keys_file is set by the chart when gateway.virtualKeys.existingSecret is set; remove one" }}{{ end -}}
{{- $_ := set $config "keys_file" (printf "%s/%s" (include "gpuledger.gatewayKeysDir" .) $g.virtualKeys.key) -}}
{{- end -}}
{{- toYaml (dict "gateway" $config) -}}
{{- end -}}
