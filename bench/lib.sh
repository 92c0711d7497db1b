# Sourced by every bench script once it has set $root: the peer kit (../shared/bench, or
# $WEIR_BENCH_KIT) with its common.sh, and the Kubernetes objects the scripts share.
kit=${WEIR_BENCH_KIT:-$root/../shared/bench}
[ -d "$kit" ] || { echo "peer kit not found at $kit (set WEIR_BENCH_KIT)"; exit 1; }
. "$kit/scripts/common.sh"

# The peer kit's backend (nginx on 127.0.0.1:18080) as the objects weir-ingress reads, in
# namespace `bench`, with a Gateway `gw` of class weir.
backend_objects() {
  cat <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 18080}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  gatewayClassName: weir
  listeners: [{name: http, protocol: HTTP, port: 80}]
YAML
}

# service NAME PORT [POD]: Service NAME (port 80) in namespace bench with one endpoint,
# 127.0.0.1:PORT; with POD, the endpoint's targetRef names that Pod (for the mesh).
service() {
  local target=""
  [ -n "${3:-}" ] && target=", targetRef: {kind: Pod, name: $3, namespace: bench}"
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: bench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: bench, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $2}]
endpoints: [{addresses: [127.0.0.1]$target}]
---
YAML
}
