{{/* Selector of the bundled MinIO (minio.enabled, templates/minio.yaml). */}}
{{- define "strata.minioSelector" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: minio
{{- end -}}
