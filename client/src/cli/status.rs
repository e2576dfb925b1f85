//! `ringkv status`: the cluster as one node sees it.

use std::process::ExitCode;

use ringkv_client::Client;
use ringkv_client::wire::ClusterBody;

pub async fn status(client: &Client) -> anyhow::Result<ExitCode> {
    let cluster = client.cluster().await?;
    print!("{}", render(&cluster));
    Ok(ExitCode::SUCCESS)
}

/// Asks each node for `/health`; prints one line per node and fails if any did
/// not answer ok.
pub async fn health(client: &Client) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    for node in client.nodes() {
        match client.health(node).await {
            Ok(h) if h.status == "ok" => {
                println!("{node}: ok ({}, {} members alive)", h.node, h.members_alive)
            }
            Ok(h) => {
                all_ok = false;
                println!("{node}: {}", h.status);
            }
            Err(e) => {
                all_ok = false;
                println!("{node}: {e}");
            }
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status report: quorum defaults, a members table with aligned columns
/// (sorted by id), and pending hints per intended owner.
fn render(cluster: &ClusterBody) -> String {
    let mut members: Vec<_> = cluster.members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let mut rows = vec![["ID", "STATE", "HTTP", "CLUSTER"]];
    rows.extend(
        members
            .iter()
            .map(|m| [&*m.id, &*m.state, &*m.http, &*m.cluster]),
    );

    let mut widths = [0; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut text = format!(
        "node {} answered: n={} r={} w={}, {} members\n\n",
        cluster.node,
        cluster.n,
        cluster.r,
        cluster.w,
        cluster.members.len()
    );
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }

    let pending: Vec<String> = cluster
        .hints
        .pending
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(owner, count)| format!("{owner}={count}"))
        .collect();
    text.push_str("\npending hints: ");
    if pending.is_empty() {
        text.push_str("none");
    } else {
        text.push_str(&pending.join(" "));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use ringkv_client::wire::{HintsBody, MemberBody};

    use super::*;

    fn member(id: &str, state: &str, http: &str, cluster: &str) -> MemberBody {
        MemberBody {
            id: id.to_owned(),
            http: http.to_owned(),
            cluster: cluster.to_owned(),
            state: state.to_owned(),
        }
    }

    #[test]
    fn status_renders_an_aligned_table_and_hints() {
        // Proves columns align across rows of different widths, members sort by id, and hints are listed.
        let cluster = ClusterBody {
            node: "n1".to_owned(),
            n: 3,
            r: 2,
            w: 2,
            members: vec![
                member("n10", "suspect", "127.0.0.1:8010", "127.0.0.1:7010"),
                member("n1", "alive", "10.0.0.1:8001", "10.0.0.1:7001"),
            ],
            hints: HintsBody {
                pending: [("n10".to_owned(), 12), ("n2".to_owned(), 0)].into(),
            },
            anti_entropy: Default::default(),
        };
        let expected = "\
node n1 answered: n=3 r=2 w=2, 2 members

ID   STATE    HTTP            CLUSTER
n1   alive    10.0.0.1:8001   10.0.0.1:7001
n10  suspect  127.0.0.1:8010  127.0.0.1:7010

pending hints: n10=12
";
        assert_eq!(render(&cluster), expected);
    }

    #[test]
    fn status_without_hints_says_none() {
        // Proves an empty hint map is shown as `none` rather than a blank.
        let cluster = ClusterBody {
            node: "n1".to_owned(),
            n: 1,
            r: 1,
            w: 1,
            members: vec![member("n1", "alive", "h:1", "c:1")],
            hints: HintsBody::default(),
            anti_entropy: Default::default(),
        };
        assert!(render(&cluster).ends_with("pending hints: none\n"));
    }
}
