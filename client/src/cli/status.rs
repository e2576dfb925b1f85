//! `ringkv status`: the cluster as one node sees it, and the hints every live node
//! holds.
//!
//! Hints live on the stand-ins that took the writes, so one node's `/cluster` shows
//! only its own; `status` asks every member the first node reports alive or suspect
//! for its `/cluster` and shows the hints each holds and their sum per owner.

use std::collections::BTreeMap;
use std::process::ExitCode;

use ringkv_client::Client;
use ringkv_client::wire::ClusterBody;

/// What one member answered when asked for its hints.
type HeldHints = Result<BTreeMap<String, u64>, String>;

pub async fn status(client: &Client) -> anyhow::Result<ExitCode> {
    let cluster = client.cluster().await?;
    let mut asks = tokio::task::JoinSet::new();
    for member in cluster
        .members
        .iter()
        .filter(|m| m.id != cluster.node && matches!(m.state.as_str(), "alive" | "suspect"))
    {
        let client = client.clone();
        let (id, url) = (member.id.clone(), format!("http://{}", member.http));
        asks.spawn(async move {
            let held = match client.cluster_at(&url).await {
                Ok(body) => Ok(body.hints.pending),
                Err(e) => Err(e.to_string()),
            };
            (id, held)
        });
    }
    let mut held: BTreeMap<String, HeldHints> = asks.join_all().await.into_iter().collect();
    held.insert(cluster.node.clone(), Ok(cluster.hints.pending.clone()));
    print!("{}", render(&cluster, &held));
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

/// The status report: quorum defaults, a members table with aligned columns (sorted
/// by id), the hints each asked node holds (`owner=count`), and their sum per owner.
fn render(cluster: &ClusterBody, held: &BTreeMap<String, HeldHints>) -> String {
    let mut members: Vec<_> = cluster.members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let mut rows = vec![["ID", "STATE", "RING", "HTTP", "CLUSTER"]];
    rows.extend(
        members
            .iter()
            .map(|m| [&*m.id, &*m.state, &*m.ring, &*m.http, &*m.cluster]),
    );
    let t = &cluster.transfers;
    let change = if t.in_flight {
        format!(
            "a change is in flight ({}/{} nodes hold their ranges)",
            t.nodes_ready, t.nodes_total
        )
    } else {
        "no change in flight".to_owned()
    };
    let mut text = format!(
        "node {} answered: n={} r={} w={}, {} members, ring epoch {}, {change}\n\n",
        cluster.node,
        cluster.n,
        cluster.r,
        cluster.w,
        cluster.members.len(),
        t.epoch,
    );
    text.push_str(&table(&rows));

    let mut total: BTreeMap<&str, u64> = BTreeMap::new();
    let mut silent = Vec::new();
    let mut hint_rows = vec![["HOLDER".to_owned(), "HINTS FOR OWNERS".to_owned()]];
    for (holder, answer) in held {
        let cell = match answer {
            Ok(pending) => {
                for (owner, count) in pending {
                    *total.entry(owner.as_str()).or_default() += count;
                }
                owner_counts(
                    pending
                        .iter()
                        .map(|(owner, count)| (owner.as_str(), *count)),
                )
            }
            Err(e) => {
                silent.push(holder.as_str());
                format!("no answer: {e}")
            }
        };
        hint_rows.push([holder.clone(), cell]);
    }
    text.push('\n');
    text.push_str(&table(&hint_rows));
    text.push_str("\npending hints: ");
    text.push_str(&owner_counts(total.into_iter()));
    if !silent.is_empty() {
        text.push_str(&format!(" (without {}: no answer)", silent.join(", ")));
    }
    text.push('\n');
    text
}

/// `n2=4 n3=1`, leaving out zero counts, or `none`.
fn owner_counts<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> String {
    let listed: Vec<String> = counts
        .filter(|(_, count)| *count > 0)
        .map(|(owner, count)| format!("{owner}={count}"))
        .collect();
    if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(" ")
    }
}

/// Rows as left-aligned columns two spaces apart, without trailing spaces.
fn table<const N: usize, S: AsRef<str>>(rows: &[[S; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.as_ref().chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{:<width$}", cell.as_ref()))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
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
            ring: "member".to_owned(),
        }
    }

    fn held(entries: &[(&str, &[(&str, u64)])]) -> BTreeMap<String, HeldHints> {
        entries
            .iter()
            .map(|(holder, pending)| {
                let pending = pending.iter().map(|(o, c)| ((*o).to_owned(), *c)).collect();
                ((*holder).to_owned(), Ok(pending))
            })
            .collect()
    }

    fn cluster(members: Vec<MemberBody>) -> ClusterBody {
        ClusterBody {
            node: "n1".to_owned(),
            n: 3,
            r: 2,
            w: 2,
            members,
            hints: HintsBody::default(),
            anti_entropy: Default::default(),
            transfers: Default::default(),
        }
    }

    #[test]
    fn status_renders_aligned_tables_and_sums_hints_over_holders() {
        // Proves columns align across rows of different widths, members sort by id, each
        // holder's hints are listed, and the total adds up every holder's count per owner.
        let cluster = cluster(vec![
            member("n10", "suspect", "127.0.0.1:8010", "127.0.0.1:7010"),
            member("n1", "alive", "10.0.0.1:8001", "10.0.0.1:7001"),
        ]);
        let held = held(&[
            ("n1", &[("n10", 12), ("n2", 0)]),
            ("n10", &[("n2", 3)]),
            ("n3", &[("n10", 1), ("n2", 4)]),
        ]);
        let expected = "\
node n1 answered: n=3 r=2 w=2, 2 members, ring epoch 0, no change in flight

ID   STATE    RING    HTTP            CLUSTER
n1   alive    member  10.0.0.1:8001   10.0.0.1:7001
n10  suspect  member  127.0.0.1:8010  127.0.0.1:7010

HOLDER  HINTS FOR OWNERS
n1      n10=12
n10     n2=3
n3      n10=1 n2=4

pending hints: n10=13 n2=7
";
        assert_eq!(render(&cluster, &held), expected);
    }

    #[test]
    fn status_without_hints_says_none() {
        // Proves holders with empty or all-zero hint maps show `none`, as does the total.
        let cluster = cluster(vec![member("n1", "alive", "h:1", "c:1")]);
        let text = render(&cluster, &held(&[("n1", &[]), ("n2", &[("n3", 0)])]));
        assert!(text.contains("\nn1      none\nn2      none\n"), "{text}");
        assert!(text.ends_with("\npending hints: none\n"), "{text}");
    }

    #[test]
    fn status_names_the_nodes_that_did_not_answer() {
        // Proves a holder that did not answer is shown with its error, and the total says
        // it leaves that node out instead of claiming the count is complete.
        let cluster = cluster(vec![member("n1", "alive", "h:1", "c:1")]);
        let mut held = held(&[("n1", &[("n2", 2)])]);
        held.insert("n3".to_owned(), Err("unreachable".to_owned()));
        let text = render(&cluster, &held);
        assert!(
            text.contains("\nn3      no answer: unreachable\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\npending hints: n2=2 (without n3: no answer)\n"),
            "{text}"
        );
    }
}
