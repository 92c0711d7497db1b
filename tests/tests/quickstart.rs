//! The README's first command: `examples/quickstart/run.sh` (here on the binaries already
//! built) brings up the local mesh, the requests it prints work as it says, and Ctrl-C stops
//! every process it started.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use weir_e2e::{
    binary, collect_lines, free_port,
    mesh::{plaintext, quickstart_calls},
    request,
};

/// The script's process group; everything in it is killed on drop, whatever happened.
struct Quickstart(Child);

impl Drop for Quickstart {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// The ports of mesh.yaml and run.sh: controller, sidecars (inbound, outbound, admin), apps.
const MESH_PORTS: [u16; 10] = [
    15010, 15014, 15106, 15101, 15120, 15206, 15201, 15220, 18101, 18201,
];

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn the_quickstart_brings_up_the_local_mesh_and_ctrl_c_stops_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = binary("weir-sidecar").parent().unwrap().to_path_buf();
    let state = std::env::temp_dir().join(format!("weir-quickstart-{}", std::process::id()));
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(root.join("examples/quickstart/run.sh"))
        .env("WEIR_BIN", &bin)
        .env("WEIR_STATE", &state)
        .env("WEIR_LISTEN", format!("127.0.0.1:{listen}"))
        .env("WEIR_ADMIN", format!("127.0.0.1:{admin}"))
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run examples/quickstart/run.sh");
    let stdout = collect_lines(child.stdout.take().unwrap());
    let stderr = collect_lines(child.stderr.take().unwrap());
    let mut quickstart = Quickstart(child);
    let output = || {
        let out = stdout.lock().unwrap().join("\n");
        format!("{out}\n--- logs:\n{}", stderr.lock().unwrap().join("\n"))
    };

    // It prints what to try, with a token, once everything is ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let token = stdout
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.trim().strip_prefix("TOKEN=").map(str::to_string));
        if let Some(token) = token {
            break token;
        }
        let exited = quickstart.0.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "no token printed ({exited:?}):\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Through the ingress with the token: frontend, then backend, each called over mTLS;
    // without a token: 401. Until the rate limit (5 a minute) bites: 429.
    let ingress = SocketAddr::from(([127, 0, 0, 1], listen));
    quickstart_calls(ingress, &token, output).await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let reply = request(ingress, "web.example.com", "/", &auth, Bytes::new(), "GET").await;
        statuses.push(reply.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // STRICT: plaintext into the backend's sidecar gets nothing. The gateway's own routes work.
    assert_eq!(
        plaintext(SocketAddr::from(([127, 0, 0, 1], 15206))).await,
        ""
    );
    let shop = request(
        ingress,
        "shop.example.com",
        "/hello",
        &[],
        Bytes::new(),
        "GET",
    )
    .await;
    assert_eq!(shop.status, StatusCode::OK);

    // Ctrl-C: the script exits 0 and nothing it started is left listening.
    let pid = quickstart.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = quickstart.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after Ctrl-C:\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}:\n{}", output());
    let left: Vec<u16> = MESH_PORTS
        .into_iter()
        .chain([listen, admin])
        .filter(|&port| listening(port))
        .collect();
    assert!(
        left.is_empty(),
        "still listening on {left:?}:\n{}",
        output()
    );
    let _ = std::fs::remove_dir_all(&state);
}
