//! Command-line interface: the top-level clap types and the dispatch here, shared arguments in
//! [`args`], output in [`printer`] and [`progress`], and one file per subcommand whose handler
//! only wires the library.

mod args;
mod base;
mod cache;
mod compile;
mod helper;
mod image;
mod inspect;
mod interrupt;
mod printer;
mod progress;
mod run;
mod shell;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use printer::{LogFormat, Printer};

/// Compile BOSH release packages into OCI image layers, without a container daemon.
#[derive(Parser, Debug)]
#[command(name = "fissile-oci", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// Print more detail (timings, per-release progress)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print only results and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Progress and events as text, or one JSON object per line (on stderr)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Work dir holding the OCI store, unpacked bases, compiled packages and logs [default:
    /// $FISSILE_OCI_WORK_DIR, else $XDG_CACHE_HOME/fissile-oci, else ~/.cache/fissile-oci]
    #[arg(short = 'w', long, global = true, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show releases, packages, fingerprints, dependencies and the compile order.
    ///
    /// Every package and job archive is verified against the digest its release records, so
    /// `inspect` is also a quick integrity check. No sandbox or work dir is needed.
    ///
    /// RELEASE is a path: a release tarball, a directory with an extracted tarball, a release
    /// directory with dev_releases/ (archives from the bosh cache), or a release source directory.
    Inspect(inspect::InspectArgs),
    /// Compile the packages of BOSH releases, each in a sandbox, into OCI layers (the main job).
    ///
    /// Packages whose cache key (fingerprint, dependencies, compilation base) is already in the
    /// store are not recompiled. Failures are reported with the last lines of their logs.
    ///
    /// Examples:
    ///   fissile-oci compile examples/hello-release
    ///   fissile-oci compile -r rel1.tgz,rel2/ -m role-manifest.yml -j 4 --summary out.json
    ///   fissile-oci compile release/ --base busybox --keep-going --keep-sandbox
    Compile(compile::CompileArgs),
    /// Compile, then write runnable images: the base, a layer per package, the jobs.
    ///
    /// The image holds the runtime base's layers (by default the base the packages were compiled
    /// on, without the prerequisites layer), one layer per compiled package (the very blob in the
    /// store, shared by every image that has it) under /var/vcap/packages/, and one layer with
    /// each release's release.MF under /var/vcap/releases/<name>/ and its jobs under
    /// /var/vcap/jobs-src/<job>/. With -m, one image per instance group holding only what its
    /// jobs need, named NAME-GROUP. Labels name the releases, packages (with fingerprints) and
    /// jobs; `created` comes from SOURCE_DATE_EPOCH, so the same inputs give the same digest.
    ///
    /// Registries are reached as skopeo and podman reach them: credentials from --authfile,
    /// $REGISTRY_AUTH_FILE, containers' auth.json or docker's config.json (and their credential
    /// helpers), TLS verified against the system's CAs and --cert-dir. Only missing blobs are
    /// sent. Exit codes: 2 for bad input or refused credentials, 125 when the registry or the
    /// host fails (unreachable, TLS, corrupt data).
    ///
    /// Examples:
    ///   fissile-oci image examples/hello-release
    ///   fissile-oci image rel/ -m roles.yml --tag 1.0 -o docker://registry.example.com/team/rel
    ///   fissile-oci image rel/ -o docker-archive:rel.tar:rel:1.0 && podman load -i rel.tar
    ///   fissile-oci image rel/ -o oci:out/ --runtime-base debian-bookworm
    #[command(verbatim_doc_comment)]
    Image(image::ImageArgs),
    /// Open a shell in a package's compile sandbox (dependencies compiled and mounted).
    ///
    /// Reopens the scratch dir a `compile --keep-sandbox` kept for a failed package, or stages
    /// the package afresh. Give a command after `--` to run it instead of an interactive bash.
    Shell(shell::ShellArgs),
    /// Build and list base images and compilation bases.
    #[command(subcommand)]
    Base(base::BaseCommand),
    /// Look after the work dir's store: list, verify, garbage-collect, wipe.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Run a command in a sandbox (debugging packaging scripts, benchmarks).
    #[command(long_about = run::RUN_ABOUT)]
    Run(run::RunArgs),
    /// Internal: the single-threaded process each sandbox is created from.
    #[command(name = "__sandbox-helper", hide = true)]
    SandboxHelper(helper::HelperArgs),
}

/// Exit codes of the contract: 0 success, 1 packages failed, 2 bad usage or input, 125 the
/// environment failed (a registry unreachable or misbehaving), 130 interrupted.
pub fn run(cli: Cli) -> ExitCode {
    let printer = Printer {
        verbose: cli.verbose,
        quiet: cli.quiet,
        log_format: cli.log_format,
    };
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args, printer),
        Command::Base(command) => base::run(command, cli.work_dir.as_deref(), printer),
        Command::Compile(args) => compile::run(args, cli.work_dir.as_deref(), printer),
        Command::Image(args) => image::run(args, cli.work_dir.as_deref(), printer),
        Command::Shell(args) => shell::run(args, cli.work_dir.as_deref(), printer),
        Command::Cache(command) => cache::run(command, cli.work_dir.as_deref(), printer),
        Command::Run(args) => run::run(args, cli.work_dir.as_deref(), printer),
        Command::SandboxHelper(args) => helper::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 125 when a registry (or the way to it) failed, 130 when interrupted, 2 for everything
/// else: bad input.
fn exit_code(err: &anyhow::Error) -> u8 {
    use fissile_oci::registry::RegistryError;
    for cause in err.chain() {
        if let Some(fissile_oci::image::ImageError::Interrupted) =
            cause.downcast_ref::<fissile_oci::image::ImageError>()
        {
            return 130;
        }
        let registry: Option<&RegistryError> = cause
            .downcast_ref::<RegistryError>()
            .or_else(
                || match cause.downcast_ref::<fissile_oci::image::ImageError>() {
                    Some(fissile_oci::image::ImageError::Registry(e)) => Some(e),
                    _ => None,
                },
            )
            .or_else(
                || match cause.downcast_ref::<fissile_oci::base::BaseError>() {
                    Some(fissile_oci::base::BaseError::Registry(e)) => Some(e),
                    _ => None,
                },
            );
        if let Some(e) = registry {
            return match e {
                RegistryError::Interrupted => 130,
                e if e.is_environment() => 125,
                _ => 2,
            };
        }
    }
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
