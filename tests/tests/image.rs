//! The container image (`scripts/image.sh`), run the way the cluster runs it: each binary as
//! its manifest's pod spec says (user, read-only root filesystem, capabilities, command,
//! mounts), and the local mesh from the image: the controller, the ingress, and two demo
//! services each in a network namespace of its own with the sidecar and init container the
//! injector (from the image too) adds to their pods. The quickstart's requests then work as
//! they do on the host: through the ingress with a JWT, frontend to backend over STRICT mTLS,
//! plaintext into the mesh refused.
//!
//! The image is the one `scripts/test.sh` builds from this build's binaries (see
//! `weir_e2e::image`); without one, the tests say so and check nothing.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use weir_e2e::{
    binary, free_port,
    image::{deployments, Container, Image, Network, Running},
    mesh::{plaintext, quickstart_calls, App},
    netns::{Lan, Netns},
    request,
    tls::{https_request, KeyType, Pki},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest(file: &str) -> String {
    std::fs::read_to_string(root().join("manifests").join(file)).expect("read the manifest")
}

/// A fresh directory, readable by every user (the containers run as 65532 and 1337).
fn directory(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_readable(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let name = format!("weir-image-{what}-{}", fastrand::u64(..));
        Self(directory(&std::env::temp_dir(), &name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_binary_runs_from_the_image_as_its_manifest_says() {
    let Some(image) = Image::from_env() else {
        return;
    };
    let scratch = Scratch::new("version");
    let user = image.user();
    assert_eq!(user, "65532:65532", "the image's default user");

    let fields = BTreeMap::from([
        ("metadata.name", "weir-0"),
        ("metadata.namespace", "weir-system"),
        ("spec.serviceAccountName", "weir"),
    ]);
    let mut ran = Vec::new();
    for (file, deployment, name) in [
        ("controller.yaml", "weir-controller", "controller"),
        ("ingress.yaml", "weir-ingress", "ingress"),
        ("injector.yaml", "weir-injector", "injector"),
    ] {
        let pod = &deployments(&manifest(file))[deployment];
        let mut container =
            Container::from_pod(pod, name, &fields, |_| scratch.0.clone(), Network::Host);
        // What every Weir container promises a restricted namespace.
        assert_eq!(container.user, Some((65532, 65532)), "{deployment}");
        assert!(container.read_only, "{deployment}: read-only root");
        assert!(container.no_new_privileges, "{deployment}");
        assert_eq!(container.cap_drop, ["ALL"], "{deployment}");
        assert!(container.cap_add.is_empty(), "{deployment}");
        assert_eq!(
            container.command,
            [deployment],
            "the binary is on the image's PATH"
        );
        container.args = vec!["--version".into()];
        let out = image.output(&container);
        assert!(
            out.status.success(),
            "{deployment} --version: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{deployment} {VERSION}")
        );
        ran.push(deployment);
    }

    // The sidecar (run by the injector's patch, below) as the image's default user too.
    let mut sidecar = Container::from_pod(
        &json!({"spec": {"containers": [{
            "name": "sidecar", "command": ["weir-sidecar"], "args": ["--version"],
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}}}]}}),
        "sidecar",
        &fields,
        |_| scratch.0.clone(),
        Network::Host,
    );
    sidecar.user = None;
    let out = image.output(&sidecar);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("weir-sidecar {VERSION}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ran.len(), 3);
}

/// What an attacker who gets code running in a Weir container finds there: no shell or package
/// manager to work with, no setuid or setgid file to become root by, nothing the runtime users
/// may change.
#[test]
fn the_image_has_no_shell_no_setuid_file_and_nothing_writable() {
    let Some(image) = Image::from_env() else {
        return;
    };
    let listing = image.listing();
    assert!(listing.len() > 100, "{listing:?}");
    let path = |line: &str| {
        line.split_whitespace()
            .nth(5)
            .unwrap_or_default()
            .to_string()
    };
    let paths: Vec<String> = listing.iter().map(|l| path(l)).collect();
    for tool in [
        "bin/sh",
        "bin/bash",
        "bin/dash",
        "bin/busybox",
        "bin/apt",
        "bin/dpkg",
    ] {
        assert!(
            !paths.iter().any(|p| p.ends_with(tool)),
            "{tool} is in the image"
        );
    }
    for bin in [
        "weir-ingress",
        "weir-controller",
        "weir-injector",
        "weir-sidecar",
    ] {
        let line = listing
            .iter()
            .find(|l| path(l) == format!("usr/local/bin/{bin}"))
            .unwrap_or_else(|| panic!("{bin} is not in /usr/local/bin"));
        assert!(line.starts_with("-rwxr-xr-x 0/0 "), "{line}");
    }
    for line in &listing {
        let mode = line.as_bytes();
        let (user_x, group_x, other_w) = (mode[3], mode[6], mode[8]);
        assert!(
            !matches!(user_x, b's' | b'S') && !matches!(group_x, b's' | b'S'),
            "setuid or setgid: {line}"
        );
        // Symbolic links show rwx for all; the sticky /tmp (and /var/tmp) is the one
        // directory everyone may write; the device nodes of dev/ are hidden by the runtime's
        // own /dev.
        let sticky = mode[9] == b't';
        let device = matches!(mode[0], b'c' | b'b') && path(line).starts_with("dev/");
        assert!(
            other_w != b'w' || mode[0] == b'l' || sticky || device,
            "writable by every user: {line}"
        );
        let owner = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            owner.starts_with("0/") || mode[0] == b'd' && sticky,
            "not owned by root: {line}"
        );
    }
    let mut binary = Container::from_pod(
        &json!({"spec": {"containers": [{"name": "x", "command": ["weir-sidecar"]}]}}),
        "x",
        &BTreeMap::new(),
        |_| unreachable!(),
        Network::Host,
    );
    binary.command = vec!["sh".into()];
    binary.args = vec!["-c".into(), "id".into()];
    let out = image.output(&binary);
    assert!(!out.status.success(), "a shell ran: {out:?}");
}

/// The local mesh of the quickstart, from the image.
#[tokio::test]
async fn the_quickstarts_mesh_runs_from_the_image_with_the_injected_containers() {
    let Some(image) = Image::from_env() else {
        return;
    };
    let scratch = Scratch::new("mesh");
    let mut lan = Lan::new();
    let (front, back) = (lan.pod(), lan.pod());

    // The quickstart's objects, the two pods moved into their namespaces: each endpoint is
    // the app's port on the pod's address, where the init container's rules send it to the
    // sidecar.
    let config = directory(&scratch.0, "config");
    let quickstart = root().join("examples/quickstart");
    for entry in std::fs::read_dir(&quickstart).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path.ends_with("mesh.yaml") {
                let before = text.clone();
                text = text
                    .replacen("\"127.0.0.1\"", &format!("\"{}\"", front.ip), 1)
                    .replacen("\"127.0.0.1\"", &format!("\"{}\"", back.ip), 1)
                    .replace("port: 15106}", "port: 8080}")
                    .replace("port: 15206}", "port: 8080}");
                assert_eq!(text.matches("port: 8080}").count(), 2, "{before}");
                assert!(!text.contains("\"127.0.0.1\""), "{text}");
            }
            write_readable(&config.join(path.file_name().unwrap()), text);
        }
    }

    // The controller, as its Deployment runs it, in directory mode on the LAN's gateway.
    let state = directory(&scratch.0, "state");
    std::os::unix::fs::chown(&state, Some(65532), Some(65532)).unwrap();
    let controller_pod = &deployments(&manifest("controller.yaml"))["weir-controller"];
    let fields = BTreeMap::from([
        ("metadata.name", "weir-controller-0"),
        ("metadata.namespace", "weir-system"),
    ]);
    let controller_container = |args: Vec<String>| {
        let mut c = Container::from_pod(
            controller_pod,
            "controller",
            &fields,
            |_| unreachable!("the controller mounts nothing"),
            Network::Host,
        );
        c.args = args;
        c.mounts.push(weir_e2e::image::Mount {
            host: config.clone(),
            path: "/etc/weir/config".into(),
            read_only: true,
        });
        c.mounts.push(weir_e2e::image::Mount {
            host: state.clone(),
            path: "/var/lib/weir".into(),
            read_only: false,
        });
        c
    };
    let grpc = SocketAddr::from((lan.gateway, free_port()));
    let controller_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let controller = image.spawn(&controller_container(args(&[
        "run",
        "--config-dir=/etc/weir/config",
        "--state-dir=/var/lib/weir",
        &format!("--grpc={grpc}"),
        &format!("--grpc-name=localhost,{}", lan.gateway),
        &format!("--admin={controller_admin}"),
    ])));
    let mut running = vec![("controller", controller)];
    ready(controller_admin, "/readyz", &mut running).await;
    let controller_url = format!("https://{grpc}");
    let bundle = std::fs::read(state.join("trust-bundle.pem")).expect("the controller's bundle");
    // A pod's two volumes as the cluster mounts them: the token and the trust bundle.
    let volumes = |namespace: &str, account: &str| {
        let out = image.output(&controller_container(args(&[
            "token",
            "--state-dir=/var/lib/weir",
            &format!("--namespace={namespace}"),
            &format!("--service-account={account}"),
        ])));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (token, ca) = (
            directory(&scratch.0, &format!("{namespace}.{account}.token")),
            directory(&scratch.0, &format!("{namespace}.{account}.ca")),
        );
        write_readable(
            &token.join("token"),
            String::from_utf8(out.stdout).unwrap().trim(),
        );
        write_readable(&ca.join("ca.crt"), &bundle);
        (token, ca)
    };

    // The injector, as its Deployment runs it (its ConfigMap's config, a serving certificate).
    let pki = Pki::new();
    let injector_name = "weir-injector.weir-system.svc";
    let issued = pki.issue(&[injector_name], KeyType::Ecdsa);
    let tls = directory(&scratch.0, "injector-tls");
    write_readable(&tls.join("tls.crt"), &issued.chain);
    write_readable(&tls.join("tls.key"), &issued.key);
    let injector_config = directory(&scratch.0, "injector-config");
    let config_map = serde_saphyr::from_multiple::<Value>(&manifest("injector.yaml"))
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the injector's ConfigMap");
    write_readable(
        &injector_config.join("config.yaml"),
        config_map["data"]["config.yaml"].as_str().unwrap(),
    );
    let injector_pod = &deployments(&manifest("injector.yaml"))["weir-injector"];
    let mut injector = Container::from_pod(
        injector_pod,
        "injector",
        &BTreeMap::new(),
        |volume| match volume {
            "tls" => tls.clone(),
            "config" => injector_config.clone(),
            other => panic!("the injector mounts {other}"),
        },
        Network::Host,
    );
    let (injector_addr, injector_admin) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    injector
        .set_arg("--listen", &injector_addr.to_string())
        .set_arg("--admin", &injector_admin.to_string());
    running.push(("injector", image.spawn(&injector)));
    ready(injector_admin, "/healthz", &mut running).await;
    let client = pki.client(&["h2", "http/1.1"], false);

    // Each demo service: its pod as a Deployment would create it, admitted by the injector;
    // then the init container and the sidecar the patch added, in the pod's namespace, as the
    // patch says; then the app (not from the image: it stands for the user's container).
    let mut apps: Vec<App> = Vec::new();
    for (netns, name, call) in [
        (&back, "backend", None),
        (&front, "frontend", Some("backend")),
    ] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-0"), "namespace": "demo", "labels": {"app": name}},
            "spec": {"serviceAccountName": name,
                     "containers": [{"name": "app", "image": "weir-echo",
                                     "ports": [{"containerPort": 8080}]}]},
        });
        let injected = admit(injector_addr, injector_name, &client, &pod).await;
        let fields = BTreeMap::from([
            ("metadata.name", pod["metadata"]["name"].as_str().unwrap()),
            ("metadata.namespace", "demo"),
            ("spec.serviceAccountName", name),
        ]);
        let (token, ca) = volumes("demo", name);
        let volume = |v: &str| match v {
            "weir-token" => token.clone(),
            "weir-ca" => ca.clone(),
            other => panic!("the sidecar mounts {other}"),
        };
        let network = Network::Pod(netns.clone());
        let init = Container::from_pod(&injected, "weir-init", &fields, volume, network.clone());
        assert_eq!(init.user, Some((0, 0)), "iptables needs root");
        assert_eq!(
            init.cap_add,
            ["NET_ADMIN", "NET_RAW"],
            "and these two alone"
        );
        assert_eq!(init.cap_drop, ["ALL"]);
        assert!(init.read_only);
        let out = image.output(&init);
        assert!(
            out.status.success(),
            "{name}'s init container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut sidecar = Container::from_pod(&injected, "weir-sidecar", &fields, volume, network);
        assert_eq!(
            sidecar.user,
            Some((1337, 1337)),
            "the proxy user init exempts"
        );
        assert!(sidecar.read_only && sidecar.no_new_privileges);
        assert_eq!(sidecar.cap_drop, ["ALL"]);
        assert!(sidecar.cap_add.is_empty());
        // The one change: where the controller is (no cluster DNS here).
        sidecar.set_arg("--controller", &controller_url);
        running.push((name, image.spawn(&sidecar)));
        ready(SocketAddr::from((netns.ip, 15020)), "/readyz", &mut running).await;
        apps.push(app(netns, name, call));
    }

    // The ingress, as its Deployment runs it, joined to the mesh as weir-system/weir-ingress.
    let (token, ca) = volumes("weir-system", "weir-ingress");
    let ingress_pod = &deployments(&manifest("ingress.yaml"))["weir-ingress"];
    let fields = BTreeMap::from([
        ("metadata.name", "weir-ingress-0"),
        ("metadata.namespace", "weir-system"),
        ("spec.serviceAccountName", "weir-ingress"),
    ]);
    let mut ingress = Container::from_pod(
        ingress_pod,
        "ingress",
        &fields,
        |volume| match volume {
            "token" => token.clone(),
            "ca" => ca.clone(),
            other => panic!("the ingress mounts {other}"),
        },
        Network::Host,
    );
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ingress_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    ingress
        .set_arg("--controller", &controller_url)
        .set_arg("--listen", &listen.to_string())
        .set_arg("--listen-tls", &format!("127.0.0.1:{}", free_port()))
        .set_arg("--admin", &ingress_admin.to_string());
    running.push(("ingress", image.spawn(&ingress)));
    ready(ingress_admin, "/readyz", &mut running).await;

    // The quickstart's requests. Through the ingress with the demo IdP's token: the frontend,
    // which calls the backend; both hops over mTLS.
    let token = Command::new(binary("weir-token"))
        .arg("--key")
        .arg(root().join("examples/quickstart/demo-idp-key.pem"))
        .args([
            "--kid",
            "demo",
            "--iss",
            "https://idp.demo.weir",
            "--aud",
            "web",
        ])
        .args(["--sub", "alice", "--ttl", "600"])
        .output()
        .expect("weir-token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    quickstart_calls(listen, &token, || logs(&running)).await;

    // STRICT: plaintext to the backend pod meets its sidecar, which says nothing.
    assert_eq!(plaintext(SocketAddr::from((back.ip, 8080))).await, "");
    drop(apps);
}

/// The pod `injector` makes of `pod` (its AdmissionReview answer's patch, applied).
async fn admit(
    injector: SocketAddr,
    name: &str,
    client: &std::sync::Arc<rustls::ClientConfig>,
    pod: &Value,
) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7c1e0f5e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"], "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        },
    });
    let answer = https_request(
        injector,
        name,
        client.clone(),
        "POST",
        "/inject",
        &[("content-type", "application/json")],
        Bytes::from(review.to_string()),
    )
    .await
    .expect("the injector answers");
    let response = &answer.reply.json()["response"];
    assert_eq!(response["allowed"], true, "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &patch).expect("the patch applies");
    injected
}

/// The demo app `name` on port 8080 of `netns`; its `/call/...` goes to Service `call` by its
/// cluster IP, as an unmodified app's would (the init container's rules send it to the
/// sidecar).
fn app(netns: &Netns, name: &str, call: Option<&str>) -> App {
    let mut command = netns.command(binary("weir-echo"));
    command.args(["--listen", "[::]:8080", "--name", name]);
    if let Some(service) = call {
        command.args([
            "--call",
            &format!("{service}.demo"),
            "--via",
            "10.96.0.20:80",
        ]);
    }
    let child = command
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start weir-echo");
    weir_e2e::wait_for_port(SocketAddr::from((netns.ip, 8080)));
    App::from_child(8080, child)
}

/// Waits (at most 30 s) until `path` on `admin` answers 200; panics with every container's
/// output if it does not, or if one of them exited.
async fn ready(admin: SocketAddr, path: &str, running: &mut [(&str, Running)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_ok() {
            let reply = request(admin, "admin", path, &[], Bytes::new(), "GET").await;
            if reply.status == StatusCode::OK {
                return;
            }
        }
        let exited: Vec<&str> = running
            .iter_mut()
            .filter_map(|(name, c)| (!c.running()).then_some(*name))
            .collect();
        assert!(
            exited.is_empty() && Instant::now() < deadline,
            "{admin} not ready (exited: {exited:?}):\n{}",
            logs(running)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn logs(running: &[(&str, Running)]) -> String {
    running
        .iter()
        .map(|(name, c)| format!("--- {name}:\n{}", c.logs()))
        .collect::<Vec<_>>()
        .join("\n")
}
