{{/* Names. */}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "strata.headless" -}}
{{- printf "%s-headless" (include "strata.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.etcdName" -}}
{{- printf "%s-etcd" (include "strata.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strata.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels: common ones, and the selector of the brokers. */}}
{{- define "strata.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "strata.brokerSelector" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "strata.etcdSelector" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end -}}

{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The metadata URL every broker (and strata drain) uses. */}}
{{- define "strata.metadataUrl" -}}
{{- $endpoints := list -}}
{{- if .Values.metadata.externalEndpoints -}}
{{- $endpoints = .Values.metadata.externalEndpoints -}}
{{- else if .Values.etcd.enabled -}}
{{- $endpoints = list (printf "%s.%s.svc.%s:2379" (include "strata.etcdName" .) .Release.Namespace .Values.clusterDomain) -}}
{{- else -}}
{{- fail "metadata: set metadata.externalEndpoints, or etcd.enabled=true for the chart's etcd" -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9_.-]+$" .Values.metadata.prefix) -}}
{{- fail (printf "metadata.prefix %q: use letters, digits, '.', '_' and '-'" .Values.metadata.prefix) -}}
{{- end -}}
{{- printf "etcd://%s/%s" (join "," $endpoints) .Values.metadata.prefix -}}
{{- end -}}

{{/* Seconds between the start of a termination and SIGKILL. */}}
{{- define "strata.terminationGracePeriod" -}}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) -}}
{{- .Values.terminationGracePeriodSeconds | int64 -}}
{{- else -}}
{{- $drain := 0 -}}
{{- if .Values.drainOnShutdown.enabled -}}{{- $drain = .Values.drainOnShutdown.timeoutSeconds | int64 -}}{{- end -}}
{{- $shutdown := 30 -}}
{{- if hasKey .Values.config "shutdown_timeout_ms" -}}{{- $shutdown = div (.Values.config.shutdown_timeout_ms | int64) 1000 -}}{{- end -}}
{{- add $drain $shutdown 30 -}}
{{- end -}}
{{- end -}}

{{/* A TOML value: strings quoted (JSON escapes are valid TOML), numbers as integers
(Helm reads YAML numbers as floats), booleans bare. */}}
{{- define "strata.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- if ne ($v | float64) (($v | int64) | float64) -}}
{{- fail (printf "config: %v is not an integer (no Strata setting takes a fraction)" $v) -}}
{{- end -}}
{{- $v | int64 -}}
{{- else if and (kindIs "string" $v) (regexMatch "^-?[0-9]+$" $v) -}}
{{- $v -}}
{{- else if kindIs "string" $v -}}
{{- $v | toJson -}}
{{- else -}}
{{- fail (printf "config: %v is a %s; settings are strings, integers or booleans" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* "true" when no object store is set: the evaluation install (one broker, tiered
segments on its own volume). Not for production; NOTES.txt says so. */}}
{{- define "strata.evaluation" -}}
{{- if not .Values.objectStore.url -}}true{{- end -}}
{{- end -}}

{{/* Brokers per StatefulSet: `replicas`, or 1 in the evaluation install. */}}
{{- define "strata.replicas" -}}
{{- if include "strata.evaluation" . -}}1{{- else -}}{{- .Values.replicas | int -}}{{- end -}}
{{- end -}}
