//! `fissile-oci cache list|verify|gc|clean`: the work dir's OCI store, seen and kept tidy.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use fissile_oci::oci::{gc, store::annotations, OciStore};
use fissile_oci::workdir::WorkDir;

use super::printer::human_size;
use super::Printer;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List the images (bases, compiled packages) in the store with their sizes
    List,
    /// Hash every blob and check every image's manifest, config and layers; exit 1 on problems
    Verify,
    /// Delete blobs and unpacked directories that no image references, and what interrupted
    /// base builds left
    Gc,
    /// Delete the whole work dir content (store, unpacked bases, compiled packages, logs)
    Clean,
}

pub fn run(
    command: CacheCommand,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let wd = WorkDir::resolve(work_dir)?;
    match command {
        CacheCommand::List => list(&wd),
        CacheCommand::Verify => verify(&wd, printer),
        CacheCommand::Gc => collect(&wd, printer),
        CacheCommand::Clean => clean(&wd, printer),
    }
}

fn open_existing(wd: &WorkDir) -> anyhow::Result<Option<OciStore>> {
    if !wd.oci().join("oci-layout").exists() {
        return Ok(None);
    }
    Ok(Some(OciStore::open(&wd.oci())?))
}

fn list(wd: &WorkDir) -> anyhow::Result<ExitCode> {
    let Some(store) = open_existing(wd)? else {
        println!("(empty: no store in {})", wd.root().display());
        return Ok(ExitCode::SUCCESS);
    };
    let mut rows = Vec::new();
    for entry in store.refs()? {
        let mut size = 0u64;
        gc::walk_references(&store, &entry.descriptor, &mut |d| {
            size += d.size();
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("image {:?}: {e}", entry.name))?;
        let notes = annotations(&entry.descriptor);
        let package = notes
            .get("org.cloudfoundry.bosh.package.name")
            .cloned()
            .unwrap_or_default();
        rows.push((
            entry.name,
            human_size(size),
            entry.descriptor.digest().to_string(),
            package,
        ));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    println!(
        "{:width$}  {:>9}  {:71}  PACKAGE",
        "NAME", "SIZE", "MANIFEST"
    );
    for (name, size, digest, package) in rows {
        println!("{name:width$}  {size:>9}  {digest:71}  {package}");
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

fn collect(wd: &WorkDir, printer: Printer) -> anyhow::Result<ExitCode> {
    let _lock = wd.lock(true, |holder| {
        printer.info(format_args!(
            "waiting for the work dir lock held by {holder}"
        ))
    })?;
    let staging = fissile_oci::base::remove_stale_staging(wd)?;
    if !staging.is_empty() && !printer.quiet {
        println!(
            "removed {} dir(s) interrupted base builds left in {}",
            staging.len(),
            wd.runs().display()
        );
    }
    let Some(store) = open_existing(wd)? else {
        return Ok(ExitCode::SUCCESS);
    };
    // Unpacked bases are named by the manifest digest they came from.
    let mut manifests = HashSet::new();
    for entry in store.refs()? {
        manifests.insert(entry.descriptor.digest().to_string().replace(':', "-"));
        manifests.insert(
            entry
                .descriptor
                .digest()
                .to_string()
                .trim_start_matches("sha256:")
                .to_string(),
        );
    }
    let rootfs = wd.rootfs();
    let report = gc::gc(&store, &[(rootfs.as_path(), manifests)])?;
    if !printer.quiet {
        println!(
            "removed {} blobs ({}) and {} unpacked dirs",
            report.blobs_removed,
            human_size(report.bytes_freed),
            report.dirs_removed.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clean(wd: &WorkDir, printer: Printer) -> anyhow::Result<ExitCode> {
    let _lock = wd.lock(true, |holder| {
        printer.info(format_args!(
            "waiting for the work dir lock held by {holder}"
        ))
    })?;
    for dir in [wd.oci(), wd.rootfs(), wd.packages(), wd.runs(), wd.logs()] {
        fissile_oci::workdir::remove_tree(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    printer.info(format_args!("cleaned {}", wd.root().display()));
    Ok(ExitCode::SUCCESS)
}
