//! Command-line interface: the top-level clap types and the dispatch here, shared arguments in
//! [`args`], output in [`printer`] and [`progress`], and one file per subcommand whose handler
//! only wires the library.

mod args;
mod base;
mod cache;
mod compile;
mod completions;
mod doctor;
mod export;
mod image;
mod inspect;
mod interrupt;
mod printer;
mod progress;
mod run;
mod shell;
mod transfer;
mod zygote;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use printer::{LogFormat, Printer};

/// Compile BOSH release packages into OCI image layers, without a container daemon.
#[derive(Parser, Debug)]
#[command(
    name = "fissile-oci",
    version,
    about,
    long_about = None,
    max_term_width = 100,
    after_help = "Exit codes: 0 success, 1 a package failed, 2 bad usage or bad input, 125 the host \
or environment failed (sandbox, disk, missing tool, registry), 130 interrupted. \
`fissile-oci doctor` checks this host."
)]
pub struct Cli {
    /// More detail: -v package logs as they are written and per-release timings, -vv also
    /// libcontainer's own events ($RUST_LOG, when set, chooses the events instead)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only results and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Progress and events as text, or one JSON object per line (on stderr)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FISSILE_OCI_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Work dir holding the OCI store, unpacked bases, compiled packages and logs [default:
    /// $XDG_CACHE_HOME/fissile-oci, else ~/.cache/fissile-oci]
    #[arg(
        short = 'w',
        long,
        global = true,
        value_name = "DIR",
        env = "FISSILE_OCI_WORK_DIR"
    )]
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
    /// directory with dev_releases/ (archives from the bosh cache), a release source directory,
    /// or a compiled release (tarball or extracted; its packages are listed with its stemcell).
    Inspect(inspect::InspectArgs),
    #[command(verbatim_doc_comment)]
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
    /// Compile releases, then write each as a BOSH compiled release tarball.
    #[command(long_about = export::EXPORT_ABOUT)]
    Export(export::ExportArgs),
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
    #[command(verbatim_doc_comment)]
    /// Check that this host can compile: sandboxes, rootless needs, cgroups, space, tools.
    ///
    /// Each check prints ok, warn (works, but less well) or FAIL (compiles cannot run), with the
    /// fix for each problem. Exit 0 when compiles can run, 125 when they cannot.
    Doctor(doctor::DoctorArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) or the man pages.
    ///
    /// Examples:
    ///   fissile-oci completions bash > /etc/bash_completion.d/fissile-oci
    ///   fissile-oci completions zsh > "${fpath[1]}/_fissile-oci"
    ///   fissile-oci completions man --dir /usr/local/share/man/man1
    Completions(completions::CompletionsArgs),
    /// Internal: the single-threaded process that forks the helper of each sandbox.
    #[command(name = "__sandbox-zygote", hide = true)]
    SandboxZygote(zygote::ZygoteArgs),
    /// Internal: removes, normalises or packs a tree in a user namespace (rootless).
    #[command(name = "__tree-helper", hide = true)]
    TreeHelper,
}

/// Exit codes of the contract: 0 success, 1 packages failed, 2 bad usage or input, 125 the host
/// or environment failed, 130 interrupted ([`fissile_oci::error::classify`] tells them apart).
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.verbose);
    let printer = Printer {
        verbose: cli.verbose > 0,
        quiet: cli.quiet,
        log_format: cli.log_format,
    };
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args, printer),
        Command::Base(command) => base::run(command, cli.work_dir.as_deref(), printer),
        Command::Compile(args) => compile::run(args, cli.work_dir.as_deref(), printer),
        Command::Export(args) => export::run(args, cli.work_dir.as_deref(), printer),
        Command::Image(args) => image::run(args, cli.work_dir.as_deref(), printer),
        Command::Shell(args) => shell::run(args, cli.work_dir.as_deref(), printer),
        Command::Cache(command) => cache::run(command, cli.work_dir.as_deref(), printer),
        Command::Run(args) => run::run(args, cli.work_dir.as_deref(), printer),
        Command::Completions(args) => completions::run(args),
        Command::Doctor(args) => doctor::run(args, cli.work_dir.as_deref()),
        Command::SandboxZygote(args) => zygote::run(args),
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
            ExitCode::from(fissile_oci::error::classify(err.as_ref()).exit_code())
        }
    }
}

/// Events of the `tracing` kind (libcontainer's own, and ours) go to stderr when asked for:
/// `$RUST_LOG` chooses them; without it, `-vv` shows libcontainer's and fissile-oci's debug
/// events and `-vvv` everything. The sandbox zygote is this binary again and inherits
/// `$RUST_LOG`, which is set here for it, so the helpers' libcontainer events show too.
fn init_tracing(verbosity: u8) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match (from_env, verbosity) {
        (Some(filter), _) => filter,
        (None, 0 | 1) => return,
        (None, 2) => "libcontainer=debug,libcgroups=debug,fissile_oci=debug".to_string(),
        (None, _) => "trace".to_string(),
    };
    if std::env::var_os("RUST_LOG").is_none() {
        // Before any thread starts: this process is still single-threaded here.
        std::env::set_var("RUST_LOG", &filter);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
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
            fissile_oci::sandbox::ZYGOTE_SUBCOMMAND,
            fissile_oci::rootless::TREE_HELPER_SUBCOMMAND,
        ] {
            assert!(Cli::command().find_subcommand(name).is_some(), "{name}");
        }
    }
}
