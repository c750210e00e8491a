//! `fissile-oci compile`: the main job. Loads and plans the releases, makes sure the compilation
//! base exists, compiles what the cache does not have, and reports every package.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use fissile_oci::base::{self, BaseSource, CompilationBaseRequest};
use fissile_oci::compile::orchestrate::{CompilationBase, CompileOptions, Compiler};
use fissile_oci::compile::report::{self, Metrics};
use fissile_oci::compile::scheduler::CancelToken;
use fissile_oci::extract::ExtractLimits;
use fissile_oci::oci::{unpack, OciStore};
use fissile_oci::workdir::{WorkDir, WorkDirError};

use super::base::{default_base_tag, network, sandbox, PrerequisitesArgs};
use super::progress::Display;
use super::run::NetworkArg;
use super::{parse_size, Printer, ReleaseArgs};

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

pub fn run(
    args: CompileArgs,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let plan = super::inspect::load_plan(&args.releases, printer)?;
    let wd = WorkDir::resolve(work_dir)?;
    let _lock = match wd.lock(!args.no_wait, |holder| {
        printer.info(format_args!(
            "waiting for {holder} to finish with {}",
            wd.root().display()
        ))
    }) {
        Ok(lock) => lock,
        Err(e @ WorkDirError::Busy { .. }) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    let store = OciStore::open_or_create(&wd.oci())?;
    let sandbox = sandbox()?;
    let compilation_base = resolve_base(
        &wd,
        &store,
        &sandbox,
        args.base.as_deref(),
        &args.prerequisites.script()?,
        network(args.network),
        printer,
    )?;

    let cancel = CancelToken::new();
    let interrupted = install_interrupt_handler(cancel.clone());
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
        network: network(args.network),
        timeout: args.timeout.map(Duration::from_secs),
        memory_limit: args.memory.map(|m| m as i64),
        limits: ExtractLimits {
            max_unpacked_bytes: args.releases.max_unpacked_size,
            ..ExtractLimits::default()
        },
        source_date_epoch: fissile_oci::oci::layer::source_date_epoch(),
    };
    let compiler = Compiler {
        wd: &wd,
        store: &store,
        base: &compilation_base,
        sandbox: &sandbox,
        options: &options,
    };
    let mut display = Display::new(printer);
    let result = compiler.compile(&plan, cancel.clone(), &mut metrics, &mut |p| {
        display.show(p)
    });
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
    if let Some(path) = &args.summary {
        report::write_summary(path, &report.packages, report.wall.as_secs_f64())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.graph {
        report::write_graph(path, &report.packages)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let count = |s: &str| report.packages.iter().filter(|p| p.status == s).count();
    if printer.log_format == super::LogFormat::Json {
        eprintln!(
            "{}",
            serde_json::json!({"event": "done", "total": report.packages.len(), "compiled": count("compiled"), "cached": count("cached"),
                "failed": count("failed"), "skipped": count("skipped") + count("cancelled"), "wall_seconds": report.wall.as_secs_f64(),
                "failures": report.failures.iter().map(|f| serde_json::json!({"package": f.name, "error": f.error, "log": f.log})).collect::<Vec<_>>()})
        );
    } else if !printer.quiet {
        eprintln!(
            "{} packages: {} compiled, {} cached, {} failed, {} skipped in {:.1}s",
            report.packages.len(),
            count("compiled"),
            count("cached"),
            count("failed"),
            count("skipped") + count("cancelled"),
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
                args.releases
                    .paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                failure.name
            );
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

/// The compilation base to use: `--base` names a compilation base (used as is) or a base (its
/// compilation base is made on first use); without it, the default Debian base is built from
/// the host's apt mirror on first use.
pub fn resolve_base(
    wd: &WorkDir,
    store: &OciStore,
    sandbox: &fissile_oci::sandbox::LibcontainerSandbox,
    base: Option<&str>,
    script: &str,
    network: fissile_oci::sandbox::Network,
    printer: Printer,
) -> anyhow::Result<CompilationBase> {
    let started = std::time::Instant::now();
    let mut progress = |line: &str| {
        printer.info(format_args!(
            "[{:>5.1}s] {line}",
            started.elapsed().as_secs_f64()
        ))
    };
    let base_ref = base.map(str::to_string).unwrap_or_else(default_base_tag);
    let descriptor = match store.resolve(&base_ref)? {
        Some(d) => d,
        None if base.is_none() => {
            let suite = rootfs_builder::debian::host_suite().unwrap_or_else(|| "bookworm".into());
            progress(&format!("no default base yet: building {base_ref} from the host's apt mirror (once; a few minutes)"));
            let packages: Vec<String> = rootfs_builder::DEFAULT_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect();
            base::build_base(wd, store, &BaseSource::Debian { suite: suite.clone() }, &packages, &base_ref, &mut progress).with_context(|| {
                format!(
                    "cannot build the default base debian:{suite}. On an air-gapped host import one instead: \
                     `fissile-oci base build --from rootfs:TARBALL` (or oci:LAYOUT, docker-archive:TAR) --tag {base_ref}`, \
                     or pass --base NAME"
                )
            })?
        }
        None => {
            let known: Vec<String> = base::list(store)?.into_iter().map(|(n, _, _)| n).collect();
            anyhow::bail!(
                "no base {base_ref:?} in {}; known: {}. Build one with `fissile-oci base build --from ...`",
                wd.oci().display(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            );
        }
    };
    let (name, descriptor) = if base::is_compilation_base(&descriptor) {
        (base_ref.clone(), descriptor)
    } else {
        base::ensure_compilation_base(
            wd,
            store,
            sandbox,
            &CompilationBaseRequest {
                base_name: &base_ref,
                base: &descriptor,
                script,
                network,
                timeout: None,
            },
            &mut progress,
        )?
    };
    let rootfs = unpack::unpack_image(store, &descriptor, &wd.rootfs())?;
    let bash = if base::exists_in_rootfs(&rootfs, "bin/bash") {
        "/bin/bash"
    } else if base::exists_in_rootfs(&rootfs, "usr/bin/bash") {
        "/usr/bin/bash"
    } else {
        anyhow::bail!("compilation base {name} has no bash; BOSH packaging scripts need it");
    };
    printer.detail(format_args!(
        "compilation base {name} ({})",
        descriptor.digest()
    ));
    Ok(CompilationBase {
        name,
        descriptor,
        rootfs,
        bash: bash.to_string(),
    })
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // A second ^C: the user means it.
        unsafe { libc::_exit(130) };
    }
}

/// SIGINT/SIGTERM cancel the run: the handler only sets a flag (all it may do); a watcher
/// thread turns it into a cancellation, which kills the running sandboxes.
fn install_interrupt_handler(token: CancelToken) -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe {
            let _ = nix::sys::signal::sigaction(signal, &action);
        }
    }
    let flag = seen.clone();
    std::thread::spawn(move || loop {
        if SIGNALLED.load(Ordering::SeqCst) {
            flag.store(true, Ordering::SeqCst);
            token.cancel();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });
    seen
}
