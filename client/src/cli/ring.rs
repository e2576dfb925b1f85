//! `ringkv leave` and `ringkv remove`: membership changes, and following one.
//!
//! `leave` asks the first of `--nodes` to leave, then follows the change until that
//! node is off the ring and has exited: the bar counts the nodes of the new ring that
//! hold all their ranges, and the line under it the partitions they still receive.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use ringkv_client::Client;
use ringkv_client::wire::ClusterBody;

/// Time between two looks at the cluster while following a change.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub async fn leave(client: &Client, follow: bool) -> anyhow::Result<ExitCode> {
    let first = client
        .nodes()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no --nodes given"))?
        .to_owned();
    let answer = client.leave_at(&first).await?;
    eprintln!("{}: {}", answer.node, answer.ring);
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow through the other nodes: the leaving one exits at the end.
    let before = client.cluster_at(&first).await?;
    let others: Vec<String> = before
        .members
        .iter()
        .filter(|m| m.id != answer.node && m.ring != "removed")
        .map(|m| format!("http://{}", m.http))
        .collect();
    let mut last_line = String::new();
    loop {
        let mut views = Vec::new();
        for url in &others {
            if let Ok(body) = client.cluster_at(url).await {
                views.push(body);
            }
        }
        let line = progress_line(&answer.node, &views);
        if line != last_line {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
            last_line = line;
        }
        let gone = views.iter().any(|v| {
            !v.transfers.in_flight
                && v.members
                    .iter()
                    .any(|m| m.id == answer.node && m.ring == "removed")
        });
        if gone && client.health(&first).await.is_err() {
            eprintln!("\n{}: left the ring and stopped", answer.node);
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn remove(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let answer = client.remove(id).await?;
    println!("{}: {}", answer.node, answer.ring);
    Ok(ExitCode::SUCCESS)
}

/// `[#####-----] 3/5 nodes hold their ranges, 120 partitions to move`.
pub fn progress_line(leaving: &str, views: &[ClusterBody]) -> String {
    const WIDTH: usize = 20;
    let Some(best) = views
        .iter()
        .max_by_key(|v| (v.transfers.epoch, v.transfers.nodes_ready))
    else {
        return format!("{leaving}: waiting for the other nodes to answer");
    };
    let t = &best.transfers;
    let (ready, total) = if t.in_flight {
        (t.nodes_ready, t.nodes_total.max(1))
    } else {
        (1, 1)
    };
    let filled = WIDTH * ready.min(total) / total;
    let pending: u64 = views
        .iter()
        .map(|v| {
            v.transfers
                .partitions_to_receive
                .saturating_sub(v.transfers.partitions_received)
        })
        .sum();
    let moved: u64 = views.iter().map(|v| v.transfers.keys_received).sum();
    format!(
        "[{}{}] {ready}/{total} nodes hold their ranges, {pending} partitions to move, {moved} keys moved",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use ringkv_client::wire::{HintsBody, TransfersBody};

    use super::*;

    #[test]
    fn the_bar_fills_with_the_nodes_that_hold_their_ranges() {
        // Half the target ready: half the bar; no view at all: a waiting line.
        let view = ClusterBody {
            node: "n1".into(),
            n: 3,
            r: 2,
            w: 2,
            members: vec![],
            hints: HintsBody::default(),
            anti_entropy: Default::default(),
            transfers: TransfersBody {
                epoch: 3,
                in_flight: true,
                nodes_ready: 2,
                nodes_total: 4,
                partitions_to_receive: 10,
                partitions_received: 4,
                keys_received: 99,
                ..TransfersBody::default()
            },
        };
        let line = progress_line("n5", &[view]);
        assert!(line.starts_with("[##########----------] 2/4"), "{line}");
        assert!(
            line.contains("6 partitions to move, 99 keys moved"),
            "{line}"
        );
        assert!(progress_line("n5", &[]).contains("waiting"));
    }
}
