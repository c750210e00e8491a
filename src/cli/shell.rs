//! `fissile-oci shell RELEASE PKG`: an interactive shell in PKG's compile sandbox, with its
//! dependencies compiled (from the cache when they are there) and mounted, its sources staged,
//! and the BOSH environment set, so a packaging script can be debugged step by step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use fissile_oci::cancel::CancelToken;
use fissile_oci::compile::{CompileOptions, Compiler};
use fissile_oci::extract::ExtractLimits;
use fissile_oci::sandbox::{Input, Output, Sandbox, ScratchSpace};

use super::args::{NetworkArg, PrerequisitesArgs, ReleaseArgs};
use super::compile::{BaseOptions, Session};
use super::Printer;

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Release path(s), comma-separated (as for compile)
    #[arg(value_name = "RELEASE")]
    pub release: String,
    /// The package whose compile sandbox to open (release/name when several releases have it)
    #[arg(value_name = "PKG")]
    pub package: String,
    /// Dev releases: the bosh CLI's blob cache holding package and job archives
    #[arg(long, value_name = "DIR", env = "BOSH_CACHE_DIR")]
    pub bosh_cache: Option<PathBuf>,
    /// Dev releases: read this version instead of the latest
    #[arg(long, value_name = "VERSION")]
    pub release_version: Option<String>,
    /// Compilation base or base [default: as for compile]
    #[arg(long, visible_alias = "stemcell", value_name = "REF")]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    /// Network inside the shell: none (loopback only) or host
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// Command to run instead of an interactive bash
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(args: ShellArgs, work_dir: Option<&Path>, printer: Printer) -> anyhow::Result<ExitCode> {
    let release_args = ReleaseArgs {
        releases: args
            .release
            .split(',')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        release_flag: Vec::new(),
        bosh_cache: args.bosh_cache.clone(),
        release_version: args.release_version.clone(),
        role_manifest: None,
        roles: None,
        only_releases: None,
        max_unpacked_size: ExtractLimits::default().max_unpacked_bytes,
    };
    let session = Session::open(
        &release_args,
        BaseOptions {
            base: args.base.as_deref(),
            prerequisites: &args.prerequisites,
            network: args.network.into(),
            cancel: &CancelToken::new(),
        },
        true,
        work_dir,
        printer,
    )?;
    let target = session
        .plan
        .find(&args.package)
        .map_err(anyhow::Error::msg)?;
    let options = CompileOptions {
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        keep_going: false,
        keep_sandbox: false,
        network: args.network.into(),
        timeout: None,
        memory_limit: None,
        // A shell reopens kept build trees, which are on disk.
        scratch_space: ScratchSpace::Disk,
        limits: ExtractLimits::default(),
        source_date_epoch: fissile_oci::clock::source_date_epoch(),
        shard: None,
        shard_wait: std::time::Duration::ZERO,
    };
    let compiler = Compiler {
        wd: &session.wd,
        store: &session.store,
        base: &session.base,
        sandbox: &session.sandbox,
        options: &options,
        context: Default::default(),
    };
    let shell = compiler.prepare_shell(&session.plan, target)?;
    let mut spec = shell.spec.clone();
    spec.args = if args.command.is_empty() {
        vec![session.base.bash.clone(), "-i".into()]
    } else {
        args.command.clone()
    };
    spec.stdin = Input::Inherit;
    spec.stdout = Output::Inherit;
    spec.stderr = Output::Inherit;
    spec.env.push((
        "PS1".into(),
        format!("[{} compile sandbox] \\w# ", shell.package),
    ));
    // The shell may take long: let other runs use the work dir meanwhile (our dirs are private).
    drop(session.lock);
    printer.info(format_args!(
        "sources in /var/vcap/source/{0} ({1}), output to /var/vcap/packages/{0}; run `bash -x ./packaging` to compile",
        shell.package,
        if shell.reopened { "the kept scratch dir of the failed compile" } else { "freshly staged" }
    ));
    let outcome = session.sandbox.run(&spec, &CancelToken::new());
    shell.clean_up();
    Ok(ExitCode::from(outcome?.shell_code().clamp(0, 255) as u8))
}
