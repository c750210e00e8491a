//! `fissile-oci base build|list|name`: base images and the compilation bases made from them.

use std::path::Path;
use std::process::ExitCode;

use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Args, Subcommand};

use fissile_oci::base::{self, BaseSource, CompilationBaseRequest};
use fissile_oci::cancel::CancelToken;
use fissile_oci::oci::store::annotations;
use fissile_oci::oci::OciStore;
use fissile_oci::rootless::check::{self, Needs};
use fissile_oci::sandbox::LibcontainerSandbox;
use fissile_oci::workdir::WorkDir;

use super::args::{NetworkArg, PrerequisitesArgs, RegistryArgs};
use super::printer::human_size;
use super::transfer::TransferDisplay;
use super::{interrupt, Printer};

#[derive(Subcommand, Debug)]
pub enum BaseCommand {
    #[command(verbatim_doc_comment)]
    /// Build a base from SOURCE, then the compilation base on it
    ///
    /// SOURCE is one of: debian:SUITE (mmdebstrap from the host's apt mirror), rootfs:TARBALL_OR_DIR
    /// (e.g. a `docker export`), oci:LAYOUT[:REF] (an OCI layout or oci-archive), docker-archive:TAR
    /// (a `docker save`), stemcell:TARBALL (a BOSH warden/bosh-lite stemcell),
    /// docker://HOST[:PORT]/REPO[:TAG|@DIGEST] (pulled from a registry, e.g. an internal mirror;
    /// the same manifest digest as there), busybox (the host's static busybox and bash; for
    /// tests and demos).
    ///
    /// Every base records the stemcell it is (OS and version, shown by `base list`): from a
    /// stemcell's stemcell.MF, else from its /etc/os-release (ID-VERSION_CODENAME) and
    /// /var/vcap/bosh/etc/stemcell_version as bosh-agent reads them; `export` writes it into
    /// compiled releases.
    ///
    /// The compilation base is the base plus what the prerequisites script changed, run in a
    /// sandbox. Its name is printed on stdout; `compile --base NAME` uses it.
    ///
    /// Examples:
    ///   fissile-oci base build --from debian:bookworm
    ///   fissile-oci base build --from busybox --tag tiny
    ///   fissile-oci base build --from docker-archive:ubuntu.tar --prerequisites prep.sh --network host
    ///   fissile-oci base build --from stemcell:bosh-warden-boshlite-ubuntu-jammy-go_agent.tgz --tag jammy
    ///   fissile-oci base build --from docker://mirror.internal:5000/debian:bookworm --cert-dir certs/
    Build(BuildArgs),
    /// List bases and compilation bases with their stemcell, sizes and dates
    List(ListArgs),
    /// Print the compilation base name for a base and prerequisites script
    Name(NameArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Where the base comes from (see above)
    #[arg(long, value_name = "SOURCE")]
    pub from: BaseSource,
    /// debian: packages to install [default: the usual BOSH build tools]
    #[arg(long, value_delimiter = ',', value_name = "PKGS")]
    pub packages: Option<Vec<String>>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    /// Name of the base in the store [default: derived from SOURCE, e.g. debian-bookworm]
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Network for the prerequisites script: none (loopback only) or host
    #[arg(long, value_enum, default_value_t = NetworkArg::None)]
    pub network: NetworkArg,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// One JSON object per base on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// The base [default: debian-<host suite>]
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
}

pub fn run(
    command: BaseCommand,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    let wd = WorkDir::resolve(work_dir)?;
    match command {
        BaseCommand::Build(args) => build(&wd, args, printer),
        BaseCommand::List(args) => list(&wd, &args, printer),
        BaseCommand::Name(args) => name(&wd, args),
    }
}

fn build(wd: &WorkDir, args: BuildArgs, printer: Printer) -> anyhow::Result<ExitCode> {
    let script = args.prerequisites.script()?;
    let _lock = wd.lock(true, |holder| {
        printer.info(format_args!(
            "waiting for the work dir lock held by {holder}"
        ))
    })?;
    let store = OciStore::open_or_create(&wd.oci())?;
    let tag = args.tag.clone().unwrap_or_else(|| args.from.default_tag());
    let packages = args.packages.clone().unwrap_or_else(|| {
        rootfs_builder::DEFAULT_PACKAGES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let debian = matches!(args.from, BaseSource::Debian { .. });
    let needs = Needs {
        subordinate_ids: debian,
        mmdebstrap: debian,
    };
    if let Some(notice) = check::preflight(needs, &format!("build base {tag}"))? {
        printer.info(format_args!("{notice}"));
    }
    // SIGINT/SIGTERM stop the bootstrap or the prerequisites sandbox and remove what they
    // wrote (rootless, the user could not remove it by hand).
    let cancel = CancelToken::new();
    let interrupted = interrupt::install(cancel.clone());
    let mut progress = printer.progress(std::time::Instant::now());
    progress(&format!(
        "building base {tag} from {}",
        describe(&args.from)
    ));
    let built = match &args.from {
        BaseSource::Registry(reference) => args.registry.client(wd, printer).and_then(|client| {
            base::pull_base(
                &store,
                &client,
                reference,
                &tag,
                &TransferDisplay::new(printer, "pull"),
            )
            .with_context(|| format!("cannot pull base {tag} from docker://{reference}"))
        }),
        source => base::build_base(wd, &store, source, &packages, &tag, &cancel, &mut progress)
            .with_context(|| format!("cannot build base {tag}")),
    }
    .and_then(|base| {
        let sandbox = LibcontainerSandbox::from_current_exe()?;
        let (name, _) = base::ensure_compilation_base(
            wd,
            &store,
            &sandbox,
            &CompilationBaseRequest {
                base_name: &tag,
                base: &base,
                script: &script,
                network: args.network.into(),
                timeout: None,
                cancel: &cancel,
            },
            &mut progress,
        )?;
        Ok((base, name))
    });
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("interrupted: base {tag} was not built; its staging dir is removed");
        return Ok(ExitCode::from(130));
    }
    let (base, name) = built?;
    progress(&format!(
        "base {tag} ({}) and compilation base {name} are ready",
        base.digest()
    ));
    println!("{name}");
    Ok(ExitCode::SUCCESS)
}

fn describe(source: &BaseSource) -> String {
    match source {
        BaseSource::Debian { suite } => format!("Debian {suite} (mmdebstrap; takes a few minutes)"),
        BaseSource::Busybox => "the host's static busybox".into(),
        BaseSource::Rootfs(p) => format!("rootfs {}", p.display()),
        BaseSource::Oci { layout, reference } => format!(
            "OCI layout {}{}",
            layout.display(),
            reference
                .as_deref()
                .map(|r| format!(":{r}"))
                .unwrap_or_default()
        ),
        BaseSource::DockerArchive(p) => format!("docker archive {}", p.display()),
        BaseSource::Stemcell(p) => format!("BOSH stemcell {}", p.display()),
        BaseSource::Registry(r) => format!("docker://{r}"),
    }
}

fn list(wd: &WorkDir, args: &ListArgs, printer: Printer) -> anyhow::Result<ExitCode> {
    let rows = if wd.oci().join("oci-layout").exists() {
        let store = OciStore::open(&wd.oci())?;
        let mut rows = Vec::new();
        for (name, kind, descriptor) in base::list(&store)? {
            let mut size = 0;
            fissile_oci::oci::gc::walk_references(&store, &descriptor, &mut |d| {
                size += d.size();
                Ok(())
            })?;
            rows.push((name, kind, descriptor, size));
        }
        rows
    } else {
        Vec::new()
    };
    if rows.is_empty() {
        // Data on stdout, notices on stderr: an empty list is an empty stdout.
        printer.info("(no bases yet: fissile-oci base build --from debian:SUITE|busybox|...)");
    }
    let created = |d: &oci_spec::image::Descriptor| {
        annotations(d)
            .get("org.opencontainers.image.created")
            .cloned()
    };
    if args.json {
        for (name, kind, descriptor, size) in &rows {
            println!(
                "{}",
                serde_json::json!({"name": name, "kind": kind, "bytes": size,
                    "stemcell": base::stemcell_of(descriptor).map(|s| s.to_string()),
                    "created": created(descriptor), "manifest": descriptor.digest().to_string()})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
    let stemcells: Vec<String> = rows
        .iter()
        .map(|(_, _, d, _)| {
            base::stemcell_of(d)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into())
        })
        .collect();
    let swidth = stemcells.iter().map(String::len).max().unwrap_or(8).max(8);
    println!(
        "{:width$}  {:16}  {:swidth$}  {:>9}  {:20}  MANIFEST",
        "NAME", "KIND", "STEMCELL", "SIZE", "CREATED"
    );
    for ((name, kind, descriptor, size), stemcell) in rows.iter().zip(stemcells) {
        println!(
            "{name:width$}  {kind:16}  {stemcell:swidth$}  {:>9}  {:20}  {}",
            human_size(*size),
            created(descriptor).unwrap_or_else(|| "-".into()),
            descriptor.digest()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn name(wd: &WorkDir, args: NameArgs) -> anyhow::Result<ExitCode> {
    let script = args.prerequisites.script()?;
    let base_ref = args.base.clone().unwrap_or_else(base::default_base_tag);
    let store = OciStore::open_or_create(&wd.oci())?;
    let descriptor = store.resolve(&base_ref)?.with_context(|| {
        format!(
            "base {base_ref:?} is not in {}: build it with `fissile-oci base build --from ...`",
            wd.oci().display()
        )
    })?;
    if base::is_compilation_base(&descriptor) {
        println!("{base_ref}");
    } else {
        println!("{}", base::compilation_base_name(&descriptor, &script)?);
    }
    Ok(ExitCode::SUCCESS)
}
