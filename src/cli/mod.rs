//! Command-line interface: clap types here, one file per subcommand with its handler.

mod base;
mod cache;
mod compile;
mod inspect;
mod progress;
mod run;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use fissile_oci::extract::ExtractLimits;
use fissile_oci::release::LoadOptions;

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
    SandboxHelper(run::HelperArgs),
}

/// Where releases come from and how they are read; shared by every command that takes releases.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Release paths (tarball, dev release dir, or source dir)
    #[arg(value_name = "RELEASE")]
    pub releases: Vec<PathBuf>,
    /// Release paths, comma-separated (fissile's spelling; adds to the positional ones)
    #[arg(
        short = 'r',
        long = "release",
        value_name = "PATHS",
        value_delimiter = ','
    )]
    pub release_flag: Vec<PathBuf>,
    /// Dev releases: the bosh CLI's blob cache holding package and job archives
    #[arg(long, value_name = "DIR", env = "BOSH_CACHE_DIR")]
    pub bosh_cache: Option<PathBuf>,
    /// Dev releases: read this version instead of the latest (e.g. 3+dev.2)
    #[arg(long, value_name = "VERSION")]
    pub release_version: Option<String>,
    /// Compile only what these instance groups' jobs need (fissile role manifest)
    #[arg(short = 'm', long = "role-manifest", value_name = "FILE")]
    pub role_manifest: Option<PathBuf>,
    /// Only these releases (by name, comma-separated)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub only_releases: Option<Vec<String>>,
    /// Refuse archives that unpack to more than this (e.g. 64G, 500M); guards against bombs
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_unpacked_size: u64,
}

impl ReleaseArgs {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.releases
            .iter()
            .chain(self.release_flag.iter())
            .cloned()
            .collect()
    }

    pub fn load_options(&self) -> LoadOptions {
        let mut options = LoadOptions::new(
            self.bosh_cache
                .clone()
                .unwrap_or_else(LoadOptions::default_bosh_cache),
        );
        options.release_version = self.release_version.clone();
        options.limits = ExtractLimits {
            max_unpacked_bytes: self.max_unpacked_size,
            ..ExtractLimits::default()
        };
        options
    }
}

/// `123`, `10K`, `500M`, `64G`, `1T` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, factor) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let factor: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?}; use K, M, G or T")),
            };
            (&s[..i], factor)
        }
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500M or 64G"))?;
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How output is shown.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub verbose: bool,
    pub quiet: bool,
    pub log_format: LogFormat,
}

impl Printer {
    /// Progress and notices go to stderr so stdout stays parseable.
    pub fn info(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }

    /// Progress and notices go to stderr so stdout stays parseable.
    pub fn detail(&self, message: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("{message}");
        }
    }

    pub fn warn(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("warning: {message}");
        }
    }
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
        Command::SandboxHelper(args) => run::helper(args),
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
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("10K").unwrap(), 10240);
        assert_eq!(parse_size("64G").unwrap(), 64 << 30);
        assert!(parse_size("5X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
