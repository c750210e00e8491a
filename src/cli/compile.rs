//! `fissile-oci compile`: the main job. Loads and plans the releases, makes sure the compilation
//! base exists, compiles what the cache does not have, and reports every package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use fissile_oci::base::{self, BaseChoice, CompilationBase};
use fissile_oci::cache::Policy;
use fissile_oci::cancel::CancelToken;
use fissile_oci::compile::report::{self, Metrics};
use fissile_oci::compile::scratch;
use fissile_oci::compile::{CompileOptions, CompileReport, Compiler, PackageStatus};
use fissile_oci::oci::OciStore;
use fissile_oci::plan::Plan;
use fissile_oci::sandbox::{LibcontainerSandbox, Network};
use fissile_oci::workdir::{WorkDir, WorkDirLock};

use super::args::{
    memory_limit, parse_size, NetworkArg, PrerequisitesArgs, ReleaseArgs, ScratchArg,
};
use super::progress::Display;
use super::{interrupt, LogFormat, Printer};

#[derive(Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub releases: ReleaseArgs,
    /// Compilation base or base to compile on [default: debian-<host suite>, built on first use]
    #[arg(
        long,
        visible_alias = "stemcell",
        value_name = "REF",
        env = "FISSILE_OCI_BASE"
    )]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    /// Packages compiled at once [default: number of cores]
    #[arg(
        short = 'j',
        long = "workers",
        short_alias = 'W',
        value_name = "N",
        env = "FISSILE_OCI_WORKERS"
    )]
    pub workers: Option<usize>,
    /// Compile everything that does not depend on a failure, then report all failures
    #[arg(long, env = "FISSILE_OCI_KEEP_GOING")]
    pub keep_going: bool,
    /// Keep a failed package's scratch dir and print the command that reopens it
    #[arg(long)]
    pub keep_sandbox: bool,
    /// Network inside compiles: none (loopback only) or host
    #[arg(
        long,
        visible_alias = "docker-network-mode",
        value_enum,
        default_value_t = NetworkArg::None,
        env = "FISSILE_OCI_NETWORK"
    )]
    pub network: NetworkArg,
    /// Kill a package's compile after this many seconds
    #[arg(long, value_name = "SECS", env = "FISSILE_OCI_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Memory limit per compile, e.g. 4G (needs a usable cgroup)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_MEMORY")]
    pub memory: Option<u64>,
    /// Where package build trees go: a private tmpfs per package (nothing touches the disk, all
    /// freed at once when the package ends; `auto` uses one when half of the available memory,
    /// shared by the packages compiled at once, gives each at least 256 MiB, and not with
    /// --memory or --keep-sandbox), or the work dir's disk. A package whose build fills its
    /// tmpfs is compiled again on disk, with a line saying so
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        default_value_t = ScratchArg::Auto,
        env = "FISSILE_OCI_SCRATCH"
    )]
    pub scratch: ScratchArg,
    /// Size of each package's tmpfs [default: half the available memory / --workers]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_SCRATCH_SIZE")]
    pub scratch_size: Option<u64>,
    /// Append fissile-style timing metrics (CSV) to FILE
    #[arg(short = 'M', long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write the package graph, coloured by outcome, as DOT to FILE
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// Write a JSON summary of every package to FILE
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Exit 2 instead of waiting when another run holds the work dir
    #[arg(long)]
    pub no_wait: bool,
    /// After compiling, evict least recently used images until the work dir is at most SIZE
    /// (e.g. 5G): keeps a CI runner's cache under its quota with no extra step
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_MAX_SIZE")]
    pub gc_max_size: Option<u64>,
    /// Accepted for fissile's scripts: fissile-oci never uses a container daemon
    #[arg(long)]
    pub without_docker: bool,
}

/// What every command that compiles sets up first: the plan, the locked work dir, the store,
/// the sandbox and the compilation base.
pub struct Session {
    pub plan: Plan,
    pub wd: WorkDir,
    pub lock: WorkDirLock,
    pub store: OciStore,
    pub sandbox: LibcontainerSandbox,
    pub base: CompilationBase,
}

impl Session {
    pub fn open(
        releases: &ReleaseArgs,
        base: Option<&str>,
        prerequisites: &PrerequisitesArgs,
        network: Network,
        wait: bool,
        work_dir: Option<&Path>,
        printer: Printer,
    ) -> anyhow::Result<Session> {
        let plan = super::inspect::load_plan(releases, printer)?;
        let wd = WorkDir::resolve(work_dir)?;
        let lock = wd.lock(wait, |holder| {
            printer.info(format_args!(
                "waiting for {holder} to finish with {}",
                wd.root().display()
            ))
        })?;
        let store = OciStore::open_or_create(&wd.oci())?;
        let sandbox = LibcontainerSandbox::from_current_exe()?;
        let script = prerequisites.script()?;
        let base = base::resolve_compilation_base(
            &wd,
            &store,
            &sandbox,
            &BaseChoice {
                base,
                script: &script,
                network,
            },
            &mut printer.progress(Instant::now()),
        )?;
        printer.detail(format_args!(
            "compilation base {} ({})",
            base.name,
            base.descriptor.digest()
        ));
        Ok(Session {
            plan,
            wd,
            lock,
            store,
            sandbox,
            base,
        })
    }
}

pub fn run(
    args: CompileArgs,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    if args.without_docker {
        printer.info("note: --without-docker changes nothing: fissile-oci never uses a daemon");
    }
    let session = Session::open(
        &args.releases,
        args.base.as_deref(),
        &args.prerequisites,
        args.network.into(),
        !args.no_wait,
        work_dir,
        printer,
    )?;
    let cancel = CancelToken::new();
    let interrupted = interrupt::install(cancel.clone());
    let mut metrics =
        Metrics::open(args.metrics.as_deref()).with_context(|| "cannot open the metrics file")?;
    metrics.stamp("compile-packages", "start");
    let workers = args
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let memory = args.memory.map(memory_limit);
    let scratch = scratch::decide(
        args.scratch.into(),
        args.scratch_size,
        workers,
        args.keep_sandbox,
        memory,
        scratch::mem_available(),
    )
    .map_err(|message| anyhow::anyhow!(message))?;
    printer.detail(format_args!("scratch: {}", scratch.why));
    let options = CompileOptions {
        workers,
        keep_going: args.keep_going,
        keep_sandbox: args.keep_sandbox,
        network: args.network.into(),
        timeout: args.timeout.map(Duration::from_secs),
        memory_limit: memory,
        scratch_space: scratch.space,
        limits: args.releases.limits(),
        source_date_epoch: fissile_oci::clock::source_date_epoch(),
    };
    let compiler = Compiler {
        wd: &session.wd,
        store: &session.store,
        base: &session.base,
        sandbox: &session.sandbox,
        options: &options,
    };
    let mut display = Display::new(printer);
    let result = compiler.compile(&session.plan, cancel, &mut metrics, &mut |p| {
        display.show(p)
    });
    display.finish();
    metrics.stamp("compile-packages", "done");
    let mut report = result?;

    // Dependencies by name, for the graph.
    let plan = &session.plan;
    for (i, node) in plan.nodes.iter().enumerate() {
        report.packages[i].dependencies = node
            .dependencies
            .iter()
            .map(|&d| plan.nodes[d].name.clone())
            .collect();
    }
    if let Some(path) = &args.summary {
        report::write_summary(path, &report.packages, report.wall.as_secs_f64())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.graph {
        report::write_graph(path, &report.packages)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_outcome(&report, &args.releases, printer);
    if let Some(max_size) = args.gc_max_size {
        // Still under this run's lock. A failed collection costs only disk space.
        let policy = Policy {
            max_size: Some(max_size),
            max_age: None,
        };
        if let Err(e) = super::cache::collect(&session.wd, &policy, printer) {
            printer.warn(format_args!("{e:#}"));
        }
    }
    if report.interrupted || interrupted.load(Ordering::SeqCst) {
        eprintln!("interrupted: running compiles were stopped and their scratch dirs removed");
        return Ok(ExitCode::from(130));
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The closing line (or JSON event) and every failure with the end of its log.
fn print_outcome(report: &CompileReport, releases: &ReleaseArgs, printer: Printer) {
    let skipped = report.count(PackageStatus::Skipped) + report.count(PackageStatus::Cancelled);
    if printer.log_format == LogFormat::Json {
        eprintln!(
            "{}",
            serde_json::json!({"event": "done", "total": report.packages.len(),
                "compiled": report.count(PackageStatus::Compiled), "cached": report.count(PackageStatus::Cached),
                "failed": report.count(PackageStatus::Failed), "skipped": skipped, "wall_seconds": report.wall.as_secs_f64(),
                "failures": report.failures.iter().map(|f| serde_json::json!({"package": f.name, "error": f.error.to_string(), "log": f.log})).collect::<Vec<_>>()})
        );
    } else if !printer.quiet {
        eprintln!(
            "{} packages: {} compiled, {} cached, {} failed, {} skipped in {:.1}s",
            report.packages.len(),
            report.count(PackageStatus::Compiled),
            report.count(PackageStatus::Cached),
            report.count(PackageStatus::Failed),
            skipped,
            report.wall.as_secs_f64()
        );
    }
    for failure in &report.failures {
        eprintln!();
        eprintln!("error: package {} failed: {}", failure.name, failure.error);
        if let Some(log) = &failure.log {
            if !failure.log_tail.is_empty() {
                eprintln!(
                    "  last {} lines of {}:",
                    failure.log_tail.len(),
                    log.display()
                );
                for line in &failure.log_tail {
                    eprintln!("    {line}");
                }
            } else {
                eprintln!("  log: {}", log.display());
            }
        }
        if let Some(kept) = &failure.kept {
            eprintln!("  scratch dir kept: {}", kept.display());
            eprintln!(
                "  reopen it: fissile-oci shell {} {}",
                releases
                    .paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                failure.name
            );
        }
    }
}
