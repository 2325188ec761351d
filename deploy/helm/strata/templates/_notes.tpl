{{/* The client configuration part of NOTES.txt with security.enabled. Placeholders
(<user>, <password>, ...) only: the chart never knows a password. */}}
{{- define "strata.securityNotes" -}}
{{- $bootstrap := printf "%s.%s.svc.%s:%d" (include "strata.fullname" .) .Release.Namespace .Values.clusterDomain (.Values.ports.kafka | int) -}}
{{- $secret := include "strata.tlsSecret" . -}}
{{- $dir := include "strata.securityDir" . -}}
{{- $protocol := upper .Values.security.protocol -}}
{{- $mechanisms := splitList "," (include "strata.saslMechanisms" .) -}}
{{- $mechanism := first $mechanisms -}}
{{- with .Values.security -}}
Security: clients connect with {{ $protocol }}{{ if eq $protocol "SASL_SSL" }} (SASL mechanisms: {{ join ", " $mechanisms }}){{ end }};
brokers replicate over mutual TLS; the admin API serves TLS and requires a token.
{{- if .tls.certManager.enabled }}
The brokers' certificate: Certificate {{ include "strata.fullname" $ }}, issued by {{ .tls.certManager.issuerRef.kind }} {{ .tls.certManager.issuerRef.name }} into Secret {{ $secret }}.
{{- else }}
The brokers' certificate: Secret {{ $secret }} (keys {{ .tls.certKey }}, {{ .tls.keyKey }}, {{ .tls.caKey }}).
{{- end }}

Clients trust the CA that signed it (a certificate, not a secret):
  kubectl -n {{ $.Release.Namespace }} get secret {{ $secret }} -o jsonpath='{.data.{{ .tls.caKey | replace "." "\\." }}}' | base64 -d > ca.crt
{{- if eq $protocol "SSL" }}

Each client presents a certificate signed by that CA (ssl_client_auth={{ include "strata.clientAuth" $ }}); its
subject{{ if .tls.principalMappingRules }}, mapped by security.tls.principalMappingRules,{{ end }} is its user name (User:<subject>).

librdkafka clients (confluent-kafka for Python, Go and .NET; kcat):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SSL
  ssl.ca.location=ca.crt
  ssl.certificate.location=client.crt
  ssl.key.location=client.key

Java clients (client.properties; client.pem holds the client's key, PKCS#8, then its certificate chain):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SSL
  ssl.truststore.type=PEM
  ssl.truststore.location=ca.crt
  ssl.keystore.type=PEM
  ssl.keystore.location=client.pem

kcat:
  kcat -b {{ $bootstrap }} -X security.protocol=SSL -X ssl.ca.location=ca.crt \
    -X ssl.certificate.location=client.crt -X ssl.key.location=client.key -L
{{- else if eq $mechanism "OAUTHBEARER" }}

Clients log in with a token from your identity provider (checked against {{ .sasl.oauthbearer.jwksUrl }};
the {{ .sasl.oauthbearer.subClaimName }} claim names the user).

librdkafka clients (confluent-kafka for Python, Go and .NET; kcat):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SASL_SSL
  sasl.mechanism=OAUTHBEARER
  sasl.oauthbearer.method=oidc
  sasl.oauthbearer.token.endpoint.url=<token endpoint URL>
  sasl.oauthbearer.client.id=<client id>
  sasl.oauthbearer.client.secret=<client secret>
  ssl.ca.location=ca.crt

Java clients (client.properties):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SASL_SSL
  sasl.mechanism=OAUTHBEARER
  sasl.oauthbearer.token.endpoint.url=<token endpoint URL>
  sasl.login.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler
  sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId="<client id>" clientSecret="<client secret>";
  ssl.truststore.type=PEM
  ssl.truststore.location=ca.crt

kcat:
  kcat -b {{ $bootstrap }} -X security.protocol=SASL_SSL -X sasl.mechanisms=OAUTHBEARER \
    -X sasl.oauthbearer.method=oidc -X sasl.oauthbearer.token.endpoint.url=<token endpoint URL> \
    -X sasl.oauthbearer.client.id=<client id> -X sasl.oauthbearer.client.secret=<client secret> \
    -X ssl.ca.location=ca.crt -L
{{- else }}
{{- $module := ternary "org.apache.kafka.common.security.plain.PlainLoginModule" "org.apache.kafka.common.security.scram.ScramLoginModule" (eq $mechanism "PLAIN") }}
{{- if .sasl.users.existingSecret }}

Users: created or updated at each broker start from Secret {{ .sasl.users.existingSecret }} (key {{ .sasl.users.key }}, lines
NAME:MECHANISM:PASSWORD; restart the brokers after changing it: kubectl rollout restart statefulset),
and with Kafka's AlterUserScramCredentials (kafka-configs --alter --entity-type users ...).
{{- else }}

Users: security.sasl.users.existingSecret is empty, so no user is created at start; a new
cluster has none until a super user adds them with AlterUserScramCredentials.
{{- end }}

librdkafka clients (confluent-kafka for Python, Go and .NET; kcat):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SASL_SSL
  sasl.mechanism={{ $mechanism }}
  sasl.username=<user>
  sasl.password=<password>
  ssl.ca.location=ca.crt

Java clients (client.properties):
  bootstrap.servers={{ $bootstrap }}
  security.protocol=SASL_SSL
  sasl.mechanism={{ $mechanism }}
  sasl.jaas.config={{ $module }} required username="<user>" password="<password>";
  ssl.truststore.type=PEM
  ssl.truststore.location=ca.crt

kcat:
  kcat -b {{ $bootstrap }} -X security.protocol=SASL_SSL -X sasl.mechanisms={{ $mechanism }} \
    -X sasl.username=<user> -X sasl.password=<password> -X ssl.ca.location=ca.crt -L
{{- end }}
{{- if gt (len $mechanisms) 1 }}
(The brokers also accept {{ join ", " (rest $mechanisms) }}.)
{{- end }}
{{- if .internalListener.enabled }}

Internal listener (SSL, client certificates): <pod>.{{ include "strata.headless" $ }}.{{ $.Release.Namespace }}.svc.{{ $.Values.clusterDomain }}:{{ $.Values.ports.kafkaInternal }},
reachable from the brokers and networkPolicy.adminFrom.
{{- end }}

Authorization: authorizer={{ .authorization.authorizer }}
{{- if eq .authorization.authorizer "acl" }}; super users: {{ if .authorization.superUsers }}{{ join ", " .authorization.superUsers }}{{ else }}none{{ end }}; {{ len .authorization.acls }} ACL(s) created at start.
{{- if not (or .authorization.superUsers .authorization.acls .authorization.allowEveryoneIfNoAclFound) }}
No super user and no ACL: every client request is refused until ACLs exist. Set
security.authorization.superUsers (e.g. [User:admin]) or security.authorization.acls.
{{- end }}
{{- else }} (every authenticated client may do anything).
{{- end }}

The admin API serves TLS and requires the token in Secret {{ .admin.existingSecret }} (key {{ .admin.key }}).
In a broker pod the CLI finds both (STRATA_ADMIN_CA, STRATA_ADMIN_TOKEN_FILE):
  kubectl -n {{ $.Release.Namespace }} exec {{ include "strata.firstPod" $ }} -- strata status
From elsewhere (a pod networkPolicy.adminFrom admits): strata status --admin <pod>.{{ include "strata.headless" $ }}.{{ $.Release.Namespace }}.svc.{{ $.Values.clusterDomain }}:{{ $.Values.ports.admin }} \
    --ca ca.crt --token-file <file holding the token>
{{- end -}}
{{- end -}}

{{/* The external listener's part of NOTES.txt (externalAccess): where clients outside
the cluster bootstrap, and their settings. Placeholders only, never a secret. */}}
{{- define "strata.externalNotes" -}}
{{- $ext := .Values.externalAccess | default dict -}}
{{- $brokers := (include "strata.externalBrokers" . | fromJson).brokers -}}
{{- $protocol := include "strata.externalProtocol" . -}}
{{- $addresses := list -}}
{{- range $brokers -}}
{{- $addresses = append $addresses (printf "%s:%d" (.host | default "<node address>") (.port | int)) -}}
{{- end -}}
{{- $bootstrap := join "," $addresses -}}
{{- $mechanism := first (splitList "," (include "strata.saslMechanisms" .)) -}}
External access ({{ $ext.type }}): the EXTERNAL listener, {{ $protocol }}, on container port {{ $ext.containerPort }}.
Each broker advertises its own external address there; a client outside the cluster must
reach every one of them:
{{- range $brokers }}
  {{ .pod }} (node id {{ .nodeId }}): {{ .host | default "<its node's address>" }}:{{ .port | int }}
{{- end }}
{{- if eq $ext.type "LoadBalancer" }}
Each broker has its own load balancer (Service <pod>-external); point each name above at
its broker's load balancer address (external-dns does it from the Services' annotations):
  kubectl -n {{ .Release.Namespace }} get services -l app.kubernetes.io/instance={{ .Release.Name }},strata.dev/service=external
{{- else if eq $ext.type "NodePort" }}
Each broker has its own node port on every node (Service <pod>-external).
{{- $dynamic := list -}}
{{- range $brokers }}{{ if .autoAssignBand }}{{ $dynamic = append $dynamic (toString (.nodePort | int)) }}{{ end }}{{ end }}
{{- if $dynamic }}
WARNING: node ports {{ join ", " $dynamic }} lie above {{ (include "strata.externalBrokers" . | fromJson).staticHigh | int }}, in the band Kubernetes (1.29+)
assigns to other Services automatically: one may take a broker's port first, and that
broker's Service then fails to create. Move externalAccess.nodePort.base into the static band.
{{- end }}
{{- if not (or $ext.hosts $ext.hostPattern) }}
Brokers advertise the internal address of the node they run on (status.hostIP): clients
must reach the nodes' addresses (same VPC), and a broker's address changes when it moves.
{{- end }}
{{- else }}
Every broker advertises port {{ $ext.port | int }}, so your proxy or ingress tells them apart by name
(TLS SNI, passed through) or gives each name its own address. Route each name above to
its broker's ClusterIP Service <pod>-external, port {{ $ext.port | int }}:
  kubectl -n {{ .Release.Namespace }} get services -l app.kubernetes.io/instance={{ .Release.Name }},strata.dev/service=external
{{- end }}
{{- if has $protocol (list "SASL_SSL" "SSL") }}
The brokers' certificate must name every external host above{{ if .Values.security.tls.certManager.enabled }} (the chart's Certificate does){{ else }} (Secret {{ include "strata.tlsSecret" . }} is yours: add them as subject alternative names){{ end }};
clients check it against the CA in ca.crt.
{{- end }}

Clients outside the cluster (librdkafka: confluent-kafka, kcat -X; Java clients: the
same keys as in client.properties above, with this bootstrap.servers and security.protocol):
  bootstrap.servers={{ $bootstrap }}
  security.protocol={{ $protocol }}
{{- if hasPrefix "SASL_" $protocol }}
  sasl.mechanism={{ $mechanism }}
{{- if eq $mechanism "OAUTHBEARER" }}
  sasl.oauthbearer.method=oidc
  sasl.oauthbearer.token.endpoint.url=<token endpoint URL>
  sasl.oauthbearer.client.id=<client id>
  sasl.oauthbearer.client.secret=<client secret>
{{- else }}
  sasl.username=<user>
  sasl.password=<password>
{{- end }}
{{- end }}
{{- if has $protocol (list "SASL_SSL" "SSL") }}
  ssl.ca.location=ca.crt
{{- end }}
{{- if eq $protocol "SSL" }}
  ssl.certificate.location=client.crt
  ssl.key.location=client.key
{{- end }}
{{- if not (has $protocol (list "SASL_SSL" "SSL")) }}

WARNING: externalAccess.allowPlaintext: the EXTERNAL listener has no TLS; records{{ if hasPrefix "SASL_" $protocol }} and passwords{{ end }}
cross the network in the clear.
{{- end }}
{{- if .Values.networkPolicy.enabled }}

NetworkPolicy: external port {{ $ext.containerPort }} open to {{ if $ext.networkPolicy.allowedCidrs }}{{ join ", " $ext.networkPolicy.allowedCidrs }}{{ else }}everyone{{ end }}.
{{- if and $ext.networkPolicy.allowedCidrs (eq $ext.type "LoadBalancer") }}
The load balancers' health checks (and, with NLB IP targets, every client connection)
come from the load balancers' private addresses: externalAccess.networkPolicy.allowedCidrs
must include the VPC CIDR or the load balancers' subnets, or no broker passes its health
check. Restrict clients with externalAccess.service.loadBalancerSourceRanges.
{{- end }}
{{- end }}
{{- end -}}
