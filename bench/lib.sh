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

# service NAME PORT [POD]: Service NAME (port 80) in namespace $NS (default bench) with one endpoint,
# 127.0.0.1:PORT; with POD, the endpoint's targetRef names that Pod (for the mesh).
service() {
  local target="" ns=${NS:-bench}
  [ -n "${3:-}" ] && target=", targetRef: {kind: Pod, name: $3, namespace: $ns}"
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: $ns}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: $ns, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $2}]
endpoints: [{addresses: [127.0.0.1]$target}]
---
YAML
}

# The backend objects and one HTTPRoute sending everything to it: the proxied load's config.
catch_all_objects() {
  backend_objects
  cat <<'YAML'
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all, namespace: bench}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: backend, port: 80}]}]
YAML
}

# start_weir BINARY CONFIG_DIR PORT ADMIN_PORT [FLAG...]: weir-ingress alone on $PROXY_CPU with
# one worker and no access log (and the flags given), its output in $work/weir-PORT.log; waits
# until ready. Sets WEIR_PID and adds it to the caller's `pids` array.
start_weir() {
  taskset -c "$PROXY_CPU" "$1" --config-dir "$2" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" \
    --workers 1 --access-log off "${@:5}" > "$work/weir-$3.log" 2>&1 &
  WEIR_PID=$!
  pids+=("$WEIR_PID")
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$4/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "weir-ingress did not become ready; see $work/weir-$3.log"; exit 1
}

# with_peers "backend nginx-proxy ...": starts those peer-kit servers, and on exit stops them and
# every process in the caller's `pids` array; raises the open-file limit for the load.
with_peers() {
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true' EXIT
  PEERS="$1" "$kit/scripts/start_peers.sh" >/dev/null
  ulimit -n "$(ulimit -Hn)"
}

# nginx_http DIR PORT [HTTP_LINES] [LOCATION_LINES]: the `http` block of an nginx proxy as the
# peer kit configures its own (upstream keep-alive to the backend, no access log), listening
# on PORT, its temporary files under DIR/tmp; the lines given are added to the block and to
# its `location /`.
nginx_http() {
  mkdir -p "$1/tmp"
  cat <<CONF
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    upstream backend {
        server 127.0.0.1:18080;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }
${3:-}
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
${4:-}
        }
    }
}
CONF
}

# start_nginx_fields PORT: a second nginx proxy, configured as the peer kit's (one worker on
# $PROXY_CPU, upstream keep-alive) but doing the header work the issue asks of Weir: the
# client's Host sent on, X-Forwarded-For/-Proto/-Host, an x-request-id made and returned, a
# traceparent started (trace id the request id, span id its first 16 digits: nginx has no
# other random source). The kit's nginx sends only `Host: backend`, so this one shows what
# those fields cost each side. Sets NGINX_FIELDS_PID and adds it to the caller's `pids`.
start_nginx_fields() {
  local dir=$work/nginx-fields
  mkdir -p "$dir"
  {
    cat <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; use epoll; }
CONF
    nginx_http "$dir" "$1" '    map $request_id $span_id {
        "~^(?<span>.{16})" $span;
    }' '            proxy_set_header Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header traceparent "00-$request_id-$span_id-01";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            add_header X-Request-Id $request_id always;'
  } > "$dir/nginx.conf"
  taskset -c "$PROXY_CPU" nginx -c "$dir/nginx.conf" -p "$dir" > "$dir/out.log" 2>&1 &
  NGINX_FIELDS_PID=$!
  pids+=("$NGINX_FIELDS_PID")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nginx with fields did not start; see $dir/error.log"; exit 1
}

# pod NAMESPACE NAME INBOUND_PORT: a meshed pod NAME-0 (ServiceAccount NAME) behind Service
# NAME, its endpoint its sidecar's inbound port.
pod() {
  NS=$1 service "$2" "$3" "$2-0"
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $2-0, namespace: $1, annotations: {weir.dev/injected: bench}}
spec: {serviceAccountName: $2, containers: [{name: app}]}
---
YAML
}
