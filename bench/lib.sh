# Sourced by every bench script once it has set $root: the peer kit (../shared/bench, or
# $WEIR_BENCH_KIT) with its common.sh, and the Kubernetes objects the scripts share.
kit=${WEIR_BENCH_KIT:-$root/../shared/bench}
[ -d "$kit" ] || { echo "peer kit not found at $kit (set WEIR_BENCH_KIT)"; exit 1; }
. "$kit/scripts/common.sh"

# The peer kit's backend (nginx on 127.0.0.1:18080) as the objects weir-ingress reads, in
# namespace `bench`, with a Gateway `gw` of class weir. With TLS=1, the Gateway also has an
# HTTPS listener serving the kit's ECDSA P-256 certificate (Secret bench-tls): the same one
# the peers serve.
backend_objects() {
  local https=""
  [ "${TLS:-0}" = 1 ] && https=", {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: bench-tls}]}}"
  cat <<YAML
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
  listeners: [{name: http, protocol: HTTP, port: 80}$https]
YAML
  [ "${TLS:-0}" = 1 ] || return 0
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: bench-tls, namespace: bench}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(sed 's/^/    /' "$CONF/tls/server.crt")
  tls.key: |
$(sed 's/^/    /' "$CONF/tls/server.key")
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
# one worker and its defaults (access log on) but for the flags given; its access log in
# $work/weir-PORT.log (a file, as a container runtime's log is; appended to, so that it may be
# emptied under it) and its own log in
# $work/weir-PORT.err; waits until ready. Sets WEIR_PID and adds it to the caller's `pids`.
start_weir() {
  taskset -c "$PROXY_CPU" "$1" --config-dir "$2" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" \
    --workers 1 "${@:5}" >> "$work/weir-$3.log" 2> "$work/weir-$3.err" &
  WEIR_PID=$!
  pids+=("$WEIR_PID")
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$4/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "weir-ingress did not become ready; see $work/weir-$3.err"; exit 1
}

# with_peers "backend nginx-proxy ...": starts those peer-kit servers, and on exit stops them and
# every process in the caller's `pids` array; raises the open-file limit for the load.
with_peers() {
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true' EXIT
  PEERS="$1" "$kit/scripts/start_peers.sh" >/dev/null
  ulimit -n "$(ulimit -Hn)"
}

# nginx_http DIR PORT [HTTP_LINES] [LOCATION_LINES] [SERVER_LINES]: the `http` block of an
# nginx proxy as the peer kit configures its own (upstream keep-alive to the backend, no access
# log), listening on PORT, its temporary files under DIR/tmp; the lines given are added to the
# block, to its `location /` and to its `server`.
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
        keepalive ${NGINX_KEEPALIVE:-64};
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }
${3:-}
    server {
        listen 127.0.0.1:$2 backlog=4096;
${5:-}
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

# The request fields Weir adds by default, as nginx adds them: the client's Host sent on,
# X-Forwarded-For/-Proto/-Host, an x-request-id made and returned, a traceparent started (trace
# id the request id, span id its first 16 digits: nginx has no other random source).
NGINX_SPAN='    map $request_id $span_id {
        "~^(?<span>.{16})" $span;
    }'
NGINX_FIELDS='            proxy_set_header Host $http_host;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header traceparent "00-$request_id-$span_id-01";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            add_header X-Request-Id $request_id always;'

# start_nginx NAME PORT HTTP_LINES LOCATION_LINES [SERVER_LINES]: an nginx proxy configured as
# the peer kit's (one worker on $PROXY_CPU, upstream keep-alive) with the lines given (see
# nginx_http), in $work/NAME; waits until it answers on PORT. Sets NGINX_PID and adds it to the
# caller's `pids`.
start_nginx() {
  local dir=$work/$1
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
    nginx_http "$dir" "$2" "$3" "$4" "${5:-}"
  } > "$dir/nginx.conf"
  taskset -c "$PROXY_CPU" nginx -c "$dir/nginx.conf" -p "$dir" > "$dir/out.log" 2>&1 &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nginx $1 did not start; see $dir/error.log"; exit 1
}

# start_nginx_fields PORT [H2C_PORT TLS_PORT]: nginx adding Weir's request fields (the kit's
# nginx sends only `Host: backend`), so this one shows what those fields cost each side; with
# no access log. With H2C_PORT and TLS_PORT, also on h2c and TLS, and keeping up to 1,024 idle
# backend connections: with 256 streams in flight over HTTP/2, the kit's 64 make nginx open and
# close a backend connection for most requests, which is not how anyone runs it. Sets
# NGINX_FIELDS_PID.
start_nginx_fields() {
  local listeners=""
  [ -n "${2:-}" ] && listeners=$(nginx_listeners "$2" "$3")
  NGINX_KEEPALIVE=1024 start_nginx nginx-fields "$1" "$NGINX_SPAN" "$NGINX_FIELDS" "$listeners"
  NGINX_FIELDS_PID=$NGINX_PID
}

# TLS and h2c listeners for start_nginx's SERVER_LINES: H2C_PORT TLS_PORT.
nginx_listeners() {
  echo "        listen 127.0.0.1:$1 http2 backlog=4096;
        listen 127.0.0.1:$2 ssl http2 backlog=4096;
        ssl_certificate $CONF/tls/server.crt;
        ssl_certificate_key $CONF/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;"
}

# start_nginx_log PORT H2C_PORT TLS_PORT: the production peer: nginx doing what Weir does by
# default — Weir's request fields and one JSON access line per request with the fields of
# Weir's line, buffered as nginx advises (`buffer=64k flush=1s`), to a file — on HTTP/1.1
# (PORT), h2c (H2C_PORT) and TLS with h2 and http/1.1 by ALPN (TLS_PORT), with the kit's
# certificate; 1,024 idle backend connections, as start_nginx_fields. Sets NGINX_LOG_PID.
start_nginx_log() {
  local dir=$work/nginx-log
  NGINX_KEEPALIVE=1024 start_nginx nginx-log "$1" "$NGINX_SPAN
    log_format weir escape=json '{\"time\":\"\$time_iso8601\",\"client\":\"\$remote_addr:\$remote_port\",'
        '\"protocol\":\"\$server_protocol\",\"method\":\"\$request_method\",\"host\":\"\$host\",\"path\":\"\$uri\",'
        '\"status\":\$status,\"backend\":\"backend\",\"endpoint\":\"\$upstream_addr\",'
        '\"duration_ms\":\$request_time,\"upstream_ms\":\"\$upstream_header_time\",'
        '\"bytes_in\":\$request_length,\"bytes_out\":\$body_bytes_sent,\"request_id\":\"\$request_id\",'
        '\"trace_id\":\"\$request_id\",\"user_agent\":\"\$http_user_agent\"}';" "$NGINX_FIELDS" \
    "$(nginx_listeners "$2" "$3")
        access_log $dir/access.log weir buffer=64k flush=1s;"
  NGINX_LOG_PID=$NGINX_PID
  # The log is in the server block: the http block's `access_log off` cancels one beside it.
  # A line must reach the file within the flush interval.
  curl -fs "http://127.0.0.1:$1/" >/dev/null
  sleep 1.5
  [ -s "$dir/access.log" ] || { echo "nginx wrote no access log line to $dir/access.log"; exit 1; }
}

# start_haproxy_log PORT H2C_PORT TLS_PORT: HAProxy as the kit configures it (one thread), doing
# the same work as start_nginx_log: X-Forwarded-For/-Proto, an x-request-id made, sent on and
# returned, and a JSON line per request with Weir's fields, written to stdout (`log stdout
# format raw`, HAProxy's way for containers) and from there to a file. Sets HAPROXY_LOG_PID.
start_haproxy_log() {
  local dir=$work/haproxy-log
  mkdir -p "$dir"
  cat > "$dir/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 9000
    log stdout format raw local0
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$1 backlog 4096
    bind 127.0.0.1:$2 proto h2 backlog 4096
    bind 127.0.0.1:$3 ssl crt $CONF/tls/server.pem alpn h2,http/1.1 no-tls-tickets backlog 4096
    option forwardfor
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    unique-id-format %{+X}o%ci%cp%fp%Ts%rt%pid
    unique-id-header X-Request-Id
    http-after-response set-header X-Request-Id %[unique-id]
    http-request capture req.hdr(host) len 64
    http-request capture req.hdr(user-agent) len 128
    http-request capture path len 256
    log-format '{"time":"%tr","client":"%ci:%cp","protocol":"%HV","method":"%HM","host":"%[capture.req.hdr(0),json(utf8s)]","path":"%[capture.req.hdr(2),json(utf8s)]","status":%ST,"backend":"%b","endpoint":"%si:%sp","duration_ms":%Ta,"upstream_ms":%Tr,"bytes_in":%U,"bytes_out":%B,"request_id":"%ID","user_agent":"%[capture.req.hdr(1),json(utf8s)]"}'
    default_backend be
backend be
    server b1 127.0.0.1:18080
CONF
  taskset -c "$PROXY_CPU" haproxy -db -f "$dir/haproxy.cfg" >> "$dir/access.log" 2> "$dir/error.log" &
  HAPROXY_LOG_PID=$!
  pids+=("$HAPROXY_LOG_PID")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "HAProxy with a JSON log did not start; see $dir/error.log"; exit 1
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
