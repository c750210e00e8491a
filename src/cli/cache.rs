//! `fissile-oci cache list|verify|gc|clean`: the work dir's OCI store, seen and kept tidy.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use fissile_oci::cache::{self, Policy};
use fissile_oci::oci::{gc, OciStore};
use fissile_oci::workdir::{WorkDir, WorkDirLock};

use super::args::{parse_duration, parse_size};
use super::printer::human_size;
use super::Printer;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List the images (bases, compilation bases, compiled packages) with size and last use
    List(ListArgs),
    /// Hash every blob and check every image's manifest, config and layers; exit 1 on problems
    Verify,
    #[command(verbatim_doc_comment)]
    /// Remove what nothing needs, and under a policy the least recently used images
    ///
    /// Always: the run dirs of runs that are gone (killed or crashed), and the blobs, unpacked
    /// packages and bases and logs that no image in the store reaches. With --max-size and/or
    /// --max-age: images not used for longer than the age, then the least recently used until
    /// the whole work dir fits the size. A compilation base goes only once no package is built
    /// on it, a base once no compilation base is made of it. Waits for a running compile (it
    /// holds the work dir), so what a compile uses is never removed.
    ///
    /// Examples:
    ///   fissile-oci cache gc --max-size 5G
    ///   fissile-oci cache gc --max-age 14d
    Gc(GcArgs),
    /// Delete the whole work dir content (store, unpacked bases, compiled packages, logs)
    Clean,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON object per image on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Evict least recently used images until the work dir is at most SIZE (e.g. 500M, 5G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Evict images not used for longer than DURATION (e.g. 36h, 14d, 2w)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Exit 2 instead of waiting when a compile holds the work dir
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(
    command: CacheCommand,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let wd = WorkDir::resolve(work_dir)?;
    match command {
        CacheCommand::List(args) => list(&wd, &args, printer),
        CacheCommand::Verify => verify(&wd, printer),
        CacheCommand::Gc(args) => {
            let _lock = lock(&wd, !args.no_wait, printer)?;
            let policy = Policy {
                max_size: args.max_size,
                max_age: args.max_age,
            };
            collect(&wd, &policy, printer)?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Clean => clean(&wd, printer),
    }
}

fn lock(wd: &WorkDir, wait: bool, printer: Printer) -> anyhow::Result<WorkDirLock> {
    Ok(wd.lock(wait, |holder| {
        printer.info(format_args!(
            "waiting for the work dir lock held by {holder}"
        ))
    })?)
}

fn open_existing(wd: &WorkDir) -> anyhow::Result<Option<OciStore>> {
    if !wd.oci().join("oci-layout").exists() {
        return Ok(None);
    }
    Ok(Some(OciStore::open(&wd.oci())?))
}

fn list(wd: &WorkDir, args: &ListArgs, printer: Printer) -> anyhow::Result<ExitCode> {
    let Some(store) = open_existing(wd)? else {
        printer.info(format_args!("(empty: no store in {})", wd.root().display()));
        return Ok(ExitCode::SUCCESS);
    };
    let entries = cache::inventory(wd, &store)?;
    if entries.is_empty() {
        printer.info("(empty)");
    }
    let unpacked = cache::unpacked_sizes(wd, &entries);
    if args.json {
        for e in &entries {
            let package = match &e.kind {
                cache::EntryKind::Package { name, key } => {
                    serde_json::json!({"name": name, "cache_key": key})
                }
                _ => serde_json::Value::Null,
            };
            println!(
                "{}",
                serde_json::json!({
                    "name": e.name, "kind": e.kind.label(), "manifest": e.descriptor.digest().to_string(),
                    "blob_bytes": e.blob_bytes, "unpacked_bytes": unpacked.get(&e.name).copied().unwrap_or(0),
                    "last_use": e.last_use.map(|t| fissile_oci::clock::format_utc(t / 1000, 'T') + "Z"),
                    "package": package,
                })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:width$}  {:16}  {:>9}  {:>9}  {:20}  MANIFEST",
        "NAME", "KIND", "BLOBS", "UNPACKED", "LAST USE"
    );
    for e in &entries {
        println!(
            "{:width$}  {:16}  {:>9}  {:>9}  {:20}  {}",
            e.name,
            e.kind.label(),
            human_size(e.blob_bytes),
            human_size(unpacked.get(&e.name).copied().unwrap_or(0)),
            e.last_use
                .map(|t| fissile_oci::clock::format_utc(t / 1000, 'T') + "Z")
                .unwrap_or_else(|| "-".into()),
            e.descriptor.digest()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(wd: &WorkDir, printer: Printer) -> anyhow::Result<ExitCode> {
    let Some(store) = open_existing(wd)? else {
        printer.detail(format_args!(
            "no store in {}: nothing to verify",
            wd.root().display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let report = gc::verify(&store)?;
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.problems.is_empty() {
        if !printer.quiet {
            println!(
                "ok: {} blobs, {} verified",
                report.blobs_checked,
                human_size(report.bytes_checked)
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} problem(s) in {}; `fissile-oci cache gc` drops what no image needs, a rerun rebuilds the rest",
            report.problems.len(),
            store.root().display()
        );
        Ok(ExitCode::from(1))
    }
}

/// Collects the work dir (the caller holds the lock) and says what went.
pub fn collect(wd: &WorkDir, policy: &Policy, printer: Printer) -> anyhow::Result<()> {
    let report = cache::collect(wd, policy)
        .with_context(|| format!("cannot collect {}", wd.root().display()))?;
    for victim in &report.evicted {
        printer.detail(format_args!(
            "evicted {} ({}, {})",
            victim.name,
            human_size(victim.bytes),
            if victim.too_old {
                "too old"
            } else {
                "least recently used"
            }
        ));
    }
    printer.info(format_args!(
        "{}: {} -> {}; evicted {} images, removed {} blobs, {} unpacked dirs, {} logs, {} abandoned run dirs",
        wd.root().display(),
        human_size(report.usage_before),
        human_size(report.usage_after),
        report.evicted.len(),
        report.blobs_removed,
        report.dirs_removed,
        report.logs_removed,
        report.runs_removed.len()
    ));
    if let Some(max) = policy.max_size {
        if report.usage_after > max {
            printer.warn(format_args!(
                "{} is still {} (over --max-size {}): what is left is in use or not an image (see `fissile-oci cache list`)",
                wd.root().display(),
                human_size(report.usage_after),
                human_size(max)
            ));
        }
    }
    Ok(())
}

fn clean(wd: &WorkDir, printer: Printer) -> anyhow::Result<ExitCode> {
    let _lock = lock(wd, true, printer)?;
    let entries = match fs_err::read_dir(wd.root()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        // The lock file stays: we hold it, and a waiting run has it open.
        if path.file_name().is_some_and(|n| n == "lock") {
            continue;
        }
        fissile_oci::workdir::remove_tree(&path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    printer.info(format_args!("cleaned {}", wd.root().display()));
    Ok(ExitCode::SUCCESS)
}
