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
{{- $gate := 0 -}}
{{- $gate = include "strata.rollGateTimeout" . | int64 -}}
{{- $shutdown := 30 -}}
{{- if hasKey .Values.config "shutdown_timeout_ms" -}}{{- $shutdown = div (.Values.config.shutdown_timeout_ms | int64) 1000 -}}{{- end -}}
{{- add $drain $gate $shutdown 30 -}}
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

{{/* Security (values.yaml `security`). Where the mounted files live: one directory
per Secret, outside /etc/strata (the ConfigMap's read-only mount). */}}
{{- define "strata.securityDir" -}}/etc/strata-security{{- end -}}

{{/* The Secret of the brokers' certificate: tls.existingSecret, or the one the
Certificate fills in. Empty without security.enabled. */}}
{{- define "strata.tlsSecret" -}}
{{- with .Values.security -}}
{{- if .enabled -}}
{{- if .tls.existingSecret -}}
{{- .tls.existingSecret -}}
{{- else if .tls.certManager.enabled -}}
{{- default (printf "%s-tls" (include "strata.fullname" $)) .tls.certManager.secretName -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ssl_client_auth: security.tls.clientAuth, else required for SSL clients, requested
with the internal (certificate) listener, none for SASL_SSL alone. */}}
{{- define "strata.clientAuth" -}}
{{- with .Values.security -}}
{{- if .tls.clientAuth -}}
{{- .tls.clientAuth | lower -}}
{{- else if eq (upper .protocol) "SSL" -}}
required
{{- else if .internalListener.enabled -}}
requested
{{- else -}}
none
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The SASL mechanisms, upper case, comma-separated (empty with protocol SSL). */}}
{{- define "strata.saslMechanisms" -}}
{{- if include "strata.saslInUse" . -}}
{{- $m := list -}}
{{- range .Values.security.sasl.mechanisms -}}{{- $m = append $m (upper .) -}}{{- end -}}
{{- join "," $m -}}
{{- end -}}
{{- end -}}

{{/* "true" when a Kafka listener logs clients in with SASL: the client listener
(security.protocol SASL_SSL) or the external one (externalAccess.protocol SASL_*). */}}
{{- define "strata.saslInUse" -}}
{{- if and .Values.security.enabled (eq (upper .Values.security.protocol) "SASL_SSL") -}}
true
{{- else if and (include "strata.externalEnabled" .) (hasPrefix "SASL_" (include "strata.externalProtocol" .)) -}}
true
{{- end -}}
{{- end -}}

{{/* The ACL bootstrap file: one line per security.authorization.acls entry. */}}
{{- define "strata.aclLines" -}}
{{- $operations := list "ALL" "READ" "WRITE" "CREATE" "DELETE" "ALTER" "DESCRIBE" "CLUSTER_ACTION" "DESCRIBE_CONFIGS" "ALTER_CONFIGS" "IDEMPOTENT_WRITE" "CREATE_TOKENS" "DESCRIBE_TOKENS" -}}
{{- $types := list "TOPIC" "GROUP" "CLUSTER" "TRANSACTIONAL_ID" "DELEGATION_TOKEN" "USER" -}}
{{- range $i, $acl := .Values.security.authorization.acls -}}
{{- $fields := list -}}
{{- if kindIs "string" $acl -}}
{{- $fields = splitList "," $acl -}}
{{- else if kindIs "map" $acl -}}
{{- $fields = list (toString ($acl.principal | default "")) (toString ($acl.permission | default "ALLOW")) (toString ($acl.operation | default "")) (toString ($acl.resourceType | default "")) (toString ($acl.patternType | default "LITERAL")) (toString ($acl.name | default "")) (toString ($acl.host | default "*")) -}}
{{- else -}}
{{- fail (printf "security.authorization.acls[%d]: a map (principal, operation, resourceType, name, ...) or a line PRINCIPAL,ALLOW|DENY,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME[,HOST]" $i) -}}
{{- end -}}
{{- if or (lt (len $fields) 6) (gt (len $fields) 7) -}}
{{- fail (printf "security.authorization.acls[%d]: %q has %d fields; an ACL is PRINCIPAL,ALLOW|DENY,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME[,HOST]" $i (join "," $fields) (len $fields)) -}}
{{- end -}}
{{- if eq (len $fields) 6 -}}{{- $fields = append $fields "*" -}}{{- end -}}
{{- $principal := trim (index $fields 0) -}}
{{- $permission := upper (trim (index $fields 1)) -}}
{{- $operation := upper (trim (index $fields 2)) -}}
{{- $type := upper (trim (index $fields 3)) -}}
{{- $pattern := upper (trim (index $fields 4)) -}}
{{- $name := trim (index $fields 5) -}}
{{- $host := trim (index $fields 6) -}}
{{- if not (regexMatch "^[A-Za-z]+:.+$" $principal) -}}
{{- fail (printf "security.authorization.acls[%d]: principal %q is not TYPE:NAME such as User:orders-app" $i $principal) -}}
{{- end -}}
{{- if not (has $permission (list "ALLOW" "DENY")) -}}
{{- fail (printf "security.authorization.acls[%d]: permission %q is not ALLOW or DENY" $i $permission) -}}
{{- end -}}
{{- if not (has $operation $operations) -}}
{{- fail (printf "security.authorization.acls[%d]: operation %q is not one of %s" $i $operation (join ", " $operations)) -}}
{{- end -}}
{{- if not (has $type $types) -}}
{{- fail (printf "security.authorization.acls[%d]: resourceType %q is not one of %s" $i $type (join ", " $types)) -}}
{{- end -}}
{{- if not (has $pattern (list "LITERAL" "PREFIXED")) -}}
{{- fail (printf "security.authorization.acls[%d]: patternType %q is not LITERAL or PREFIXED" $i $pattern) -}}
{{- end -}}
{{- if or (not $name) (not $host) (regexMatch "[\\s,]" (printf "%s%s%s" $principal $name $host)) -}}
{{- fail (printf "security.authorization.acls[%d]: principal, name and host must be non-empty, without spaces or commas" $i) -}}
{{- end }}
{{ join "," (list $principal $permission $operation $type $pattern $name $host) }}
{{- end -}}
{{- end -}}

{{/* Refuses security values that cannot work; renders nothing. */}}
{{- define "strata.validateSecurity" -}}
{{- with .Values.security -}}
{{- if .enabled -}}
{{- $protocol := upper .protocol -}}
{{- if not (has $protocol (list "SASL_SSL" "SSL")) -}}
{{- fail (printf "security.protocol %q: use SASL_SSL or SSL (the chart offers no plaintext listener with security.enabled)" .protocol) -}}
{{- end -}}
{{- if and .tls.existingSecret .tls.certManager.enabled -}}
{{- fail "security.tls: set either existingSecret or certManager.enabled, not both" -}}
{{- end -}}
{{- if not (or .tls.existingSecret .tls.certManager.enabled) -}}
{{- fail "security.tls: security.enabled needs a certificate: set security.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt) or security.tls.certManager.enabled with an issuerRef" -}}
{{- end -}}
{{- if and .tls.certManager.enabled (not .tls.certManager.issuerRef.name) -}}
{{- fail "security.tls.certManager.issuerRef.name: name the Issuer or ClusterIssuer that signs the brokers' certificate" -}}
{{- end -}}
{{- if .tls.certManager.enabled -}}
{{- $key := .tls.certManager.privateKey -}}
{{- $sizes := dict "ECDSA" (list 256 384 521) "RSA" (list 2048 4096 8192) "Ed25519" (list) -}}
{{- if not (hasKey $sizes $key.algorithm) -}}
{{- fail (printf "security.tls.certManager.privateKey.algorithm %q: use ECDSA, RSA or Ed25519" $key.algorithm) -}}
{{- end -}}
{{- if and (ne $key.algorithm "Ed25519") (not (has ($key.size | int) (get $sizes $key.algorithm))) -}}
{{- fail (printf "security.tls.certManager.privateKey.size %v: %s keys are %s bits" $key.size $key.algorithm (join ", " (get $sizes $key.algorithm))) -}}
{{- end -}}
{{- end -}}
{{- if not (and .tls.certKey .tls.keyKey .tls.caKey) -}}
{{- fail "security.tls: certKey, keyKey and caKey must name keys of the Secret (the CA is required: brokers check each other's certificates against it)" -}}
{{- end -}}
{{- if not (has (include "strata.clientAuth" $) (list "none" "requested" "required")) -}}
{{- fail (printf "security.tls.clientAuth %q: use none, requested or required" .tls.clientAuth) -}}
{{- end -}}
{{- if include "strata.saslInUse" $ -}}
{{- if not .sasl.mechanisms -}}
{{- fail "security.sasl.mechanisms: name at least one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN, OAUTHBEARER" -}}
{{- end -}}
{{- range .sasl.mechanisms -}}
{{- if not (has (upper .) (list "SCRAM-SHA-256" "SCRAM-SHA-512" "PLAIN" "OAUTHBEARER")) -}}
{{- fail (printf "security.sasl.mechanisms: %q is not SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER" .) -}}
{{- end -}}
{{- end -}}
{{- if and (has "OAUTHBEARER" (splitList "," (include "strata.saslMechanisms" $))) (not (regexMatch "^(https?|file)://" .sasl.oauthbearer.jwksUrl)) -}}
{{- fail "security.sasl.oauthbearer.jwksUrl: OAUTHBEARER needs the token issuer's JWKS (https://, http:// or file://)" -}}
{{- end -}}
{{- if and .sasl.users.existingSecret (not .sasl.users.key) -}}
{{- fail "security.sasl.users.key: name the key of the users file in security.sasl.users.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if not (has .authorization.authorizer (list "acl" "none")) -}}
{{- fail (printf "security.authorization.authorizer %q: use acl or none" .authorization.authorizer) -}}
{{- end -}}
{{- range .authorization.superUsers -}}
{{- if not (regexMatch "^[A-Za-z]+:[^;]+$" .) -}}
{{- fail (printf "security.authorization.superUsers: %q is not a principal such as User:admin" .) -}}
{{- end -}}
{{- end -}}
{{- if not (and .admin.existingSecret .admin.key) -}}
{{- fail "security.admin.existingSecret: with security.enabled the admin API (which can delete topics and stop brokers) requires a token; create a Secret holding one (kubectl create secret generic strata-admin-token --from-literal=token=$(openssl rand -hex 32)) and name it here" -}}
{{- end -}}
{{- if and .internalListener.enabled (ne .authorization.authorizer "acl") -}}
{{- fail "security.internalListener: needs security.authorization.authorizer=acl (a client without a certificate is User:ANONYMOUS on that listener)" -}}
{{- end -}}
{{- if and .internalListener.enabled (eq (include "strata.clientAuth" $) "none") -}}
{{- fail "security.internalListener: its clients authenticate with certificates; security.tls.clientAuth must be requested or required" -}}
{{- end -}}
{{- else if or .tls.existingSecret .tls.certManager.enabled .sasl.users.existingSecret .admin.existingSecret .authorization.acls .authorization.superUsers .internalListener.enabled -}}
{{- fail "security: TLS, SASL users, ACLs, super users, the admin token and the internal listener apply only with security.enabled=true" -}}
{{- end -}}
{{- if and .etcd.tls.existingSecret (not .etcd.tls.caKey) -}}
{{- fail "security.etcd.tls.caKey: name the key of the etcd CA in security.etcd.tls.existingSecret" -}}
{{- end -}}
{{- if and .etcd.tls.existingSecret (ne (empty .etcd.tls.certKey) (empty .etcd.tls.keyKey)) -}}
{{- fail "security.etcd.tls: set both certKey and keyKey (a client certificate) or neither" -}}
{{- end -}}
{{- if ne (empty .etcd.username) (empty .etcd.password.existingSecret) -}}
{{- fail "security.etcd: set both username and password.existingSecret, or neither" -}}
{{- end -}}
{{- if and (or .etcd.tls.existingSecret .etcd.username) (not $.Values.metadata.externalEndpoints) -}}
{{- fail "security.etcd: the chart's own etcd has no TLS and no users; set metadata.externalEndpoints to an etcd that has them" -}}
{{- end -}}
{{- if and .objectStoreCa.existingSecret .objectStoreCa.existingConfigMap -}}
{{- fail "security.objectStoreCa: set existingSecret or existingConfigMap, not both" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The strata.toml lines of security.enabled: the Kafka listeners (replacing `listen`),
TLS, SASL, the authorizer and the admin token. Paths are where the statefulset mounts
the Secrets. */}}
{{- define "strata.securitySettings" -}}
{{- $dir := include "strata.securityDir" . -}}
{{- with .Values.security -}}
{{- $listeners := list (printf "CLIENT://0.0.0.0:%d" ($.Values.ports.kafka | int)) -}}
{{- $map := list (printf "CLIENT:%s" (upper .protocol)) -}}
{{- if .internalListener.enabled -}}
{{- $listeners = append $listeners (printf "INTERNAL://0.0.0.0:%d" ($.Values.ports.kafkaInternal | int)) -}}
{{- $map = append $map "INTERNAL:SSL" -}}
{{- end -}}
{{- if include "strata.externalEnabled" $ -}}
{{- $listeners = append $listeners (printf "EXTERNAL://0.0.0.0:%d" ($.Values.externalAccess.containerPort | int)) -}}
{{- $map = append $map (printf "EXTERNAL:%s" (include "strata.externalProtocol" $)) -}}
{{- end -}}
# Security (values.yaml `security`). `listeners` replaces `listen`; each broker's
# advertised_listeners comes from start.sh.
listeners = {{ join "," $listeners | quote }}
listener_security_protocol_map = {{ join "," $map | quote }}
# The brokers' certificate, from Secret {{ include "strata.tlsSecret" $ }} mounted as a directory
# (the broker reloads renewed files). The admin and replication listeners serve it too;
# replication requires the peer's certificate, checked against ssl_ca_file.
ssl_cert_file = {{ printf "%s/tls/%s" $dir .tls.certKey | quote }}
ssl_key_file = {{ printf "%s/tls/%s" $dir .tls.keyKey | quote }}
ssl_ca_file = {{ printf "%s/tls/%s" $dir .tls.caKey | quote }}
ssl_client_auth = {{ include "strata.clientAuth" $ | quote }}
{{- if .tls.principalMappingRules }}
ssl_principal_mapping_rules = {{ .tls.principalMappingRules | toJson }}
{{- end }}
{{- if include "strata.saslInUse" $ }}
sasl_enabled_mechanisms = {{ include "strata.saslMechanisms" $ | quote }}
{{- if .sasl.users.existingSecret }}
# Users created or updated at start (Secret {{ .sasl.users.existingSecret }}, key {{ .sasl.users.key }}).
sasl_bootstrap_users_file = {{ printf "%s/sasl/users" $dir | quote }}
{{- end }}
{{- if has "OAUTHBEARER" (splitList "," (include "strata.saslMechanisms" $)) }}
{{- with .sasl.oauthbearer }}
sasl_oauthbearer_jwks_url = {{ .jwksUrl | toJson }}
{{- if .expectedIssuer }}
sasl_oauthbearer_expected_issuer = {{ .expectedIssuer | toJson }}
{{- end }}
{{- if .expectedAudience }}
sasl_oauthbearer_expected_audience = {{ .expectedAudience | toJson }}
{{- end }}
sasl_oauthbearer_sub_claim_name = {{ .subClaimName | default "sub" | toJson }}
{{- end }}
{{- end }}
{{- if .sasl.connectionsMaxReauthMs }}
connections_max_reauth_ms = {{ .sasl.connectionsMaxReauthMs | int64 }}
{{- end }}
{{- end }}
authorizer = {{ .authorization.authorizer | quote }}
{{- if .authorization.superUsers }}
super_users = {{ join ";" .authorization.superUsers | quote }}
{{- end }}
allow_everyone_if_no_acl_found = {{ .authorization.allowEveryoneIfNoAclFound | default false }}
{{- if .authorization.acls }}
acl_bootstrap_file = "/etc/strata/acls.txt"
{{- end }}
# The admin API's bearer token (Secret {{ .admin.existingSecret }}, key {{ .admin.key }}).
admin_token_file = {{ printf "%s/admin/token" $dir | quote }}
{{- end -}}
{{- end -}}

{{/* The first broker pod's name (for commands in the notes). */}}
{{- define "strata.firstPod" -}}
{{- if .Values.zones -}}
{{- printf "%s-%s-0" (include "strata.fullname" .) (first .Values.zones) -}}
{{- else -}}
{{- printf "%s-0" (include "strata.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* A persistentVolumeClaimRetentionPolicy field: Retain or Delete; (list NAME VALUE). */}}
{{- define "strata.claimPolicy" -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 -}}
{{- if not (has $value (list "Retain" "Delete")) -}}
{{- fail (printf "%s %q: use Retain or Delete" $name $value) -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* storage.whenScaled (Retain when unset, as in a release upgraded with
--reuse-values from a chart before it). Delete with no brokers would delete every
broker's volume, and with it whatever is not in the bucket yet. */}}
{{- define "strata.whenScaled" -}}
{{- $policy := include "strata.claimPolicy" (list "storage.whenScaled" (.Values.storage.whenScaled | default "Retain")) -}}
{{- if and (eq $policy "Delete") (eq (include "strata.replicas" . | int) 0) -}}
{{- fail "replicas: 0 with storage.whenScaled Delete would delete every broker's volume, and with it what is not in the bucket yet (active segments, replication-factor-1 partitions). Set storage.whenScaled=Retain to stop every broker" -}}
{{- end -}}
{{- $policy -}}
{{- end -}}

{{/* Seconds the preStop hook waits for /safe-to-stop; 0 with rollGate off (or absent,
as in a release upgraded with --reuse-values from a chart before it). */}}
{{- define "strata.rollGateTimeout" -}}
{{- if (.Values.rollGate).enabled -}}{{- (.Values.rollGate).timeoutSeconds | default 300 | int64 -}}{{- else -}}0{{- end -}}
{{- end -}}

{{/* Brokers in the cluster: `replicas` × zones (1 in the evaluation install). */}}
{{- define "strata.brokerCount" -}}
{{- mul (include "strata.replicas" . | int) (max 1 (len .Values.zones)) -}}
{{- end -}}

{{/* The replication factor the defaults derive from: min(3, brokers) at install, and
on an upgrade the one the release's ConfigMap recorded (annotation
strata.io/derived-replication-factor), lowered to the broker count if that is smaller
but never raised: raising it would raise min_insync_replicas over topics created with
fewer replicas (acks=all refused NOT_ENOUGH_REPLICAS). With no broker (`replicas: 0`)
it stays as it was (3 if nothing was recorded). `lookup` answers nothing under `helm
template` and `--dry-run`: those render as an install. */}}
{{- define "strata.derivedReplicationFactor" -}}
{{- $brokers := include "strata.brokerCount" . | int -}}
{{- $recorded := 0 -}}
{{- $existing := lookup "v1" "ConfigMap" .Release.Namespace (include "strata.fullname" .) -}}
{{- if $existing -}}
{{- $recorded = index ($existing.metadata.annotations | default dict) "strata.io/derived-replication-factor" | default "0" | int -}}
{{- end -}}
{{- $base := ternary $recorded 3 (gt $recorded 0) -}}
{{- if gt $brokers 0 -}}{{- min $base $brokers -}}{{- else -}}{{- $base -}}{{- end -}}
{{- end -}}

{{/* Replication settings derived (strata.derivedReplicationFactor) for those `config`
leaves unset: default_replication_factor and offsets_topic_replication_factor the
factor, min_insync_replicas one below it (at least 1). Refuses any of them set in
`config` above the broker count: partitions could never be placed, or acks=all never
answered (not checked with no broker, `replicas: 0`). The evaluation install (one broker)
ignores them in `config`, as chart 0.2.0 did, so a release upgraded with --reuse-values
keeps rendering with 0.2.0's defaults (3 and 2). As TOML lines. */}}
{{- define "strata.replicationDefaults" -}}
{{- $brokers := include "strata.brokerCount" . | int -}}
{{- $factor := include "strata.derivedReplicationFactor" . | int -}}
{{- $derived := dict "default_replication_factor" $factor "offsets_topic_replication_factor" $factor "min_insync_replicas" (max 1 (sub $factor 1)) -}}
{{- $evaluation := include "strata.evaluation" . -}}
{{- range $name := list "default_replication_factor" "offsets_topic_replication_factor" "min_insync_replicas" -}}
{{- if and (hasKey $.Values.config $name) (not $evaluation) -}}
{{- $set := index $.Values.config $name | int -}}
{{- if and (gt $brokers 0) (gt $set $brokers) -}}
{{- fail (printf "config.%s: %d is more than the %d broker(s) this release runs (replicas × zones); no partition could be placed or acks=all answered. Leave it unset to derive it from the broker count, or add brokers" $name $set $brokers) -}}
{{- end -}}
{{- else }}
{{ $name }} = {{ index $derived $name }}
{{- end -}}
{{- end -}}
{{- end -}}
