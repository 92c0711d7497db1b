//! Weir's container images for the smoke tests: containers run the way a pod spec says (the
//! manifests' Deployments, the injector's patch), on the host's network or in a test's network
//! namespace.
//!
//! `scripts/test.sh` builds the images with `scripts/image.sh` and names them here through
//! `WEIR_TEST_IMAGE` (every binary), `WEIR_TEST_SIDECAR_IMAGE` (weir-sidecar alone),
//! `WEIR_TEST_ENGINE` (the engine's command with its global flags) and `WEIR_TEST_RUN_FLAGS`
//! (flags every `run` needs on this machine). With `WEIR_TEST_IMAGE_REQUIRED=1` (the test
//! script sets it when it built them) a missing image fails the test instead of skipping it.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{collect_lines, netns::Netns};

/// The label on every container the tests start, for the test script to sweep up what a
/// killed test run left.
pub const LABEL: &str = "dev.weir.test";

/// The images under test and the engine that runs them.
pub struct Image {
    engine: Vec<String>,
    run_flags: Vec<String>,
    /// The image with every binary, e.g. `weir:dev`.
    pub name: String,
    /// The sidecar's image, e.g. `weir-sidecar:dev`.
    pub sidecar: String,
}

impl Image {
    /// The images the test script built, or `None` when there are none (the reason is
    /// printed; the test script says why it built none).
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        let (name, sidecar, engine) = (
            var("WEIR_TEST_IMAGE"),
            var("WEIR_TEST_SIDECAR_IMAGE"),
            var("WEIR_TEST_ENGINE"),
        );
        if name.is_empty() || sidecar.is_empty() || engine.is_empty() {
            assert!(
                var("WEIR_TEST_IMAGE_REQUIRED") != "1",
                "WEIR_TEST_IMAGE_REQUIRED=1 but no image is named"
            );
            eprintln!(
                "no image to test: WEIR_TEST_IMAGE, WEIR_TEST_SIDECAR_IMAGE and WEIR_TEST_ENGINE \
                 are unset (scripts/test.sh builds them with scripts/image.sh where containers \
                 can run)"
            );
            return None;
        }
        let words = |s: String| s.split_whitespace().map(str::to_string).collect();
        Some(Self {
            engine: words(engine),
            run_flags: words(var("WEIR_TEST_RUN_FLAGS")),
            name,
            sidecar,
        })
    }

    /// The image under test that stands for `published` (a pod spec's `image`): the sidecar's
    /// for `…/weir-sidecar:…`, the other for `…/weir:…`.
    pub fn local(&self, published: &str) -> &str {
        let repository = published.rsplit_once(':').map_or(published, |(r, _)| r);
        match repository.rsplit('/').next() {
            Some("weir") => &self.name,
            Some("weir-sidecar") => &self.sidecar,
            _ => panic!("no image under test stands for {published}"),
        }
    }

    /// The user `image` runs as when a pod spec names none (its `USER`).
    pub fn user(&self, image: &str) -> String {
        let out = self
            .engine()
            .args(["image", "inspect", "--format", "{{.Config.User}}", image])
            .output()
            .expect("run the container engine");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Every file of `image`, as `tar -tv --numeric-owner` lists them (mode, owner, size,
    /// date, path).
    pub fn listing(&self, image: &str) -> Vec<String> {
        let created = self
            .engine()
            .args(["create", image, "none"])
            .output()
            .expect("run the container engine");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
        let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
        let mut export = self
            .engine()
            .args(["export", &id])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the container engine");
        let tar = Command::new("tar")
            .args(["-tv", "--numeric-owner"])
            .stdin(export.stdout.take().expect("the export"))
            .output()
            .expect("run tar");
        assert!(
            export.wait().is_ok_and(|s| s.success()),
            "export {id} failed"
        );
        let _ = self.engine().args(["rm", &id]).output();
        String::from_utf8_lossy(&tar.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn engine(&self) -> Command {
        let mut command = Command::new(&self.engine[0]);
        command.args(&self.engine[1..]);
        command
    }

    /// `engine run` of `container` in the image, as a command to spawn or run.
    pub fn command(&self, container: &Container) -> Command {
        let mut command = self.engine();
        command
            .args(["run", "--rm", "--name", &container.name])
            .arg(format!("--label={LABEL}"))
            .args(&self.run_flags);
        match &container.network {
            Network::Host => command.arg("--network=host"),
            Network::Pod(netns) => command.arg(format!("--network=ns:/run/netns/{}", netns.name)),
        };
        if let Some((uid, gid)) = container.user {
            command.arg(format!("--user={uid}:{gid}"));
        }
        if container.read_only {
            command.arg("--read-only");
        }
        if container.no_new_privileges {
            command.arg("--security-opt=no-new-privileges");
        }
        for cap in &container.cap_drop {
            command.arg(format!("--cap-drop={cap}"));
        }
        for cap in &container.cap_add {
            command.arg(format!("--cap-add={cap}"));
        }
        if let Some(memory) = &container.memory_limit {
            command.arg(format!("--memory={memory}"));
        }
        for (name, ip) in &container.hosts {
            command.arg(format!("--add-host={name}:{ip}"));
        }
        for (name, value) in &container.env {
            command.arg(format!("--env={name}={value}"));
        }
        for mount in &container.mounts {
            let ro = if mount.read_only { ":ro" } else { "" };
            command.arg(format!(
                "--volume={}:{}{ro}",
                mount.host.display(),
                mount.path
            ));
        }
        command
            .arg(format!("--entrypoint={}", container.command[0]))
            .arg(self.local(&container.image))
            .args(&container.command[1..])
            .args(&container.args);
        command
    }

    /// Runs `container` to completion.
    pub fn output(&self, container: &Container) -> Output {
        self.command(container)
            .stdin(Stdio::null())
            .output()
            .expect("run the container engine")
    }

    /// Starts `container`; it is removed when the returned handle drops.
    pub fn spawn(&self, container: &Container) -> Running {
        let mut child = self
            .command(container)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the container engine");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        let (mut stop, mut remove) = (self.engine(), self.engine());
        stop.args(["stop", "--time=10", &container.name]);
        remove.args(["rm", "--force", "--time=0", &container.name]);
        Running {
            child,
            stop,
            remove,
            stdout,
            stderr,
        }
    }
}

/// Where a container's network is.
#[derive(Clone)]
pub enum Network {
    /// The test's own namespace (as `hostNetwork`, or any pod reached on loopback).
    Host,
    /// A pod's namespace.
    Pod(Netns),
}

/// A volume a container mounts.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The directory on this machine.
    pub host: PathBuf,
    /// Where the container sees it.
    pub path: String,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// One container as a pod spec runs it.
#[derive(Clone)]
pub struct Container {
    /// The engine's name for it (unique: it is removed by name).
    pub name: String,
    /// Its `image`, as published (see [`Image::local`]).
    pub image: String,
    /// Its `command`.
    pub command: Vec<String>,
    /// Its `args`.
    pub args: Vec<String>,
    /// Its environment, `valueFrom.fieldRef` resolved.
    pub env: Vec<(String, String)>,
    /// `runAsUser` and `runAsGroup`, the container's over the pod's.
    pub user: Option<(i64, i64)>,
    /// `readOnlyRootFilesystem`.
    pub read_only: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// `capabilities.add`.
    pub cap_add: Vec<String>,
    /// `capabilities.drop`.
    pub cap_drop: Vec<String>,
    /// Its volume mounts, each at the host directory given for the volume's name.
    pub mounts: Vec<Mount>,
    /// `resources.limits.memory`, as the engine writes it (`128m`).
    pub memory_limit: Option<String>,
    /// Names the container resolves (`--add-host`): what cluster DNS would answer.
    pub hosts: Vec<(String, std::net::IpAddr)>,
    /// Its network.
    pub network: Network,
}

/// The securityContext fields the smoke run honours; any other is refused, so that a pod spec
/// never asks for something the test would silently not do.
const POD_SECURITY: [&str; 4] = ["runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"];
const CONTAINER_SECURITY: [&str; 7] = [
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seccompProfile",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
];

impl Container {
    /// Container `name` of `pod` (a Pod's JSON, or a workload's pod template: anything with a
    /// `spec`), with `fields` for its `fieldRef`s (e.g. `metadata.name`) and `volume` giving
    /// the host directory of each volume it mounts, by name. Panics, naming it, on what it
    /// cannot map, and where the kubelet would refuse to start it (`runAsNonRoot` with uid 0).
    /// Without `runAsGroup`, the group is the user's own (as the image's /etc/group has it).
    pub fn from_pod(
        pod: &Value,
        name: &str,
        fields: &BTreeMap<&str, &str>,
        volume: impl Fn(&str) -> PathBuf,
        network: Network,
    ) -> Self {
        let spec = &pod["spec"];
        let container = ["containers", "initContainers"]
            .iter()
            .filter_map(|list| spec[list].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name} in {spec}"));
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let env = env_values(&container["env"], fields);
        let (pod_security, security) = (&spec["securityContext"], &container["securityContext"]);
        for (context, allowed) in [
            (pod_security, &POD_SECURITY[..]),
            (security, &CONTAINER_SECURITY[..]),
        ] {
            for key in context.as_object().into_iter().flat_map(|o| o.keys()) {
                assert!(
                    allowed.contains(&key.as_str()),
                    "{name}: securityContext.{key} is not honoured by the smoke run"
                );
            }
        }
        let setting = |key: &str| -> &Value {
            if security[key].is_null() {
                &pod_security[key]
            } else {
                &security[key]
            }
        };
        let user = setting("runAsUser")
            .as_i64()
            .map(|uid| (uid, setting("runAsGroup").as_i64().unwrap_or(uid)));
        if setting("runAsNonRoot") == true {
            // Without runAsUser, the image's USER decides (65532 in Weir's images).
            assert!(
                user.is_none_or(|(uid, _)| uid != 0),
                "{name}: runAsNonRoot with uid 0: the kubelet would not start it"
            );
        }
        let seccomp = setting("seccompProfile");
        assert!(
            seccomp.is_null() || seccomp["type"] == "RuntimeDefault",
            "{name}: seccompProfile {seccomp} (the engine runs its default profile)"
        );
        let mounts = container["volumeMounts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| Mount {
                host: volume(m["name"].as_str().unwrap()),
                path: m["mountPath"].as_str().unwrap().to_string(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
            })
            .collect();
        let command = strings(&container["command"]);
        assert!(!command.is_empty(), "container {name} names no command");
        let memory_limit = container["resources"]["limits"]["memory"]
            .as_str()
            .map(|m| {
                let (number, unit) =
                    m.split_at(m.find(|c: char| !c.is_ascii_digit()).unwrap_or(m.len()));
                let unit = match unit {
                    "Mi" => "m",
                    "Gi" => "g",
                    "Ki" => "k",
                    "" => "b",
                    other => panic!("{name}: memory limit unit {other}"),
                };
                format!("{number}{unit}")
            });
        Self {
            name: format!("weir-test-{name}-{}", fastrand::u64(..)),
            image: container["image"].as_str().unwrap_or("weir").to_string(),
            command,
            args: strings(&container["args"]),
            env,
            user,
            read_only: security["readOnlyRootFilesystem"] == true,
            no_new_privileges: security["allowPrivilegeEscalation"] == false,
            cap_add: strings(&security["capabilities"]["add"]),
            cap_drop: strings(&security["capabilities"]["drop"]),
            mounts,
            memory_limit,
            hosts: Vec::new(),
            network,
        }
    }

    /// Sets flag `--name` to `value` (either spelling, `--name=value` or `--name value`),
    /// adding it when the args do not have it.
    pub fn set_arg(&mut self, name: &str, value: &str) -> &mut Self {
        let prefix = format!("{name}=");
        if let Some(i) = self.args.iter().position(|a| a.starts_with(&prefix)) {
            self.args[i] = format!("{name}={value}");
        } else if let Some(i) = self.args.iter().position(|a| a == name) {
            self.args[i + 1] = value.to_string();
        } else {
            self.args.push(format!("{name}={value}"));
        }
        self
    }
}

fn env_values(env: &Value, fields: &BTreeMap<&str, &str>) -> Vec<(String, String)> {
    env.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(value) => value.to_string(),
                None => {
                    let path = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
                    let path =
                        path.unwrap_or_else(|| panic!("env {name}: neither value nor fieldRef"));
                    fields
                        .get(path)
                        .unwrap_or_else(|| panic!("env {name}: no value given for {path}"))
                        .to_string()
                }
            };
            (name, value)
        })
        .collect()
}

/// A running container; removed on drop.
pub struct Running {
    child: Child,
    stop: Command,
    remove: Command,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// What it printed so far, stdout then stderr.
    pub fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it as the kubelet does (SIGTERM, then SIGKILL after 10 s) and returns how it
    /// exited.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = self
            .stop
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the engine") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self
            .remove
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Deployments' pod templates of a manifest file (YAML, many documents), by name.
pub fn deployments(yaml: &str) -> BTreeMap<String, Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("manifest YAML parses");
    documents
        .into_iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            (name, d["spec"]["template"].clone())
        })
        .collect()
}
