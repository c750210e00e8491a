//! `fissile-oci compile`: the main job. Loads and plans the releases, makes sure the compilation
//! base exists, compiles what the cache does not have, and reports every package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use fissile_oci::base::{self, BaseChoice, CompilationBase};
use fissile_oci::cancel::CancelToken;
use fissile_oci::compile::report::{self, Metrics};
use fissile_oci::compile::{CompileOptions, CompileReport, Compiler, PackageStatus};
use fissile_oci::oci::OciStore;
use fissile_oci::plan::Plan;
use fissile_oci::rootless::check::{self, Needs};
use fissile_oci::sandbox::{LibcontainerSandbox, Network};
use fissile_oci::workdir::{WorkDir, WorkDirLock};

use super::args::{parse_size, NetworkArg, PrerequisitesArgs, ReleaseArgs};
use super::progress::Display;
use super::{interrupt, LogFormat, Printer};

#[derive(Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub releases: ReleaseArgs,
    /// Compilation base or base to compile on [default: debian-<host suite>, built on first use]
    #[arg(long, visible_alias = "stemcell", value_name = "REF")]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    /// Packages compiled at once [default: number of cores]
    #[arg(short = 'j', long = "workers", short_alias = 'W', value_name = "N")]
    pub workers: Option<usize>,
    /// Compile everything that does not depend on a failure, then report all failures
    #[arg(long)]
    pub keep_going: bool,
    /// Keep a failed package's scratch dir and print the command that reopens it
    #[arg(long)]
    pub keep_sandbox: bool,
    /// Network inside compiles: none (loopback only) or host
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    /// Kill a package's compile after this many seconds
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Memory limit per compile, e.g. 4G (needs a usable cgroup)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
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

/// What chooses (and, on first use, builds) the compilation base of a [`Session`].
pub struct BaseOptions<'a> {
    /// `--base`; `None` for the default.
    pub base: Option<&'a str>,
    pub prerequisites: &'a PrerequisitesArgs,
    /// Network for the prerequisites script.
    pub network: Network,
    /// Stops building the bases.
    pub cancel: &'a CancelToken,
}

impl Session {
    pub fn open(
        releases: &ReleaseArgs,
        base_options: BaseOptions<'_>,
        wait: bool,
        work_dir: Option<&Path>,
        printer: Printer,
    ) -> anyhow::Result<Session> {
        let BaseOptions {
            base,
            prerequisites,
            network,
            cancel,
        } = base_options;
        let plan = super::inspect::load_plan(releases, printer)?;
        let wd = WorkDir::resolve(work_dir)?;
        let lock = wd.lock(wait, |holder| {
            printer.info(format_args!(
                "waiting for {holder} to finish with {}",
                wd.root().display()
            ))
        })?;
        let store = OciStore::open_or_create(&wd.oci())?;
        // Rootless, the default base is bootstrapped here on first use: mmdebstrap's unshare
        // mode needs subordinate ids. Checked before minutes of work, not after.
        let bootstraps = base.is_none() && store.resolve(&base::default_base_tag())?.is_none();
        let needs = Needs {
            subordinate_ids: bootstraps,
            mmdebstrap: bootstraps,
        };
        let work = if bootstraps {
            format!(
                "compile (the default base {} is built first)",
                base::default_base_tag()
            )
        } else {
            "compile".to_string()
        };
        if let Some(notice) = check::preflight(needs, &work)? {
            printer.info(format_args!("{notice}"));
        }
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
                cancel,
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
    // Installed first: building the default base on first use takes minutes, and an
    // interrupted build must remove what it wrote.
    let cancel = CancelToken::new();
    let interrupted = interrupt::install(cancel.clone());
    let session = match Session::open(
        &args.releases,
        BaseOptions {
            base: args.base.as_deref(),
            prerequisites: &args.prerequisites,
            network: args.network.into(),
            cancel: &cancel,
        },
        !args.no_wait,
        work_dir,
        printer,
    ) {
        Err(e) if interrupted.load(Ordering::SeqCst) => {
            eprintln!("interrupted before compiling: {e}");
            return Ok(ExitCode::from(130));
        }
        session => session?,
    };
    let mut metrics =
        Metrics::open(args.metrics.as_deref()).with_context(|| "cannot open the metrics file")?;
    metrics.stamp("compile-packages", "start");
    let options = CompileOptions {
        workers: args
            .workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1),
        keep_going: args.keep_going,
        keep_sandbox: args.keep_sandbox,
        network: args.network.into(),
        timeout: args.timeout.map(Duration::from_secs),
        memory_limit: args.memory.map(|m| m.min(i64::MAX as u64) as i64),
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
