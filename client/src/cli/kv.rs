//! `ringkv put`, `get` and `delete`.

use std::io::{IsTerminal as _, Read as _, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use ringkv_client::{Bytes, Client, GetOutcome, ReadOptions, WriteOptions, WriteOutcome};

use super::{DeleteArgs, EXIT_NOT_FOUND, GetArgs, PutArgs, WriteFlags};

pub async fn put(client: &Client, args: PutArgs) -> anyhow::Result<ExitCode> {
    let value = if args.value == "-" {
        tokio::task::spawn_blocking(|| {
            let mut value = Vec::new();
            std::io::stdin().lock().read_to_end(&mut value)?;
            std::io::Result::Ok(value)
        })
        .await?
        .context("reading the value from stdin")?
    } else {
        args.value.as_encoded_bytes().to_vec()
    };
    let opts = WriteOptions {
        overwrite: args.overwrite,
        ..write_options(&args.write)
    };
    let outcome = client
        .put(
            args.key.as_encoded_bytes(),
            Bytes::from(value),
            args.context.as_deref(),
            &opts,
        )
        .await?;
    print_write(&outcome, &mut std::io::stderr().lock())?;
    Ok(ExitCode::SUCCESS)
}

pub async fn get(client: &Client, args: GetArgs) -> anyhow::Result<ExitCode> {
    let opts = ReadOptions {
        r: args.r,
        timeout_ms: args.timeout_ms,
        resolve_lww: args.lww,
        sloppy: args.sloppy,
    };
    let outcome = client.get(args.key.as_encoded_bytes(), &opts).await?;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let code = print_get(
        &outcome,
        &mut stdout.lock(),
        &mut std::io::stderr().lock(),
        tty,
    )?;
    Ok(code)
}

pub async fn delete(client: &Client, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let outcome = client
        .delete(
            args.key.as_encoded_bytes(),
            args.context.as_deref(),
            &write_options(&args.write),
        )
        .await?;
    print_write(&outcome, &mut std::io::stderr().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn write_options(flags: &WriteFlags) -> WriteOptions {
    WriteOptions {
        w: flags.w,
        timeout_ms: flags.timeout_ms,
        sync: flags.sync,
        sloppy: flags.sloppy,
        overwrite: false,
    }
}

/// Writes a read's result: a value's exact bytes (plus a newline only on a
/// terminal, so a prompt does not land on the value's line), or each sibling as
/// lossy UTF-8 on a `sibling N:` line; the context goes to `meta`.
fn print_get(
    outcome: &GetOutcome,
    out: &mut impl Write,
    meta: &mut impl Write,
    out_is_terminal: bool,
) -> std::io::Result<ExitCode> {
    match outcome {
        GetOutcome::Found { value, context } => {
            out.write_all(value)?;
            if out_is_terminal {
                out.write_all(b"\n")?;
            }
            writeln!(meta, "context: {context}")?;
        }
        GetOutcome::Siblings { values, context } => {
            for (i, value) in values.iter().enumerate() {
                writeln!(out, "sibling {}: {}", i + 1, String::from_utf8_lossy(value))?;
            }
            writeln!(meta, "siblings: {}", values.len())?;
            writeln!(meta, "context: {context}")?;
        }
        GetOutcome::NotFound { context } => {
            writeln!(meta, "not found")?;
            if let Some(context) = context {
                writeln!(meta, "context: {context}")?;
            }
            out.flush()?;
            return Ok(ExitCode::from(EXIT_NOT_FOUND));
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a write's metadata as `name: value` lines.
fn print_write(outcome: &WriteOutcome, meta: &mut impl Write) -> std::io::Result<()> {
    if let Some(context) = &outcome.context {
        writeln!(meta, "context: {context}")?;
    }
    if !outcome.acks.is_empty() {
        writeln!(meta, "acks: {}", outcome.acks.join(","))?;
    }
    if !outcome.hinted.is_empty() {
        let hinted: Vec<String> = outcome
            .hinted
            .iter()
            .map(|(owner, standin)| format!("{owner}->{standin}"))
            .collect();
        writeln!(meta, "hinted: {}", hinted.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_print_get(outcome: &GetOutcome, tty: bool) -> (ExitCode, Vec<u8>, String) {
        let (mut out, mut meta) = (Vec::new(), Vec::new());
        let code = print_get(outcome, &mut out, &mut meta, tty).unwrap();
        (code, out, String::from_utf8(meta).unwrap())
    }

    #[test]
    fn a_found_value_is_written_byte_exact_with_a_newline_only_on_a_terminal() {
        // Proves piped output is exactly the value's bytes and the context goes to the metadata stream.
        let found = GetOutcome::Found {
            value: Bytes::from_static(b"\xffraw"),
            context: "c1".to_owned(),
        };
        let (code, out, meta) = run_print_get(&found, false);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(out, b"\xffraw");
        assert_eq!(meta, "context: c1\n");

        let (_, out, _) = run_print_get(&found, true);
        assert_eq!(out, b"\xffraw\n");
    }

    #[test]
    fn siblings_print_one_line_each_and_succeed() {
        // Proves siblings are numbered lines on stdout with exit 0, and not-found exits 1.
        let siblings = GetOutcome::Siblings {
            values: vec![Bytes::from_static(b"bar"), Bytes::from_static(b"baz")],
            context: "c2".to_owned(),
        };
        let (code, out, meta) = run_print_get(&siblings, false);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(out, b"sibling 1: bar\nsibling 2: baz\n");
        assert!(meta.ends_with("context: c2\n"), "{meta}");

        let missing = GetOutcome::NotFound {
            context: Some("t".to_owned()),
        };
        let (code, out, meta) = run_print_get(&missing, false);
        assert_eq!(code, ExitCode::from(EXIT_NOT_FOUND));
        assert!(out.is_empty());
        assert_eq!(meta, "not found\ncontext: t\n");
    }

    #[test]
    fn write_metadata_lists_context_acks_and_hints() {
        // Proves a write's outcome prints as the documented `name: value` lines.
        let outcome = WriteOutcome {
            context: Some("c".to_owned()),
            acks: vec!["n1".to_owned(), "n4".to_owned()],
            hinted: vec![("n2".to_owned(), "n4".to_owned())],
        };
        let mut meta = Vec::new();
        print_write(&outcome, &mut meta).unwrap();
        assert_eq!(
            String::from_utf8(meta).unwrap(),
            "context: c\nacks: n1,n4\nhinted: n2->n4\n"
        );
    }
}
