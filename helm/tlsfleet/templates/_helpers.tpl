{{/* The chart's name (nameOverride wins). */}}
{{- define "tlsfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-<chart> unless the release name has it. */}}
{{- define "tlsfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's object name: <fullname>-<component>. Call with (list $ "api"). */}}
{{- define "tlsfleet.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "tlsfleet.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "tlsfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "tlsfleet.labels" -}}
helm.sh/chart: {{ include "tlsfleet.chart" . }}
{{ include "tlsfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tlsfleet
{{- end }}

{{- define "tlsfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tlsfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* A component's labels and selector labels. Call with (list $ "api"). */}}
{{- define "tlsfleet.componentLabels" -}}
{{ include "tlsfleet.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tlsfleet.componentSelectorLabels" -}}
{{ include "tlsfleet.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "tlsfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tlsfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tlsfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The chart's own Secret (for the values given inline). */}}
{{- define "tlsfleet.secretName" -}}
{{- include "tlsfleet.fullname" . }}
{{- end }}

{{/* Fail early, and say what to set, when PostgreSQL or Redis is not configured. */}}
{{- define "tlsfleet.validate" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "tlsfleet needs PostgreSQL: set database.url (postgresql+psycopg://user:password@host:5432/db) or database.existingSecret" }}
{{- end }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "tlsfleet needs Redis: set redis.url (redis://host:6379/0) or redis.existingSecret" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled (lt (int .Values.worker.autoscaling.maxReplicas) (int .Values.worker.autoscaling.minReplicas)) }}
{{- fail "worker.autoscaling.maxReplicas must not be below worker.autoscaling.minReplicas" }}
{{- end }}
{{- end }}

{{/* Whether the chart renders its own Secret: some secret value is given inline. */}}
{{- define "tlsfleet.ownSecret" -}}
{{- if or (and .Values.database.url (not .Values.database.existingSecret)) (and .Values.redis.url (not .Values.redis.existingSecret)) (and .Values.bootstrapApiKey.value (not .Values.bootstrapApiKey.existingSecret)) }}true{{- end }}
{{- end }}

{{/* One secret variable: (list $ "TLSFLEET_X" .Values.item "key-in-own-secret"). */}}
{{- define "tlsfleet.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $item := index . 2 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      {{- if $item.existingSecret }}
      name: {{ $item.existingSecret }}
      key: {{ $item.existingSecretKey }}
      {{- else }}
      name: {{ include "tlsfleet.secretName" $root }}
      key: {{ index . 3 }}
      {{- end }}
{{- end }}

{{/* The environment of every long-running pod: the ConfigMap, then the secrets. */}}
{{- define "tlsfleet.env" -}}
{{- include "tlsfleet.secretEnv" (list . "TLSFLEET_DATABASE_URL" .Values.database "database-url") }}
{{ include "tlsfleet.secretEnv" (list . "TLSFLEET_REDIS_URL" .Values.redis "redis-url") }}
{{- end }}

{{/* Pod-level settings shared by every pod. */}}
{{- define "tlsfleet.podCommon" -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The writable /tmp every container mounts (the root file system is read-only). */}}
{{- define "tlsfleet.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{- define "tlsfleet.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Extra environment variables from a map (name: value). */}}
{{- define "tlsfleet.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Roll pods when the settings change. */}}
{{- define "tlsfleet.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{- /* Egress every pod needs: DNS, PostgreSQL and Redis. */}}
{{- define "tlsfleet.servicesEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
- ports:
    - {port: {{ .databasePort }}, protocol: TCP}
    - {port: {{ .redisPort }}, protocol: TCP}
  {{- with .servicesTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
