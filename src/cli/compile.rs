//! `fissile-oci compile`: the main job. Loads and plans the releases, makes sure the compilation
//! base exists, compiles what the cache does not have (importing what compiled releases bring),
//! and reports every package. `export` runs the same compile first.

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
use fissile_oci::rootless::check::{self, Needs};
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
        let (wd, lock, store) = open_store(work_dir, wait, printer)?;
        preflight(base, &store, printer)?;
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
            "compilation base {} ({}){}",
            base.name,
            base.descriptor.digest(),
            base.stemcell()
                .map(|s| format!(", stemcell {s}"))
                .unwrap_or_default()
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

/// The work dir, locked (waiting for another run when `wait`), and its store.
fn open_store(
    work_dir: Option<&Path>,
    wait: bool,
    printer: Printer,
) -> anyhow::Result<(WorkDir, WorkDirLock, OciStore)> {
    let wd = WorkDir::resolve(work_dir)?;
    let lock = wd.lock(wait, |holder| {
        printer.info(format_args!(
            "waiting for {holder} to finish with {}",
            wd.root().display()
        ))
    })?;
    let store = OciStore::open_or_create(&wd.oci())?;
    Ok((wd, lock, store))
}

/// Rootless, the default base is bootstrapped on first use, and mmdebstrap's unshare mode
/// needs subordinate ids: checked before minutes of work, not after. Says what can be done
/// without (a notice), refuses what cannot.
fn preflight(base: Option<&str>, store: &OciStore, printer: Printer) -> anyhow::Result<()> {
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
    Ok(())
}

/// How a compile runs, resolved from the flags of `compile` or `export`.
pub struct Settings<'a> {
    pub base: Option<&'a str>,
    pub prerequisites: &'a PrerequisitesArgs,
    pub options: CompileOptions,
    pub wait: bool,
    pub metrics: Option<&'a Path>,
    pub graph: Option<&'a Path>,
    pub summary: Option<&'a Path>,
    /// Where the build trees go, and why (shown with -v when something is compiled).
    pub scratch_why: String,
}

impl CompileArgs {
    pub fn settings(&self) -> anyhow::Result<Settings<'_>> {
        let workers = workers(self.workers);
        let memory = self.memory.map(memory_limit);
        let scratch = scratch_space(
            self.scratch.into(),
            self.scratch_size,
            workers,
            self.keep_sandbox,
            memory,
        )?;
        Ok(Settings {
            base: self.base.as_deref(),
            prerequisites: &self.prerequisites,
            options: CompileOptions {
                workers,
                keep_going: self.keep_going,
                keep_sandbox: self.keep_sandbox,
                network: self.network.into(),
                timeout: self.timeout.map(Duration::from_secs),
                memory_limit: memory,
                scratch_space: scratch.space,
                limits: self.releases.limits(),
                source_date_epoch: fissile_oci::clock::source_date_epoch(),
            },
            wait: !self.no_wait,
            metrics: self.metrics.as_deref(),
            graph: self.graph.as_deref(),
            summary: self.summary.as_deref(),
            scratch_why: scratch.why,
        })
    }
}

/// Where the compile's build trees go (`--scratch`, `--scratch-size`), given the host's
/// available memory.
pub fn scratch_space(
    choice: scratch::ScratchChoice,
    size: Option<u64>,
    workers: usize,
    keep_sandbox: bool,
    memory: Option<i64>,
) -> anyhow::Result<scratch::ScratchDecision> {
    scratch::decide(
        choice,
        size,
        workers,
        keep_sandbox,
        memory,
        scratch::mem_available(),
    )
    .map_err(anyhow::Error::msg)
}

/// `-j N`, or one worker per core.
pub fn workers(asked: Option<usize>) -> usize {
    asked
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// A finished compile: the plan, every package's outcome, and the store that holds them.
pub struct Compiled {
    pub wd: WorkDir,
    pub plan: Plan,
    pub report: CompileReport,
    pub store: OciStore,
    /// The compilation base, when the plan needed one (not for compiled releases only).
    pub base: Option<CompilationBase>,
    /// The compilation base's stemcell identity, when there was a base and it has one.
    pub stemcell: Option<fissile_oci::release::Stemcell>,
    /// Whether an interrupt stopped the run.
    pub interrupted: bool,
    _lock: WorkDirLock,
}

/// Loads and plans the releases, then compiles what is not cached on the compilation base
/// (built on first use), importing what compiled releases bring; writes the summary, graph and
/// metrics. A plan of compiled releases only needs no base and no sandbox.
pub fn compile_releases(
    releases: &ReleaseArgs,
    settings: &Settings<'_>,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<Compiled> {
    let mut metrics =
        Metrics::open(settings.metrics).with_context(|| "cannot open the metrics file")?;
    let plan = super::inspect::load_plan(releases, printer)?;
    let (wd, lock, store) = open_store(work_dir, settings.wait, printer)?;
    metrics.stamp("compile-packages", "start");
    let mut display = Display::new(printer);
    // Installed first: building the default base on first use takes minutes, and an
    // interrupted build must remove what it wrote (rootless, the user could not).
    let cancel = CancelToken::new();
    let interrupted = interrupt::install(cancel.clone());
    let (result, stemcell, base) = if plan.needs_compiling() {
        let sandbox = LibcontainerSandbox::from_current_exe()?;
        let script = settings.prerequisites.script()?;
        preflight(settings.base, &store, printer)?;
        let base = base::resolve_compilation_base(
            &wd,
            &store,
            &sandbox,
            &BaseChoice {
                base: settings.base,
                script: &script,
                network: settings.options.network,
                cancel: &cancel,
            },
            &mut printer.progress(Instant::now()),
        )?;
        let stemcell = base.stemcell();
        printer.detail(format_args!("scratch: {}", settings.scratch_why));
        printer.detail(format_args!(
            "compilation base {} ({}){}",
            base.name,
            base.descriptor.digest(),
            stemcell
                .as_ref()
                .map(|s| format!(", stemcell {s}"))
                .unwrap_or_default()
        ));
        let compiler = Compiler {
            wd: &wd,
            store: &store,
            base: &base,
            sandbox: &sandbox,
            options: &settings.options,
        };
        let result = compiler.compile(&plan, cancel, &mut metrics, &mut |p| display.show(p));
        (result, stemcell, Some(base))
    } else {
        let result =
            fissile_oci::compile::import_only(&plan, &wd, &store, &settings.options, &mut |p| {
                display.show(p)
            });
        (result, None, None)
    };
    display.finish();
    metrics.stamp("compile-packages", "done");
    let mut report = result?;

    // Dependencies by name, for the graph.
    for (i, node) in plan.nodes.iter().enumerate() {
        report.packages[i].dependencies = node
            .dependencies
            .iter()
            .map(|&d| plan.nodes[d].name.clone())
            .collect();
    }
    if let Some(path) = settings.summary {
        report::write_summary(path, &report.packages, report.wall.as_secs_f64())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = settings.graph {
        report::write_graph(path, &report.packages)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let interrupted = report.interrupted || interrupted.load(Ordering::SeqCst);
    Ok(Compiled {
        wd,
        plan,
        report,
        store,
        base,
        stemcell,
        interrupted,
        _lock: lock,
    })
}

pub fn run(
    args: CompileArgs,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    if args.without_docker {
        printer.info("note: --without-docker changes nothing: fissile-oci never uses a daemon");
    }
    let compiled = compile_releases(&args.releases, &args.settings()?, work_dir, printer)?;
    let code = finish(&compiled, &args.releases, printer);
    if let Some(max_size) = args.gc_max_size {
        // Still under this run's lock. A failed collection costs only disk space.
        let policy = Policy {
            max_size: Some(max_size),
            max_age: None,
        };
        if let Err(e) = super::cache::collect(&compiled.wd, &policy, printer) {
            printer.warn(format_args!("{e:#}"));
        }
    }
    Ok(code)
}

/// Prints the outcome and gives the exit code of a compile: 130 when interrupted, 1 when a
/// package failed, else 0.
pub fn finish(compiled: &Compiled, releases: &ReleaseArgs, printer: Printer) -> ExitCode {
    let report = &compiled.report;
    print_outcome(report, releases, printer);
    if compiled.interrupted {
        eprintln!("interrupted: running compiles were stopped and their scratch dirs removed");
        return ExitCode::from(130);
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The closing line (or JSON event) and every failure with the end of its log.
fn print_outcome(report: &CompileReport, releases: &ReleaseArgs, printer: Printer) {
    let skipped = report.count(PackageStatus::Skipped) + report.count(PackageStatus::Cancelled);
    if printer.log_format == LogFormat::Json {
        eprintln!(
            "{}",
            serde_json::json!({"event": "done", "total": report.packages.len(),
                "compiled": report.count(PackageStatus::Compiled), "cached": report.count(PackageStatus::Cached),
                "imported": report.count(PackageStatus::Imported),
                "failed": report.count(PackageStatus::Failed), "skipped": skipped, "wall_seconds": report.wall.as_secs_f64(),
                "failures": report.failures.iter().map(|f| serde_json::json!({"package": f.name, "error": f.error.to_string(), "log": f.log})).collect::<Vec<_>>()})
        );
    } else if !printer.quiet {
        let imported = match report.count(PackageStatus::Imported) {
            0 => String::new(),
            n => format!(", {n} imported"),
        };
        eprintln!(
            "{} packages: {} compiled, {} cached{imported}, {} failed, {} skipped in {:.1}s",
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
