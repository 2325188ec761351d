{{/* External access (values.yaml `externalAccess`): a third Kafka listener, EXTERNAL on
externalAccess.containerPort, that each broker advertises under an address clients
outside the cluster reach (a NodePort, its own load balancer, or a name the user routes). */}}

{{/* The placeholders a host pattern may use, and the pattern with them replaced. */}}
{{- define "strata.externalHost" -}}
{{- $b := .broker -}}
{{- .pattern | replace "{ordinal}" (toString $b.ordinal) | replace "{pod}" $b.pod | replace "{nodeId}" (toString $b.nodeId) | replace "{zone}" $b.zone -}}
{{- end -}}

{{/* Every broker's external address, as a JSON list in broker order (zone by zone, then
by ordinal): pod, zone, zoneIndex, ordinal, nodeId, host ("" for NodePort without a
name: start.sh advertises the node's address), port (the one advertised), nodePort and
autoAssignBand (the node port lies above the static band, where Kubernetes 1.29+
assigns ports automatically); and staticHigh, the static band's last port. Fails on
values that cannot work. */}}
{{- define "strata.externalBrokers" -}}
{{- $ext := .Values.externalAccess | default dict -}}
{{- $fullname := include "strata.fullname" . -}}
{{- $replicas := include "strata.replicas" . | int -}}
{{- $sets := list (dict "name" $fullname "zone" "" "index" 0) -}}
{{- if .Values.zones -}}
{{- $sets = list -}}
{{- range $i, $zone := .Values.zones -}}
{{- $sets = append $sets (dict "name" (printf "%s-%s" $fullname $zone) "zone" $zone "index" $i) -}}
{{- end -}}
{{- end -}}
{{- $total := mul (len $sets) $replicas -}}
{{- $type := $ext.type -}}
{{- $pattern := $ext.hostPattern -}}
{{- if and $ext.hosts $pattern -}}
{{- fail "externalAccess: set hostPattern or hosts, not both" -}}
{{- end -}}
{{- if and $ext.hosts (ne (len $ext.hosts) ($total | int)) -}}
{{- fail (printf "externalAccess.hosts: %d entries for %d brokers; give one per broker, in the order %s-0, %s-1, ...%s" (len $ext.hosts) ($total | int) (first $sets).name (first $sets).name (ternary " then the next zone's" "" (gt (len $sets) 1))) -}}
{{- end -}}
{{- range $i, $h := $ext.hosts -}}
{{- if not (and (kindIs "string" $h) (trim $h)) -}}
{{- fail (printf "externalAccess.hosts[%d] is empty; give every broker a DNS name or IPv4 address" $i) -}}
{{- end -}}
{{- end -}}
{{- if and (ne $type "NodePort") (not (or $ext.hosts $pattern)) -}}
{{- fail (printf "externalAccess.type %s: the brokers must advertise names clients resolve; set externalAccess.hostPattern (e.g. \"strata-{ordinal}.kafka.example.com\") or externalAccess.hosts (one per broker)" $type) -}}
{{- end -}}
{{- if $pattern -}}
{{- if not (regexMatch "^[A-Za-z0-9.{}-]+$" $pattern) -}}
{{- fail (printf "externalAccess.hostPattern %q: a DNS name with the placeholders {ordinal}, {pod}, {nodeId} or {zone}" $pattern) -}}
{{- end -}}
{{- $rest := regexReplaceAll "\\{(ordinal|pod|nodeId|zone)\\}" $pattern "" -}}
{{- if regexMatch "[{}]" $rest -}}
{{- fail (printf "externalAccess.hostPattern %q: the only placeholders are {ordinal}, {pod}, {nodeId} and {zone}" $pattern) -}}
{{- end -}}
{{- if and (contains "{zone}" $pattern) (not $.Values.zones) -}}
{{- fail (printf "externalAccess.hostPattern %q: {zone} needs `zones`" $pattern) -}}
{{- end -}}
{{- /* NodePort tells brokers apart by port: one name for every node works there. */ -}}
{{- if and $.Values.zones (ne $type "NodePort") (not (regexMatch "\\{(pod|nodeId|zone)\\}" $pattern)) -}}
{{- fail (printf "externalAccess.hostPattern %q: with zones, ordinals repeat in each zone; use {pod}, {nodeId} or {zone} (e.g. \"{pod}.kafka.example.com\")" $pattern) -}}
{{- end -}}
{{- if and (gt ($total | int) 1) (ne $type "NodePort") (not (regexMatch "\\{(ordinal|pod|nodeId)\\}" $pattern)) -}}
{{- fail (printf "externalAccess.hostPattern %q: every broker needs its own address; use {ordinal}, {pod} or {nodeId}" $pattern) -}}
{{- end -}}
{{- end -}}
{{- $nodePorts := $ext.nodePort.ports -}}
{{- $rangeLow := 0 -}}
{{- $rangeHigh := 0 -}}
{{- $staticHigh := 0 -}}
{{- if eq $type "NodePort" -}}
{{- $range := toString $ext.nodePort.range -}}
{{- if not (regexMatch "^[0-9]+-[0-9]+$" $range) -}}
{{- fail (printf "externalAccess.nodePort.range %q: the API server's --service-node-port-range, LOW-HIGH (default 30000-32767)" $range) -}}
{{- end -}}
{{- $rangeLow = index (splitList "-" $range) 0 | int -}}
{{- $rangeHigh = index (splitList "-" $range) 1 | int -}}
{{- if or (gt $rangeLow $rangeHigh) (lt $rangeLow 1) (gt $rangeHigh 65535) -}}
{{- fail (printf "externalAccess.nodePort.range %q: LOW-HIGH with 1 <= LOW <= HIGH <= 65535" $range) -}}
{{- end -}}
{{- /* KEP-3668 (Kubernetes 1.29+): node ports are auto-assigned from the upper band
first; the lower min(max(16, size/32), 128) ports are left for fixed ones. */ -}}
{{- $staticHigh = sub (add $rangeLow (min 128 (max 16 (div (add1 (sub $rangeHigh $rangeLow)) 32)))) 1 -}}
{{- if and $nodePorts (ne (len $nodePorts) ($total | int)) -}}
{{- fail (printf "externalAccess.nodePort.ports: %d entries for %d brokers; give one per broker, or none to use nodePort.base" (len $nodePorts) ($total | int)) -}}
{{- end -}}
{{- if and (not $nodePorts) (gt $replicas ($ext.nodePort.zoneOffset | int)) -}}
{{- fail (printf "externalAccess.nodePort.zoneOffset %d: fewer than the %d brokers per zone; raise it or list nodePort.ports" ($ext.nodePort.zoneOffset | int) $replicas) -}}
{{- end -}}
{{- end -}}
{{- $brokers := list -}}
{{- $index := 0 -}}
{{- range $set := $sets -}}
{{- range $ordinal := until $replicas -}}
{{- $b := dict "pod" (printf "%s-%d" $set.name $ordinal) "zone" $set.zone "zoneIndex" $set.index "ordinal" $ordinal "nodeId" (add (mul $set.index 1000) $ordinal) -}}
{{- $host := "" -}}
{{- if $ext.hosts -}}
{{- $host = index $ext.hosts $index | toString -}}
{{- else if $pattern -}}
{{- $host = include "strata.externalHost" (dict "pattern" $pattern "broker" $b) -}}
{{- end -}}
{{- if and $host (not (regexMatch "^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$" $host)) -}}
{{- fail (printf "externalAccess: %q (broker %s) is not a DNS name or an IPv4 address" $host $b.pod) -}}
{{- end -}}
{{- $_ := set $b "host" $host -}}
{{- $port := $ext.port | int -}}
{{- if eq $type "NodePort" -}}
{{- $nodePort := add ($ext.nodePort.base | int) (mul $set.index ($ext.nodePort.zoneOffset | int)) $ordinal -}}
{{- if $nodePorts -}}{{- $nodePort = index $nodePorts $index | int -}}{{- end -}}
{{- if or (lt ($nodePort | int) $rangeLow) (gt ($nodePort | int) $rangeHigh) -}}
{{- fail (printf "externalAccess.nodePort: %d (broker %s) is outside the node-port range %d-%d (externalAccess.nodePort.range: the API server's --service-node-port-range)" ($nodePort | int) $b.pod $rangeLow $rangeHigh) -}}
{{- end -}}
{{- $_ := set $b "nodePort" ($nodePort | int) -}}
{{- $_ := set $b "autoAssignBand" (gt ($nodePort | int) $staticHigh) -}}
{{- $port = $nodePort | int -}}
{{- end -}}
{{- $_ := set $b "port" $port -}}
{{- $brokers = append $brokers $b -}}
{{- $index = add1 $index -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $brokers -}}
{{- $key := printf "%s:%d" .host (.port | int) -}}
{{- if and .host (hasKey $seen $key) -}}
{{- fail (printf "externalAccess: brokers %s and %s would both advertise %s" (get $seen $key) .pod $key) -}}
{{- end -}}
{{- $_ := set $seen $key .pod -}}
{{- if and (eq $type "NodePort") (hasKey $seen (printf "nodePort %d" (.nodePort | int))) -}}
{{- fail (printf "externalAccess.nodePort: brokers %s and %s both get node port %d" (get $seen (printf "nodePort %d" (.nodePort | int))) .pod (.nodePort | int)) -}}
{{- end -}}
{{- $_ := set $seen (printf "nodePort %d" (.nodePort | int)) .pod -}}
{{- if and (eq $type "NodePort") (eq $ext.service.externalTrafficPolicy "Local") .host -}}
{{- if hasKey $seen (printf "host %s" .host) -}}
{{- fail (printf "externalAccess.service.externalTrafficPolicy Local: brokers %s and %s both advertise %s, but a node forwards only to a broker it runs; give each broker a name that follows its node (hostPattern with {pod}, {ordinal} or {nodeId}), or use Cluster" (get $seen (printf "host %s" .host)) .pod .host) -}}
{{- end -}}
{{- $_ := set $seen (printf "host %s" .host) .pod -}}
{{- end -}}
{{- end -}}
{{- dict "brokers" $brokers "staticHigh" $staticHigh | toJson -}}
{{- end -}}

{{/* "true" when externalAccess.enabled. `| default dict`: a release upgraded with
--reuse-values from chart 0.2.0, which had no `externalAccess` section, has none in its
values; one that then sets externalAccess.enabled=true has only that key, and is refused
with the fix rather than failing on a nil further on. Every template asks this before it
reads the other externalAccess values. */}}
{{- define "strata.externalEnabled" -}}
{{- $ext := .Values.externalAccess | default dict -}}
{{- if $ext.enabled -}}
{{- $nodePort := $ext.nodePort | default dict -}}
{{- if not (and (hasKey $ext "type") (hasKey $ext "containerPort") (hasKey $ext "port") (hasKey $ext "protocol") (hasKey $nodePort "base") (hasKey $nodePort "zoneOffset") (hasKey $nodePort "range") (kindIs "map" $ext.service) (kindIs "map" $ext.networkPolicy)) -}}
{{- fail "externalAccess.enabled: externalAccess.type, containerPort, port, protocol, nodePort (base, zoneOffset, range), service or networkPolicy is missing; a release from chart 0.2.0 upgraded with --reuse-values lacks the new defaults: upgrade with --reset-then-reuse-values (docs/upgrading.md)" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The external listener's security protocol, upper case. */}}
{{- define "strata.externalProtocol" -}}
{{- upper (.Values.externalAccess | default dict).protocol -}}
{{- end -}}

{{/* Refuses externalAccess values that cannot work or are unsafe; renders nothing. */}}
{{- define "strata.validateExternal" -}}
{{- with .Values.externalAccess -}}
{{- if include "strata.externalEnabled" $ -}}
{{- $protocol := include "strata.externalProtocol" $ -}}
{{- if not (has .type (list "NodePort" "LoadBalancer" "Domain")) -}}
{{- fail (printf "externalAccess.type %q: use NodePort, LoadBalancer or Domain" .type) -}}
{{- end -}}
{{- if not (has $protocol (list "SASL_SSL" "SSL" "SASL_PLAINTEXT" "PLAINTEXT")) -}}
{{- fail (printf "externalAccess.protocol %q: use SASL_SSL (the default), SSL, or with allowPlaintext SASL_PLAINTEXT or PLAINTEXT" .protocol) -}}
{{- end -}}
{{- $tls := has $protocol (list "SASL_SSL" "SSL") -}}
{{- if and (not $tls) (not .allowPlaintext) -}}
{{- fail (printf "externalAccess.protocol %s: the external listener carries traffic outside the cluster unencrypted; use SASL_SSL or SSL (with security.enabled), or set externalAccess.allowPlaintext=true to accept that" $protocol) -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" $protocol) (not $.Values.security.enabled) -}}
{{- fail (printf "externalAccess.protocol %s: needs security.enabled=true (a certificate, SASL users and an admin token; docs/operations.md, \"Security on Kubernetes\"), or allowPlaintext=true with protocol PLAINTEXT" $protocol) -}}
{{- end -}}
{{- if and (eq $protocol "SSL") (not $.Values.security.enabled) -}}
{{- fail "externalAccess.protocol SSL: needs security.enabled=true (the brokers' certificate and CA)" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" $protocol) $.Values.security.enabled (eq (include "strata.clientAuth" $) "required") -}}
{{- fail (printf "externalAccess.protocol %s with ssl_client_auth=required: SASL clients would need a certificate too; set security.tls.clientAuth=requested" $protocol) -}}
{{- end -}}
{{- if and (eq $protocol "SSL") $.Values.security.enabled (eq (include "strata.clientAuth" $) "none") -}}
{{- fail "externalAccess.protocol SSL: its clients authenticate with certificates; security.tls.clientAuth must be requested or required" -}}
{{- end -}}
{{- $port := .containerPort | int -}}
{{- $others := list ($.Values.ports.kafka | int) ($.Values.ports.replication | int) ($.Values.ports.http | int) ($.Values.ports.admin | int) -}}
{{- if and $.Values.security.enabled $.Values.security.internalListener.enabled -}}
{{- $others = append $others ($.Values.ports.kafkaInternal | int) -}}
{{- end -}}
{{- if has $port $others -}}
{{- fail (printf "externalAccess.containerPort %d: another listener of the broker uses it (see `ports`)" $port) -}}
{{- end -}}
{{- $brokers := (include "strata.externalBrokers" $ | fromJson).brokers -}}
{{- if and $tls (eq .type "NodePort") -}}
{{- range $brokers -}}
{{- if not .host -}}
{{- fail "externalAccess.type NodePort with TLS: a certificate cannot name node addresses that change; set externalAccess.hostPattern or hosts to DNS names that point at the brokers' nodes" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .nodePort.ports (ne .type "NodePort") -}}
{{- fail (printf "externalAccess.nodePort.ports: apply only with type NodePort; type %s advertises externalAccess.port (%d) for every broker" .type (.port | int)) -}}
{{- end -}}
{{- else if or .hosts .hostPattern (.nodePort | default dict).ports -}}
{{- fail "externalAccess: hosts, hostPattern and nodePort.ports apply only with externalAccess.enabled=true" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* start.sh lines that set external_host and external_port for this pod. */}}
{{- define "strata.externalStartLines" -}}
{{- $ext := .Values.externalAccess | default dict -}}
{{- $brokers := (include "strata.externalBrokers" . | fromJson).brokers -}}
# The external listener (externalAccess, type {{ $ext.type }}): the address clients outside
# the cluster use for this broker.
{{- if or $ext.hosts $ext.nodePort.ports }}
# This pod's line of the ConfigMap {{ include "strata.externalAddressesName" . }} (kept out of this one,
# so that extending the lists for a scale-up restarts no broker).
addresses="${STRATA_EXTERNAL_ADDRESSES:-/etc/strata-external/addresses}"
if [ ! -r "$addresses" ]; then
  echo "start.sh: cannot read $addresses (ConfigMap {{ include "strata.externalAddressesName" . }})" >&2
  exit 2
fi
external_host=""
external_port=""
while read -r pod address port; do
  if [ "$pod" = "$POD_NAME" ]; then
    external_host="$address"
    external_port="$port"
  fi
done < "$addresses"
if [ -z "$external_host" ] || [ -z "$external_port" ]; then
  echo "start.sh: externalAccess names no address for pod '$POD_NAME': give every broker an entry in externalAccess.{{ if $ext.hosts }}hosts{{ else }}nodePort.ports{{ end }} (one per broker, in pod order) and upgrade the release" >&2
  exit 2
fi
if [ "$external_host" = "-" ]; then
  # The address of the node the pod runs on (status.hostIP).
  external_host="${HOST_IP}"
fi
{{- else }}
{{- if $ext.hostPattern }}
external_host="{{ $ext.hostPattern | replace "{ordinal}" "${ordinal}" | replace "{pod}" "${POD_NAME}" | replace "{nodeId}" "${STRATA_NODE_ID}" | replace "{zone}" "${STRATA_RACK}" }}"
{{- else }}
# No name given: the address of the node the pod runs on (status.hostIP).
external_host="${HOST_IP}"
{{- end }}
{{- if eq $ext.type "NodePort" }}
# nodePort.base + zone index (node id base / 1000) × nodePort.zoneOffset + ordinal.
external_port=$(({{ $ext.nodePort.base | int }} + STRATA_NODE_ID_BASE / 1000 * {{ $ext.nodePort.zoneOffset | int }} + ordinal))
{{- else }}
external_port={{ $ext.port | int }}
{{- end }}
{{- end }}
if [ -z "$external_host" ]; then
  echo "start.sh: no external address for pod '$POD_NAME'" >&2
  exit 2
fi
{{- end -}}

{{/* The ConfigMap of each broker's listed external address (external-addresses.yaml). */}}
{{- define "strata.externalAddressesName" -}}
{{- printf "%s-external-addresses" (include "strata.fullname" .) -}}
{{- end -}}

{{/* "true" when start.sh needs HOST_IP (NodePort advertising the node's address). */}}
{{- define "strata.externalNeedsHostIp" -}}
{{- with .Values.externalAccess -}}
{{- if and (include "strata.externalEnabled" $) (eq .type "NodePort") (not .hostPattern) -}}
{{- if not .hosts -}}true{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
