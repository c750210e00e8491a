//! `fissile-oci shell RELEASE PKG`: an interactive shell in PKG's compile sandbox, with its
//! dependencies compiled (from the cache when they are there) and mounted, its sources staged,
//! and the BOSH environment set, so a packaging script can be debugged step by step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use fissile_oci::compile::key::cache_key;
use fissile_oci::compile::orchestrate::{CompileOptions, Compiler};
use fissile_oci::compile::package::{sandbox_spec, CompileInput};
use fissile_oci::compile::report::Metrics;
use fissile_oci::compile::scheduler::CancelToken;
use fissile_oci::compile::stage::{materialize_packages, stage_sources};
use fissile_oci::extract::ExtractLimits;
use fissile_oci::oci::OciStore;
use fissile_oci::sandbox::{Input, Output, Sandbox};
use fissile_oci::workdir::WorkDir;

use super::base::{network, sandbox, PrerequisitesArgs};
use super::compile::resolve_base;
use super::run::NetworkArg;
use super::{Printer, ReleaseArgs};

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
        only_releases: None,
        max_unpacked_size: ExtractLimits::default().max_unpacked_bytes,
    };
    let plan = super::inspect::load_plan(&release_args, printer)?;
    let target = plan.find(&args.package).map_err(anyhow::Error::msg)?;
    let wd = WorkDir::resolve(work_dir)?;
    let lock = wd.lock(true, |holder| {
        printer.info(format_args!("waiting for {holder}"))
    })?;
    let store = OciStore::open_or_create(&wd.oci())?;
    let sandbox = sandbox()?;
    let net = network(args.network);
    let base = resolve_base(
        &wd,
        &store,
        &sandbox,
        args.base.as_deref(),
        &args.prerequisites.script()?,
        net,
        printer,
    )?;

    // Dependencies first, from the cache when possible.
    let closure = plan.dependency_closure(target);
    let deps_plan = plan.restricted_to(&closure);
    let options = CompileOptions {
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        keep_going: false,
        keep_sandbox: false,
        network: net,
        timeout: None,
        memory_limit: None,
        limits: ExtractLimits::default(),
        source_date_epoch: fissile_oci::oci::layer::source_date_epoch(),
    };
    let compiler = Compiler {
        wd: &wd,
        store: &store,
        base: &base,
        sandbox: &sandbox,
        options: &options,
    };
    let report = compiler.compile(
        &deps_plan,
        CancelToken::new(),
        &mut Metrics::open(None)?,
        &mut |_| {},
    )?;
    if let Some(f) = report.failures.first() {
        anyhow::bail!(
            "dependency {} failed to compile: {} (see {})",
            f.name,
            f.error,
            f.log
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        );
    }
    let keys: HashMap<&str, &str> = report
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.cache_key.as_str()))
        .collect();
    let node = &plan.nodes[target];
    let direct: Vec<(String, String)> = node
        .dependencies
        .iter()
        .map(|&d| {
            (
                plan.nodes[d].name.clone(),
                keys[plan.nodes[d].name.as_str()].to_string(),
            )
        })
        .collect();
    let key = cache_key(
        &node.name,
        &node.fingerprint,
        base.descriptor.digest().as_ref(),
        &direct,
    );

    // A scratch dir kept by `compile --keep-sandbox` is reopened as it was left.
    let kept = find_kept_scratch(&wd, &node.name, &key);
    let scratch = match &kept {
        Some(dir) => dir.clone(),
        None => {
            let dir = wd
                .runs()
                .join(format!("shell-{}-{}", node.name, std::process::id()));
            let (rid, pid) = node.members[0];
            let package = &plan.releases[rid].packages[pid];
            let archive = materialize_packages([((), package)], &dir)?.remove(&());
            stage_sources(
                package,
                archive.as_deref(),
                &dir.join("source"),
                &ExtractLimits::default(),
            )?;
            std::fs::create_dir_all(dir.join("install"))
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
    };
    let input = CompileInput {
        name: node.name.clone(),
        fingerprint: node.fingerprint.clone(),
        key: key.clone(),
        base_rootfs: base.rootfs.clone(),
        source_dir: scratch.join("source"),
        install_dir: scratch.join("install"),
        scratch: scratch.join("shell-sandbox"),
        dependencies: node
            .dependencies
            .iter()
            .map(|&d| {
                (
                    plan.nodes[d].name.clone(),
                    wd.packages().join(keys[plan.nodes[d].name.as_str()]),
                )
            })
            .collect(),
        bash: base.bash.clone(),
        log: scratch.join("shell.log"),
        network: net,
        timeout: None,
        memory_limit: None,
        source_date_epoch: options.source_date_epoch,
    };
    let mut spec = sandbox_spec(&input);
    spec.args = if args.command.is_empty() {
        vec![base.bash.clone(), "-i".into()]
    } else {
        args.command.clone()
    };
    spec.stdin = Input::Inherit;
    spec.stdout = Output::Inherit;
    spec.stderr = Output::Inherit;
    spec.env.push((
        "PS1".into(),
        format!("[{} compile sandbox] \\w# ", node.name),
    ));
    // The shell may take long: let other runs use the work dir meanwhile (our dirs are private).
    drop(lock);
    printer.info(format_args!(
        "sources in /var/vcap/source/{0} ({1}), output to /var/vcap/packages/{0}; run `bash -x ./packaging` to compile",
        node.name,
        if kept.is_some() { "the kept scratch dir of the failed compile" } else { "freshly staged" }
    ));
    let outcome = sandbox.run(&spec);
    let _ = fissile_oci::workdir::remove_tree(&scratch.join("shell-sandbox"));
    if kept.is_none() {
        let _ = fissile_oci::workdir::remove_tree(&scratch);
    }
    Ok(ExitCode::from(outcome?.shell_code().clamp(0, 255) as u8))
}

fn find_kept_scratch(wd: &WorkDir, name: &str, key: &str) -> Option<PathBuf> {
    let wanted = format!("{name}-{}", &key[..12]);
    let mut found: Vec<PathBuf> = std::fs::read_dir(wd.runs())
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(&wanted))
        .filter(|p| p.join("source").is_dir())
        .collect();
    found.sort();
    found.pop()
}
