//! The chaos run's faults on the compose cluster (compose/): containers killed with
//! `docker kill` and started again, frozen with `docker pause`, and cut off with
//! `docker network disconnect`, driven through the Docker CLI; and its membership
//! changes: a spare service (`n6`, which `compose/cluster up` does not start) started
//! with a new volume to join, a container that exits by itself after
//! `POST /admin/leave`, one killed for good and removed.
//!
//! `compose/cluster chaos` brings the cluster up and runs the `compose_chaos` test
//! with the environment this module reads: [`CONTAINERS_ENV`] (`n1=<container>,…`
//! in node order), [`NETWORK_ENV`] (the compose network) and optionally [`URLS_ENV`]
//! (the nodes' published HTTP URLs, spares included, by default
//! `http://127.0.0.1:8001` and on); for joins, [`SPARES_ENV`] (the spare services),
//! [`PROJECT_ENV`] and [`FILE_ENV`] (the compose project and file, to start them).
//!
//! A container cut off its network is cut off from clients too (its published port
//! goes through that network), so the workload avoids it, as it avoids a killed or
//! paused one; a 2-node partition is two containers each alone. Reconnecting gives
//! the container back its address (`--ip`, the compose file fixes one per node) and
//! its service name (`--alias`): nodes resolve advertised addresses once, at start.
//!
//! A spare starts as `compose/cluster add` starts one: `up -d` of its service after
//! removing any old container and volume of it, with `docker compose` or
//! `docker-compose`, whichever exists.
//!
//! Caveats: `docker kill` followed by `docker start` keeps the container's
//! filesystem and volume, so it is a crash and restart on the same data, like a
//! SIGKILL of a process; it cannot reach a node's disk cache, so unlike a power cut
//! it loses nothing the kernel had accepted. A spare's seeds are fixed by the compose
//! file (`n1`, `n2`, `n3`): with one leave and one remove in a run, at least one of
//! them is still on the ring when it joins.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::chaos::ChaosTarget;
use crate::http::{Api, HttpClient};

/// Env var: `n1=<container id or name>,n2=…`, in node order.
pub const CONTAINERS_ENV: &str = "RINGKV_COMPOSE_CONTAINERS";
/// Env var: the network the containers share.
pub const NETWORK_ENV: &str = "RINGKV_COMPOSE_NETWORK";
/// Env var: the nodes' HTTP URLs from the host, comma-separated, in node order
/// (the spares' last).
pub const URLS_ENV: &str = "RINGKV_COMPOSE_URLS";
/// Env var: the compose services that may be started to join (`n6,n7`), in order.
pub const SPARES_ENV: &str = "RINGKV_COMPOSE_SPARES";
/// Env var: the compose project name (`-p`), to start a spare.
pub const PROJECT_ENV: &str = "RINGKV_COMPOSE_PROJECT";
/// Env var: the compose file (`-f`), to start a spare.
pub const FILE_ENV: &str = "RINGKV_COMPOSE_FILE";

/// Bound on a restarted container answering `GET /health`; a spare's first start
/// may wait up to 30 s for seed names that do not resolve (a departed seed's).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's container, once it exists.
#[derive(Debug, Clone)]
struct Container {
    /// Container id or name, for the Docker CLI.
    container: String,
    /// Its address on the network, given back on reconnect.
    ip: String,
}

/// One node: its id (also its service name and alias on the network), its URL, and
/// its container (`None` for a spare not started yet).
#[derive(Debug, Clone)]
struct Node {
    id: String,
    url: String,
    container: Option<Container>,
}

/// How to run compose for this cluster's project.
#[derive(Debug, Clone)]
struct Compose {
    /// `["docker", "compose"]` or `["docker-compose"]`, then `-p P -f F`.
    command: Vec<String>,
}

/// The compose cluster as a [`ChaosTarget`].
#[derive(Debug)]
pub struct ComposeCluster {
    nodes: Vec<Node>,
    spares: usize,
    network: String,
    /// `None` when the environment gives no spares (joins are then off).
    compose: Option<Compose>,
    /// Nodes that left or were removed.
    departed: Vec<usize>,
    /// Whether a departed node's container and volume are deleted, as a
    /// StatefulSet scaled down deletes the pod and (`whenScaled: Delete`) its claim.
    delete_departed: bool,
}

impl ComposeCluster {
    /// The cluster named by the environment (see the module docs); `Err` says what
    /// is missing.
    pub fn from_env() -> anyhow::Result<Self> {
        let spec = std::env::var(CONTAINERS_ENV).with_context(|| {
            format!("{CONTAINERS_ENV} is not set: run this through `compose/cluster chaos`")
        })?;
        let network =
            std::env::var(NETWORK_ENV).with_context(|| format!("{NETWORK_ENV} is not set"))?;
        let pairs: Vec<(String, String)> = spec
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(id, c)| (id.trim().to_owned(), c.trim().to_owned()))
                    .with_context(|| format!("{CONTAINERS_ENV}: {p:?} is not id=container"))
            })
            .collect::<anyhow::Result<_>>()?;
        let compose = Compose::from_env()?;
        let spares: Vec<String> = match &compose {
            Some(_) => list_env(SPARES_ENV),
            None => Vec::new(),
        };
        let total = pairs.len() + spares.len();
        let urls: Vec<String> = match std::env::var(URLS_ENV) {
            Ok(list) => list.split(',').map(|u| u.trim().to_owned()).collect(),
            Err(_) => (1..=total)
                .map(|i| format!("http://127.0.0.1:{}", 8000 + i))
                .collect(),
        };
        if urls.len() != total {
            bail!(
                "{} containers and {} spares but {} URLs in {URLS_ENV}",
                pairs.len(),
                spares.len(),
                urls.len()
            );
        }
        let mut nodes = Vec::with_capacity(total);
        for ((id, container), url) in pairs.into_iter().zip(&urls) {
            let ip = address_on(&network, &container)
                .with_context(|| format!("container {container} ({id})"))?;
            nodes.push(Node {
                id,
                url: url.clone(),
                container: Some(Container { container, ip }),
            });
        }
        let spare_count = spares.len();
        for (id, url) in spares.into_iter().zip(&urls[nodes.len()..]) {
            nodes.push(Node {
                id,
                url: url.clone(),
                container: None,
            });
        }
        Ok(Self {
            nodes,
            spares: spare_count,
            network,
            compose,
            departed: Vec::new(),
            delete_departed: false,
        })
    }

    /// Deletes each departed node's container and volume from now on (a scaled-down
    /// pod and its claim), so its DNS name goes and a later start is on a new volume.
    pub fn delete_departed(&mut self) {
        self.delete_departed = true;
    }

    /// Why joins cannot run here, `None` if they can.
    pub fn joins_off(&self) -> Option<String> {
        match (&self.compose, self.spares) {
            (None, _) => Some(format!(
                "{PROJECT_ENV} and {FILE_ENV} are not both set, so no spare can start"
            )),
            (Some(_), 0) => Some(format!("{SPARES_ENV} names no spare service")),
            _ => None,
        }
    }

    fn node(&self, node: usize) -> anyhow::Result<&Node> {
        self.nodes
            .get(node)
            .with_context(|| format!("no node {node} in the compose cluster"))
    }

    /// The container of `node`, which must have been started.
    fn container(&self, node: usize) -> anyhow::Result<&Container> {
        let n = self.node(node)?;
        n.container
            .as_ref()
            .with_context(|| format!("{} was never started", n.id))
    }

    /// Polls the node's `/health` until it answers 200.
    async fn wait_ready(&self, node: usize) -> anyhow::Result<()> {
        let n = self.node(node)?;
        let api = Api::new(
            n.url.clone(),
            HttpClient::with_timeout(Duration::from_secs(2)),
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match api.try_health().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("{} not ready within {READY_TIMEOUT:?}: {e:#}", n.id)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Compose {
    /// The compose command for the project of [`PROJECT_ENV`] and [`FILE_ENV`];
    /// `None` when either is unset.
    fn from_env() -> anyhow::Result<Option<Self>> {
        let (Ok(project), Ok(file)) = (std::env::var(PROJECT_ENV), std::env::var(FILE_ENV)) else {
            return Ok(None);
        };
        let mut command: Vec<String> = if docker(&["compose", "version"]).is_ok() {
            vec!["docker".into(), "compose".into()]
        } else if Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            vec!["docker-compose".into()]
        } else {
            bail!("neither `docker compose` nor `docker-compose` runs here");
        };
        command.extend(["-p".into(), project, "-f".into(), file]);
        Ok(Some(Self { command }))
    }

    /// The project's name, as compose prefixes volumes with it.
    fn project(&self) -> &str {
        let at = self.command.iter().position(|a| a == "-p").unwrap_or(0);
        &self.command[at + 1]
    }

    /// Runs compose with `args` and returns its trimmed stdout.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = self.command.split_first().expect("a compose command");
        let out = Command::new(program)
            .args(rest)
            .args(args)
            .output()
            .context("running compose")?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                self.command.join(" "),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops and deletes `service`'s container and its volume.
    fn delete(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["rm", "-f", "-s", service])?;
        let volume = format!("{}_{service}-data", self.project());
        match docker(&["volume", "rm", &volume]) {
            Err(e) if !e.to_string().to_lowercase().contains("no such volume") => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts `service` on a new volume (any old container and volume of it removed
    /// first) and returns its container id.
    fn start_fresh(&self, service: &str) -> anyhow::Result<String> {
        let _ = self.delete(service);
        self.run(&["up", "-d", "--no-deps", service])?;
        let id = self.run(&["ps", "-q", service])?;
        if id.is_empty() {
            bail!("compose started no container for {service}");
        }
        Ok(id)
    }
}

impl ChaosTarget for ComposeCluster {
    fn nodes(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), n.url.clone()))
            .collect()
    }

    fn spares(&self) -> usize {
        self.spares
    }

    fn partitions(&self) -> bool {
        true
    }

    fn partition_keeps_clients(&self) -> bool {
        false
    }

    async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["kill", &self.container(node)?.container]).await
    }

    async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["start", &self.container(node)?.container]).await?;
        self.wait_ready(node).await
    }

    async fn pause(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["pause", &self.container(node)?.container]).await
    }

    async fn resume(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["unpause", &self.container(node)?.container]).await
    }

    async fn partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        for &node in side {
            let c = self.container(node)?.container.clone();
            docker_async(&["network", "disconnect", &self.network, &c]).await?;
        }
        Ok(())
    }

    async fn heal_partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        for &node in side {
            let id = self.node(node)?.id.clone();
            let c = self.container(node)?.clone();
            docker_async(&[
                "network",
                "connect",
                "--ip",
                &c.ip,
                "--alias",
                &id,
                &self.network,
                &c.container,
            ])
            .await?;
        }
        Ok(())
    }

    async fn join(&mut self, node: usize) -> anyhow::Result<()> {
        let compose = self
            .compose
            .clone()
            .context("no compose project to start a spare in")?;
        let n = self.node(node)?;
        if n.container.is_some() {
            bail!("{} joined already", n.id);
        }
        let (service, network) = (n.id.clone(), self.network.clone());
        let container = tokio::task::spawn_blocking(move || -> anyhow::Result<Container> {
            let container = compose.start_fresh(&service)?;
            let ip = address_on(&network, &container)?;
            Ok(Container { container, ip })
        })
        .await
        .context("starting the spare panicked")??;
        self.nodes[node].container = Some(container);
        self.departed.retain(|&n| n != node);
        self.wait_ready(node).await
    }

    async fn exited(&mut self, node: usize) -> anyhow::Result<bool> {
        let c = self.container(node)?.container.clone();
        let state = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &c,
        ])?;
        match state.split_once(' ') {
            Some(("true", _)) => Ok(false),
            Some((_, "0")) => Ok(true),
            _ => bail!("the container stopped: running, exit code = {state}"),
        }
    }

    fn depart(&mut self, node: usize) {
        self.departed.push(node);
        if let (true, Some(compose)) = (self.delete_departed, &self.compose) {
            let service = &self.nodes[node].id;
            // The driver is not timed here: a second's block is harmless.
            match tokio::task::block_in_place(|| compose.delete(service)) {
                Ok(()) => {
                    eprintln!("compose: deleted {service}'s container and volume");
                    // It may start again, on a new volume, and join.
                    self.nodes[node].container = None;
                }
                Err(e) => eprintln!("compose: deleting {service}: {e:#}"),
            }
        }
    }

    async fn stopped(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(c) = &n.container else { continue };
            if self.departed.contains(&i) {
                continue;
            }
            match docker(&["inspect", "-f", "{{.State.Running}}", &c.container]) {
                Ok(running) if running == "true" => {}
                _ => out.push(n.id.clone()),
            }
        }
        out
    }
}

/// The comma-separated, non-empty items of env var `name` (none if unset).
fn list_env(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The address of `container` on `network`.
fn address_on(network: &str, container: &str) -> anyhow::Result<String> {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let ip = docker(&["inspect", "-f", &format, container])?;
    if ip.is_empty() {
        bail!("{container} has no address on network {network}");
    }
    Ok(ip)
}

/// Runs `docker args…` and returns its trimmed stdout; `Err` with stderr on failure.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// [`docker`] off the async executor, for the driver's faults.
async fn docker_async(args: &[&str]) -> anyhow::Result<()> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).map(|_| ())
    })
    .await
    .context("the docker call panicked")?
}
