//! Command-line interface: the top-level clap types and the dispatch here, shared arguments in
//! [`args`], output in [`printer`] and [`progress`], and one file per subcommand whose handler
//! only wires the library.

mod args;
mod base;
mod cache;
mod compile;
mod helper;
mod inspect;
mod interrupt;
mod printer;
mod progress;
mod run;
mod shell;

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
    /// Internal: removes, normalises or packs a tree in a user namespace (rootless).
    #[command(name = "__tree-helper", hide = true)]
    TreeHelper,
}

/// Exit codes of the contract: 0 success, 1 packages failed, 2 bad usage or input, 130 interrupted.
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
        Command::Shell(args) => shell::run(args, cli.work_dir.as_deref(), printer),
        Command::Cache(command) => cache::run(command, cli.work_dir.as_deref(), printer),
        Command::Run(args) => run::run(args, cli.work_dir.as_deref(), printer),
        Command::SandboxHelper(args) => helper::run(args),
        Command::TreeHelper => Ok(ExitCode::from(
            fissile_oci::rootless::tree_helper_main().clamp(0, 255) as u8,
        )),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn the_helpers_subcommands_are_the_ones_their_callers_start() {
        use clap::CommandFactory;
        for name in [
            fissile_oci::sandbox::HELPER_SUBCOMMAND,
            fissile_oci::rootless::TREE_HELPER_SUBCOMMAND,
        ] {
            assert!(Cli::command().find_subcommand(name).is_some(), "{name}");
        }
    }
}
