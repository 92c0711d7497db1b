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
fn every_binary_runs_from_the_images_as_its_manifest_says() {
    let Some(image) = Image::from_env() else {
        return;
    };
    let scratch = Scratch::new("version");
    for name in [&image.name, &image.sidecar] {
        assert_eq!(image.user(name), "65532:65532", "{name}'s default user");
    }
    let published = format!("ghcr.io/weir-dev/weir:{VERSION}");
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
        assert_eq!(
            container.image, published,
            "{deployment}: the image the release publishes"
        );
        // What every Weir container promises a restricted namespace.
        assert_eq!(container.user, Some((65532, 65532)), "{deployment}");
        assert!(container.read_only, "{deployment}: read-only root");
        assert!(container.no_new_privileges, "{deployment}");
        assert_eq!(container.cap_drop, ["ALL"], "{deployment}");
        assert!(container.cap_add.is_empty(), "{deployment}");
        assert!(
            container.memory_limit.is_some(),
            "{deployment}: a memory limit"
        );
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
    assert_eq!(ran.len(), 3);
    // The sidecar's own image: weir-sidecar, as the image's default user too (the injected
    // containers, run in the mesh test below, name theirs).
    let mut sidecar = Container::from_pod(
        &json!({"spec": {"containers": [{
            "name": "sidecar", "image": format!("ghcr.io/weir-dev/weir-sidecar:{VERSION}"),
            "command": ["weir-sidecar"], "args": ["--version"],
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}}}]}}),
        "sidecar",
        &fields,
        |_| scratch.0.clone(),
        Network::Host,
    );
    let out = image.output(&sidecar);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("weir-sidecar {VERSION}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It holds the sidecar alone.
    sidecar.command = vec!["weir-ingress".into()];
    assert!(
        !image.output(&sidecar).status.success(),
        "weir-ingress in the sidecar's image"
    );
}

/// What an attacker who gets code running in a Weir container finds there: no shell, package
/// manager or any program but Weir's and iptables to work with, no setuid or setgid file to
/// become root by, nothing the runtime users may change, and a package list for scanners.
#[test]
fn the_images_hold_weirs_programs_alone_and_nothing_anyone_may_change() {
    let Some(image) = Image::from_env() else {
        return;
    };
    for (name, binaries) in [
        (
            &image.name,
            &[
                "weir-controller",
                "weir-ingress",
                "weir-injector",
                "weir-sidecar",
                "weirctl",
            ][..],
        ),
        (&image.sidecar, &["weir-sidecar"][..]),
    ] {
        let listing = image.listing(name);
        assert!(listing.len() > 100, "{name}: {listing:?}");
        let path = |line: &str| {
            line.split_whitespace()
                .nth(5)
                .unwrap_or_default()
                .to_string()
        };
        let mut programs = Vec::new();
        for line in &listing {
            let (mode, path) = (line.as_bytes(), path(line));
            assert!(
                !matches!(mode[3], b's' | b'S') && !matches!(mode[6], b's' | b'S'),
                "{name}: setuid or setgid: {line}"
            );
            // Symbolic links show rwx for all; the sticky /tmp is the one directory everyone
            // may write (and Kubernetes' read-only root makes even that read-only).
            let sticky = mode[9] == b't';
            assert!(
                mode[8] != b'w' || mode[0] == b'l' || sticky,
                "{name}: writable by every user: {line}"
            );
            assert!(
                line.split_whitespace().nth(1) == Some("0/0"),
                "{name}: not owned by root: {line}"
            );
            assert!(
                !matches!(mode[0], b'c' | b'b'),
                "{name}: a device node: {line}"
            );
            // Every executable file: Weir's binaries, xtables-nft-multi, shared libraries.
            let library = path.contains(".so") || path.contains("/gconv/");
            if mode[0] == b'-' && mode[3] == b'x' && !library {
                programs.push(path.clone());
            }
            for leaked in [
                "etc/resolv.conf",
                "etc/hostname",
                "var/cache/apt/",
                "etc/apt/",
            ] {
                assert!(!path.ends_with(leaked), "{name}: {leaked} is in the image");
            }
        }
        let mut expected: Vec<String> = binaries
            .iter()
            .map(|b| format!("usr/local/bin/{b}"))
            .collect();
        expected.push("usr/sbin/xtables-nft-multi".into());
        programs.sort();
        expected.sort();
        assert_eq!(programs, expected, "{name}: the programs in the image");
        // Scanners read the packages from here.
        for package in ["libc6", "iptables", "ca-certificates"] {
            let status = format!("var/lib/dpkg/status.d/{package}");
            assert!(
                listing.iter().any(|l| path(l) == status),
                "{name}: no {status} for scanners"
            );
        }
        let mut shell = Container::from_pod(
            &json!({"spec": {"containers": [{"name": "x", "image": "weir", "command": ["sh"]}]}}),
            "x",
            &BTreeMap::new(),
            |_| unreachable!(),
            Network::Host,
        );
        shell.image = if name == &image.name {
            "weir"
        } else {
            "weir-sidecar"
        }
        .into();
        shell.args = vec!["-c".into(), "id".into()];
        let out = image.output(&shell);
        assert!(!out.status.success(), "{name}: a shell ran: {out:?}");
    }
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
    let controller_container = || {
        let mut c = Container::from_pod(
            controller_pod,
            "controller",
            &fields,
            |_| unreachable!("the controller mounts nothing"),
            Network::Host,
        );
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
    // Its Deployment's args, but for directory mode in place of --kubernetes and this test's
    // ports; the name its certificate carries is the manifest's, which the mesh resolves to
    // the LAN's gateway, as cluster DNS would to the Service.
    let grpc = SocketAddr::from((lan.gateway, free_port()));
    let controller_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut run = controller_container();
    run.args.retain(|a| a != "--kubernetes");
    assert_eq!(run.args[0], "run");
    run.set_arg("--config-dir", "/etc/weir/config")
        .set_arg("--state-dir", "/var/lib/weir")
        .set_arg("--grpc", &grpc.to_string())
        .set_arg("--admin", &controller_admin.to_string());
    let controller_name = "weir-controller.weir-system.svc";
    assert!(
        run.args
            .iter()
            .any(|a| a.starts_with("--grpc-name=") && a.contains(controller_name)),
        "{:?}",
        run.args
    );
    let controller = image.spawn(&run);
    let mut running = vec![("controller", controller)];
    ready(controller_admin, "/readyz", &mut running).await;
    let controller_url = format!("https://{controller_name}:{}", grpc.port());
    let cluster_dns = vec![(
        controller_name.to_string(),
        std::net::IpAddr::from(lan.gateway),
    )];
    let bundle = std::fs::read(state.join("trust-bundle.pem")).expect("the controller's bundle");
    // A pod's two volumes as the cluster mounts them: the token and the trust bundle.
    let volumes = |namespace: &str, account: &str| {
        let mut token = controller_container();
        token.args = args(&[
            "token",
            "--state-dir=/var/lib/weir",
            &format!("--namespace={namespace}"),
            &format!("--service-account={account}"),
        ]);
        let out = image.output(&token);
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
    // The one change: the controller's port is this test's.
    let config_text = config_map["data"]["config.yaml"].as_str().unwrap();
    let manifest_url = format!("https://{controller_name}:15010");
    assert!(config_text.contains(&manifest_url), "{config_text}");
    write_readable(
        &injector_config.join("config.yaml"),
        config_text.replace(&manifest_url, &controller_url),
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
    // patch says.
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
        // The app first (it stands for the user's container, not from the image), so that
        // waiting for its port reaches it and not the sidecar the rules redirect to.
        apps.push(app(netns, name, call));
        let init = Container::from_pod(&injected, "weir-init", &fields, volume, network.clone());
        assert_eq!(
            init.image,
            format!("ghcr.io/weir-dev/weir-sidecar:{VERSION}")
        );
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
        assert!(sidecar.memory_limit.is_some());
        assert!(
            sidecar
                .args
                .windows(2)
                .any(|a| a[0] == "--controller" && a[1] == controller_url),
            "{:?}",
            sidecar.args
        );
        sidecar.hosts.clone_from(&cluster_dns);
        running.push((name, image.spawn(&sidecar)));
        ready(SocketAddr::from((netns.ip, 15020)), "/readyz", &mut running).await;
    }

    // The ingress, as its Deployment runs it, joined to the mesh as weir-system/weir-ingress:
    // the quickstart's Gateway's own deployment, as the controller makes it from this one
    // (`--provision-gateways`: `--serve=gateways --gateway=demo/public`).
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
    ingress.hosts.clone_from(&cluster_dns);
    ingress
        .set_arg("--controller", &controller_url)
        .set_arg("--listen", &listen.to_string())
        .set_arg("--listen-tls", &format!("127.0.0.1:{}", free_port()))
        .set_arg("--admin", &ingress_admin.to_string())
        .set_arg("--serve", "gateways")
        .set_arg("--gateway", "demo/public");
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

    // STRICT: plaintext to the backend pod, IPv4 and IPv6, meets its sidecar (the init
    // container's rules, ip6tables too), which says nothing.
    assert_eq!(plaintext(SocketAddr::from((back.ip, 8080))).await, "");
    if let Some(ip6) = back.ip6 {
        assert_eq!(plaintext(SocketAddr::from((ip6, 8080))).await, "");
    }
    // The image's CA bundle was found (the ingress says so when it is not).
    let (_, ingress) = running.iter().find(|(n, _)| *n == "ingress").unwrap();
    assert!(
        !ingress.logs().contains("no trusted root certificates"),
        "{}",
        ingress.logs()
    );

    // Stopped as the kubelet stops them, each exits cleanly.
    for (name, container) in running.iter_mut().rev() {
        let status = container.stop();
        assert!(
            status.success(),
            "{name} exited {status}:\n{}",
            container.logs()
        );
    }
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
