#!/usr/bin/env bash
# The local mesh in one command, no Kubernetes needed: builds Weir, then starts from this
# directory's objects the controller (directory mode: config and certificates), the ingress
# (joined to the mesh), and two demo services, frontend calling backend, each behind its own
# weir-sidecar with STRICT mTLS between them; prints requests to try. Ctrl-C stops everything.
#
# WEIR_BIN=DIR uses binaries already built in DIR; WEIR_STATE=DIR keeps the controller's CA
# there (default target/quickstart); WEIR_LISTEN and WEIR_ADMIN move the ingress.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
bin=${WEIR_BIN:-}
if [ -z "$bin" ]; then
  echo "==> building Weir and the demo app (the first build takes a few minutes)"
  cargo build --release -q -p weir-controller -p weir-ingress -p weir-sidecar -p weir-e2e --bins
  bin=$root/target/release
fi
state=${WEIR_STATE:-$root/target/quickstart}
listen=${WEIR_LISTEN:-127.0.0.1:8080}
admin=${WEIR_ADMIN:-127.0.0.1:9901}
controller=127.0.0.1:15010
mkdir -p "$state"

pids=()
cleanup() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "==> stopping"; exit 0' INT TERM
wait_ready() { # URL NAME
  for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$2 did not become ready ($1); see its log above" >&2
  exit 1
}

"$bin/weir-controller" run --config-dir "$here" --state-dir "$state" \
  --grpc "$controller" --admin 127.0.0.1:15014 & pids+=($!)
wait_ready http://127.0.0.1:15014/readyz weir-controller
token() { # NAMESPACE SERVICEACCOUNT: a projected ServiceAccount token, as a cluster mounts it
  "$bin/weir-controller" token --state-dir "$state" --namespace "$1" --service-account "$2" \
    > "$state/$1.$2.token"
  echo "$state/$1.$2.token"
}
mesh=(--controller "https://$controller" --controller-ca "$state/trust-bundle.pem")

# The gateway's own demo backends (gateway.yaml, ingress.yaml): not meshed.
"$bin/weir-echo" --listen 127.0.0.1:18001 --name shop-v1 >/dev/null & pids+=($!)
"$bin/weir-echo" --listen 127.0.0.1:18002 --name shop-canary >/dev/null & pids+=($!)

# The mesh (mesh.yaml): each app on its own port, its sidecar's inbound port is the pod's
# endpoint, and the app calls other services through its sidecar's outbound port.
sidecar() { # NAME APP_PORT INBOUND OUTBOUND ADMIN
  "$bin/weir-sidecar" run "${mesh[@]}" --identity-token-file "$(token demo "$1")" \
    --namespace demo --pod "$1-0" --service-account "$1" --app-port "$2" \
    --inbound "127.0.0.1:$3" --outbound "127.0.0.1:$4" --admin "127.0.0.1:$5" & pids+=($!)
}
"$bin/weir-echo" --listen 127.0.0.1:18201 --name backend >/dev/null & pids+=($!)
sidecar backend 18201 15206 15201 15220
"$bin/weir-echo" --listen 127.0.0.1:18101 --name frontend \
  --call backend.demo --via 127.0.0.1:15101 >/dev/null & pids+=($!)
sidecar frontend 18101 15106 15101 15120

"$bin/weir-ingress" "${mesh[@]}" --identity-token-file "$(token weir-system weir-ingress)" \
  --pod-name weir-ingress-0 --listen "$listen" --admin "$admin" & pids+=($!)

wait_ready http://127.0.0.1:15220/readyz "backend's sidecar"
wait_ready http://127.0.0.1:15120/readyz "frontend's sidecar"
wait_ready "http://$admin/readyz" weir-ingress
jwt=$("$bin/weir-token" --key "$here/demo-idp-key.pem" --kid demo --iss https://idp.demo.weir \
  --aud web --sub alice --ttl 86400)

cat <<TRY

The local mesh is up: weir-controller (127.0.0.1:15014), weir-ingress on http://$listen
(admin http://$admin), frontend and backend behind their sidecars (admin 127.0.0.1:15120 and
127.0.0.1:15220), STRICT mTLS between them. A test token for user alice (24 h):

  TOKEN=$jwt

Through the ingress (JWT), to the frontend, which calls the backend (both hops mTLS; the
x-weir-peer-identity each app received shows who called it):
  curl -s -H 'Host: web.example.com' -H "Authorization: Bearer \$TOKEN" http://$listen/call/hello
  curl -si -H 'Host: web.example.com' http://$listen/                  # 401 without a token
  for i in \$(seq 7); do curl -s -o /dev/null -w '%{http_code} ' -H 'Host: web.example.com' \\
    -H "Authorization: Bearer \$TOKEN" http://$listen/; done; echo     # 5/min: 429s
  curl -sv http://127.0.0.1:15206/                                     # plaintext into the mesh: refused
  curl -s http://127.0.0.1:15120/metrics | grep weir_mesh_requests_total

The gateway on its own (not meshed):
  curl -s -H 'Host: shop.example.com' http://$listen/hello            # 90% shop-v1, 10% shop-canary
  curl -si -H 'Host: shop.example.com' http://$listen/old-shop         # 301 redirect
  curl -s -H 'Host: api.example.com' -H 'X-API-Key: demo-key-1' http://$listen/api/orders
  curl -si http://$listen/nothing-here                                 # 404, x-weir-error: no-route
  curl -s http://$admin/config                                         # the active snapshot

Edit any YAML file here and the controller pushes the change within a second: in mesh.yaml,
make AccessPolicy frontend allow weir-system/nobody instead of weir-system/weir-ingress and
the first curl gets 403 access-denied; a mistake is refused with its file, object and field,
and the last good version keeps serving.
Ctrl-C stops everything.
TRY
wait
