//! The chaos run's faults on the compose cluster (compose/): containers killed with
//! `docker kill` and started again, frozen with `docker pause`, and cut off with
//! `docker network disconnect`, driven through the Docker CLI.
//!
//! `compose/cluster chaos` brings the cluster up and runs the `compose_chaos` test
//! with the environment this module reads: [`CONTAINERS_ENV`] (`n1=<container>,…`
//! in node order), [`NETWORK_ENV`] (the compose network) and optionally [`URLS_ENV`]
//! (the nodes' published HTTP URLs, by default `http://127.0.0.1:8001` to `8005`).
//!
//! A container cut off its network is cut off from clients too (its published port
//! goes through that network), so the workload avoids it, as it avoids a killed or
//! paused one; a 2-node partition is two containers each alone. Reconnecting gives
//! the container back its address (`--ip`, the compose file fixes one per node) and
//! its service name (`--alias`): nodes resolve advertised addresses once, at start.
//!
//! Caveats: `docker kill` followed by `docker start` keeps the container's
//! filesystem and volume, so it is a crash and restart on the same data, like a
//! SIGKILL of a process; it cannot reach a node's disk cache, so unlike a power cut
//! it loses nothing the kernel had accepted.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::chaos::ChaosTarget;
use crate::http::{Api, HttpClient};

/// Env var: `n1=<container id or name>,n2=…`, in node order.
pub const CONTAINERS_ENV: &str = "RINGKV_COMPOSE_CONTAINERS";
/// Env var: the network the containers share.
pub const NETWORK_ENV: &str = "RINGKV_COMPOSE_NETWORK";
/// Env var: the nodes' HTTP URLs from the host, comma-separated, in node order.
pub const URLS_ENV: &str = "RINGKV_COMPOSE_URLS";

/// Bound on a restarted container answering `GET /health`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's container.
#[derive(Debug, Clone)]
struct Container {
    /// The node id, also its service name and alias on the network.
    id: String,
    /// Container id or name, for the Docker CLI.
    container: String,
    /// Its address on the network, given back on reconnect.
    ip: String,
    url: String,
}

/// The compose cluster as a [`ChaosTarget`].
#[derive(Debug)]
pub struct ComposeCluster {
    containers: Vec<Container>,
    network: String,
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
        let urls: Vec<String> = match std::env::var(URLS_ENV) {
            Ok(list) => list.split(',').map(|u| u.trim().to_owned()).collect(),
            Err(_) => (1..=pairs.len())
                .map(|i| format!("http://127.0.0.1:{}", 8000 + i))
                .collect(),
        };
        if urls.len() != pairs.len() {
            bail!(
                "{} containers but {} URLs in {URLS_ENV}",
                pairs.len(),
                urls.len()
            );
        }
        let mut containers = Vec::with_capacity(pairs.len());
        for ((id, container), url) in pairs.into_iter().zip(urls) {
            let format =
                format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
            let ip = docker(&["inspect", "-f", &format, &container])?;
            if ip.is_empty() {
                bail!("container {container} ({id}) has no address on network {network}");
            }
            containers.push(Container {
                id,
                container,
                ip,
                url,
            });
        }
        Ok(Self {
            containers,
            network,
        })
    }

    fn container(&self, node: usize) -> &Container {
        &self.containers[node]
    }

    /// Polls the node's `/health` until it answers 200.
    async fn wait_ready(&self, node: usize) -> anyhow::Result<()> {
        let c = self.container(node);
        let api = Api::new(
            c.url.clone(),
            HttpClient::with_timeout(Duration::from_secs(2)),
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match api.try_health().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("{} not ready within {READY_TIMEOUT:?}: {e:#}", c.id)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl ChaosTarget for ComposeCluster {
    fn nodes(&self) -> Vec<(String, String)> {
        self.containers
            .iter()
            .map(|c| (c.id.clone(), c.url.clone()))
            .collect()
    }

    fn partitions(&self) -> bool {
        true
    }

    fn partition_keeps_clients(&self) -> bool {
        false
    }

    async fn kill(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["kill", &self.container(node).container]).await
    }

    async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["start", &self.container(node).container]).await?;
        self.wait_ready(node).await
    }

    async fn pause(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["pause", &self.container(node).container]).await
    }

    async fn resume(&mut self, node: usize) -> anyhow::Result<()> {
        docker_async(&["unpause", &self.container(node).container]).await
    }

    async fn partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        for &node in side {
            let c = self.container(node).container.clone();
            docker_async(&["network", "disconnect", &self.network, &c]).await?;
        }
        Ok(())
    }

    async fn heal_partition(&mut self, side: &[usize]) -> anyhow::Result<()> {
        for &node in side {
            let c = self.container(node).clone();
            docker_async(&[
                "network",
                "connect",
                "--ip",
                &c.ip,
                "--alias",
                &c.id,
                &self.network,
                &c.container,
            ])
            .await?;
        }
        Ok(())
    }

    async fn stopped(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.containers {
            match docker(&["inspect", "-f", "{{.State.Running}}", &c.container]) {
                Ok(running) if running == "true" => {}
                _ => out.push(c.id.clone()),
            }
        }
        out
    }
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
