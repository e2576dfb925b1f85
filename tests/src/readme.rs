//! What the README promises, read from the README itself, so that its tests run the
//! commands exactly as written and check the metrics it lists.
//!
//! The tour (README.md#a-tour) is marked for machines with an HTML comment before
//! each fenced block, invisible on a rendered page:
//! - `<!-- tour: setup -->`: the install step, run at the start of every shell step;
//! - `<!-- tour: dev -->`: the command that starts the cluster, left running;
//! - `<!-- tour: sh -->`: commands run in order by `bash -euo pipefail`; a line ending
//!   in `# => text` must print `text` (`…` in it stands for anything);
//! - `<!-- tour: stdin -->`: lines typed into the terminal of the `dev` command.
//!
//! The metrics are the rows of the table in README.md#metrics whose first cell is a
//! `ringkv_*` name in backticks.

use anyhow::{Context as _, bail};

/// The README of the workspace, as a string.
pub fn read() -> anyhow::Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

/// One marked block of the tour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Setup(String),
    Dev(String),
    Sh(String),
    Stdin(String),
}

/// The tour's steps in README order. Fails on an unknown kind, a marker not followed
/// by a fenced block, or a block left open.
pub fn tour(readme: &str) -> anyhow::Result<Vec<Step>> {
    const MARKER: &str = "<!-- tour: ";
    let mut steps = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(MARKER) else {
            continue;
        };
        let kind = rest
            .strip_suffix("-->")
            .with_context(|| format!("README line {}: marker without `-->`", n + 1))?
            .trim();
        let fence = lines
            .next()
            .filter(|(_, l)| l.starts_with("```"))
            .with_context(|| format!("README line {}: marker not followed by ```", n + 1))?;
        let mut body = String::new();
        loop {
            let (_, l) = lines
                .next()
                .with_context(|| format!("README line {}: block never closed", fence.0 + 1))?;
            if l.trim_end() == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        steps.push(match kind {
            "setup" => Step::Setup(body),
            "dev" => Step::Dev(body),
            "sh" => Step::Sh(body),
            "stdin" => Step::Stdin(body),
            other => bail!("README line {}: unknown tour step {other:?}", n + 1),
        });
    }
    Ok(steps)
}

/// The `# => text` expectations of a shell block, each split at `…` into the pieces
/// that must appear in that order.
pub fn expectations(block: &str) -> Vec<Vec<String>> {
    block
        .lines()
        .filter_map(|line| line.split_once("# => "))
        .map(|(_, text)| {
            text.trim_end()
                .split('…')
                .filter(|piece| !piece.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Whether `output` holds `pieces` in order.
pub fn prints(output: &str, pieces: &[String]) -> bool {
    let mut rest = output;
    for piece in pieces {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// The series names of README.md#metrics, in table order.
pub fn metric_names(readme: &str) -> anyhow::Result<Vec<String>> {
    let section = readme
        .split_once("\n## Metrics\n")
        .context("README has no `## Metrics` section")?
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    let names: Vec<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `ringkv_"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| format!("ringkv_{name}"))
        .collect();
    if names.is_empty() {
        bail!("README.md#metrics lists no `ringkv_*` series");
    }
    Ok(names)
}

/// The metric families of a Prometheus text exposition (its `# TYPE` lines).
pub fn metric_families(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tour_blocks_are_read_in_order_with_their_kinds() {
        // Proves marked blocks come back in order with their bodies, unmarked blocks
        // are ignored, and an unknown kind or an unclosed block is an error.
        let text = "intro\n```sh\nnot this\n```\n<!-- tour: setup -->\n```sh\nexport A=1\n```\n\
                    <!-- tour: dev -->\n```sh\nringkv-node dev\n```\n<!-- tour: stdin -->\n\
                    ```text\nrestart n2\n```\n<!-- tour: sh -->\n```sh\necho hi   # => hi\n```\n";
        assert_eq!(
            tour(text).unwrap(),
            vec![
                Step::Setup("export A=1\n".into()),
                Step::Dev("ringkv-node dev\n".into()),
                Step::Stdin("restart n2\n".into()),
                Step::Sh("echo hi   # => hi\n".into()),
            ]
        );
        assert!(tour("<!-- tour: shell -->\n```sh\nx\n```\n").is_err());
        assert!(tour("<!-- tour: sh -->\n```sh\nx\n").is_err());
        assert!(tour("<!-- tour: sh -->\ntext\n").is_err());
    }

    #[test]
    fn expectations_split_at_ellipses_and_match_in_order() {
        // Proves `# => a…b` expects `a` then `b`, and that order and presence matter.
        let expected = expectations("curl x   # => {\"error\":…\"not_found\"\nls\n");
        assert_eq!(
            expected,
            vec![vec!["{\"error\":".to_owned(), "\"not_found\"".to_owned()]]
        );
        assert!(prints("{\"error\":\"not_found\"}", &expected[0]));
        assert!(!prints("\"not_found\" {\"error\":", &expected[0]));
        assert!(!prints("{\"error\":\"timeout\"}", &expected[0]));
    }

    #[test]
    fn metric_names_come_from_the_metrics_table_only() {
        // Proves names are read from the `## Metrics` table and not from other sections.
        let text = "## HTTP API\n| `ringkv_not_this` | x |\n## Metrics\n\n| series | type |\n|---|---|\n\
                    | `ringkv_a_total` | counter |\n| `ringkv_b` | gauge |\n## How it works\n| `ringkv_c` |\n";
        assert_eq!(
            metric_names(text).unwrap(),
            vec!["ringkv_a_total", "ringkv_b"]
        );
        assert!(metric_names("## Metrics\nnothing\n").is_err());
    }

    #[test]
    fn families_are_the_type_lines() {
        // Proves each `# TYPE` line names one family and samples are not counted.
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n";
        assert_eq!(metric_families(text), vec!["a_total", "h"]);
    }
}
