//! `fissile-oci export`: compiles releases as `compile` does (what is cached or imported is not
//! compiled again), then writes each as a BOSH compiled release tarball and prints its path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use fissile_oci::export::{self, ExportOptions};
use fissile_oci::release::digest::Algorithm;
use fissile_oci::release::Stemcell;

use super::args::{PrerequisitesArgs, ReleaseArgs};
use super::compile::{compile_releases, finish, PackageRunArgs, Scope};
use super::Printer;

pub const EXPORT_ABOUT: &str = "\
Compile releases, then write each as a BOSH compiled release tarball.

Packages are compiled as by `compile` (what the cache has, or what a compiled release given as \
input brings, is not compiled again); then each release becomes \
<name>-<version>-<os>-<stemcell version>.tgz in DIR, the tarball `bosh export-release` writes and \
`bosh upload-release` and `bosh create-env` accept: release.MF with compiled_packages, the job \
archives and license copied byte for byte, each compiled package the install dir as a tgz. The \
paths are printed on stdout. The same inputs give the same bytes (SOURCE_DATE_EPOCH sets every \
mtime, default 0); a different file already at the path is never overwritten.

The stemcell the packages are for comes from the compilation base (a base built with \
`base build --from stemcell:STEMCELL.tgz`, or one whose rootfs has /etc/os-release and \
/var/vcap/bosh/etc/stemcell_version), or from --stemcell. A compiled release given as input \
keeps its own: exporting it again re-emits it (e.g. with --digest sha256) without compiling.

Examples:
  fissile-oci base build --from stemcell:bosh-warden-boshlite-ubuntu-jammy-go_agent.tgz --tag jammy
  fissile-oci export release.tgz --base jammy -o out/
  fissile-oci export release/ --base debian-bookworm --stemcell ubuntu-jammy/1.329
  fissile-oci export out/release-1.0-ubuntu-jammy-1.329.tgz --digest sha256 -o sha256/";

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub releases: ReleaseArgs,
    /// Where to write the compiled release tarballs
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// The stemcell the packages are compiled for, OS/VERSION (e.g. ubuntu-jammy/1.329)
    /// [default: the compilation base's]
    #[arg(long, value_name = "OS/VERSION", value_parser = parse_stemcell)]
    pub stemcell: Option<Stemcell>,
    /// Digest of each compiled package in release.MF [default: the era of the source release's
    /// package digests]
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub digest: Option<DigestArg>,
    /// Compilation base or base to compile on [default: debian-<host suite>, built on first use]
    // Not `--stemcell` as in `compile`: here that names the stemcell the packages are for.
    #[arg(long, value_name = "REF", env = "FISSILE_OCI_BASE")]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    #[command(flatten)]
    pub run: PackageRunArgs,
}

/// `--digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DigestArg {
    Sha1,
    Sha256,
}

fn parse_stemcell(s: &str) -> Result<Stemcell, String> {
    Stemcell::parse(s)
}

pub fn run(
    args: ExportArgs,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let settings = args.run.settings(
        args.base.as_deref(),
        &args.prerequisites,
        &args.releases,
        // A compiled release needs every package: stop at the first failure.
        Scope {
            keep_going: false,
            shard: None,
            shard_wait: Duration::ZERO,
        },
    )?;
    let compiled = compile_releases(&args.releases, &settings, work_dir, printer)?;
    let code = finish(&compiled, &args.releases, printer);
    if compiled.interrupted || !compiled.report.failures.is_empty() {
        eprintln!("nothing exported: every package of a compiled release must compile");
        return Ok(code);
    }

    let options = ExportOptions {
        out_dir: args.output.clone(),
        digest: args.digest.map(|d| match d {
            DigestArg::Sha1 => Algorithm::Sha1,
            DigestArg::Sha256 => Algorithm::Sha256,
        }),
        stemcell: args.stemcell.clone(),
        mtime: fissile_oci::clock::source_date_epoch(),
    };
    if let (Some(flag), Some(base)) = (&args.stemcell, &compiled.stemcell) {
        if flag != base {
            printer.warn(format_args!(
                "--stemcell {flag} overrides the compilation base's stemcell {base}"
            ));
        }
    }
    let exports = export::plan_exports(
        &compiled.plan,
        &compiled.report,
        &compiled.store,
        &options,
        compiled.stemcell.as_ref(),
    )?;
    let mut progress = printer.progress(std::time::Instant::now());
    for e in &exports {
        if let (Some(own), Some(flag)) = (&e.release.stemcell, &args.stemcell) {
            if own != flag {
                printer.warn(format_args!(
                    "{} is a compiled release for {own}: it keeps its stemcell, --stemcell {flag} applies to source releases",
                    e.release.name
                ));
            }
        }
        if !e.dropped_jobs.is_empty() {
            printer.warn(format_args!(
                "{}: jobs left out because not all their packages were selected: {}",
                e.release.name,
                e.dropped_jobs.join(", ")
            ));
        }
        let path = export::write_release(&compiled.store, e, &options, &mut |line| {
            if printer.verbose {
                progress(line)
            }
        })
        .with_context(|| format!("cannot export release {}", e.release.name))?;
        println!("{}", path.display());
    }
    Ok(code)
}
