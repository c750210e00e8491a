//! `fissile-oci image`: compiles what is missing, then writes runnable images (one, or one per
//! instance group with `-m`) to the work dir's store, an OCI layout, an archive or a registry.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use oci_spec::image::Descriptor;

use fissile_oci::base::KIND_ANNOTATION;
use fissile_oci::cancel::CancelToken;
use fissile_oci::image::{
    build_image, default_name, docker_archive_name, write_docker_archive, write_layout,
    write_oci_archive, Destination, ImageRequest, RuntimeBase,
};
use fissile_oci::oci::store::annotations;
use fissile_oci::oci::OciStore;
use fissile_oci::plan::role_manifest::RoleManifest;
use fissile_oci::plan::{NodeId, ReleaseId};
use fissile_oci::registry::push_image;

use super::args::RegistryArgs;
use super::compile::{self, CompileArgs, Compiled};
use super::printer::human_size;
use super::transfer::TransferDisplay;
use super::{interrupt, LogFormat, Printer};

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub compile: CompileArgs,
    /// The image to build on: a base (or any image) in the store [default: the base the packages
    /// were compiled on, without the prerequisites layer]
    #[arg(long, value_name = "REF")]
    pub runtime_base: Option<String>,
    /// The image's name (its tag); with -m each instance group's image is NAME-GROUP [default:
    /// the tag DEST names, else the release names joined by '-']
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Where the images go: oci:DIR[:TAG] (an OCI layout), oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME[:TAG]] (for docker load and podman load),
    /// docker://HOST[:PORT]/REPO[:TAG] (a registry) [default: the work dir's store]
    #[arg(short = 'o', long = "output", value_name = "DEST")]
    pub output: Option<Destination>,
}

/// One image to build: its name and what it holds.
struct Planned {
    name: String,
    /// `org.opencontainers.image.title`: the releases (and the group), whatever the name, so
    /// that the same image gets the same digest under any tag.
    title: String,
    group: Option<String>,
    packages: Vec<NodeId>,
    jobs: Vec<(ReleaseId, usize)>,
}

pub fn run(args: ImageArgs, work_dir: Option<&Path>, printer: Printer) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.compile.shard.is_none(),
        "--shard splits a compile across runners: run `compile --shard I/N` on each, then `image` once, which pulls what they compiled"
    );
    // Names are checked before minutes of compiling, as far as they are known.
    if let (Some(tag), Some(dest_tag)) = (&args.tag, args.output.as_ref().and_then(|d| d.tag())) {
        anyhow::ensure!(
            tag == dest_tag,
            "--tag {tag} and the destination's tag {dest_tag} differ: give the name once"
        );
    }
    if let (Some(tag), Some(dest)) = (&args.tag, &args.output) {
        dest.check_image_name(tag).map_err(anyhow::Error::msg)?;
    }
    let compiled: Compiled = compile::compile_releases(
        &args.compile.releases,
        &args.compile.settings()?,
        work_dir,
        printer,
    )?;
    let exit_code = compile::finish(&compiled, &args.compile.releases, printer);
    if compiled.interrupted || !compiled.report.failures.is_empty() {
        eprintln!("no image written: not every package compiled");
        return Ok(exit_code);
    }
    let report = &compiled.report;
    let plan = &compiled.plan;
    let store = &compiled.store;
    let keys: Vec<String> = report
        .packages
        .iter()
        .map(|p| p.cache_key.clone())
        .collect();
    let base = match &args.runtime_base {
        Some(name) => RuntimeBase::named(store, name)?,
        None => match &compiled.base {
            Some(base) => RuntimeBase::of_compilation_base(store, &base.descriptor)?,
            None => anyhow::bail!(
                "every package came from compiled releases, so there is no compilation base to run them on: pass --runtime-base NAME (a base in the store)"
            ),
        },
    };
    printer.detail(format_args!("runtime base {} ({})", base.name, base.digest));

    let destination = args.output.clone().unwrap_or(Destination::Layout {
        dir: compiled.wd.oci(),
        tag: None,
    });
    let selected = |rid: ReleaseId| {
        args.compile
            .releases
            .only_releases
            .as_ref()
            .is_none_or(|only| only.contains(&plan.releases[rid].name))
    };
    let title = default_name(
        (0..plan.releases.len())
            .filter(|&r| selected(r))
            .map(|r| plan.releases[r].name.as_str()),
    );
    let name = args
        .tag
        .clone()
        .or_else(|| destination.tag().map(str::to_string))
        .unwrap_or_else(|| title.clone());
    let planned: Vec<Planned> = match &args.compile.releases.role_manifest {
        Some(path) => plan
            .instance_groups(&RoleManifest::read(path)?)?
            .into_iter()
            .filter(|g| g.jobs.iter().all(|&(r, _)| selected(r)))
            .map(|g| Planned {
                name: format!("{name}-{}", g.name),
                title: format!("{title}-{}", g.name),
                group: Some(g.name),
                packages: g.packages,
                jobs: g.jobs,
            })
            .collect(),
        None => vec![Planned {
            name: name.clone(),
            title: title.clone(),
            group: None,
            packages: (0..plan.nodes.len()).collect(),
            jobs: (0..plan.releases.len())
                .filter(|&r| selected(r))
                .flat_map(|r| (0..plan.releases[r].jobs.len()).map(move |j| (r, j)))
                .collect(),
        }],
    };
    anyhow::ensure!(
        !planned.is_empty(),
        "the role manifest names no instance group to build"
    );
    for p in &planned {
        destination
            .check_image_name(&p.name)
            .map_err(anyhow::Error::msg)?;
    }

    // Build each image in the store.
    let runs = compiled.wd.runs();
    fs_err::create_dir_all(&runs)?;
    let staging = tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(&runs)
        .with_context(|| format!("cannot create a scratch dir in {}", runs.display()))?;
    let limits = args.compile.releases.limits();
    let created = fissile_oci::clock::source_date_epoch();
    let mut images: Vec<(String, Descriptor)> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        let manifest = build_image(
            store,
            &ImageRequest {
                plan,
                keys: &keys,
                packages: &p.packages,
                jobs: &p.jobs,
                base: &base,
                title: &p.title,
                instance_group: p.group.as_deref(),
                created,
                limits: &limits,
            },
            &staging.path().join(i.to_string()),
        )
        .with_context(|| format!("cannot build image {}", p.name))?;
        printer.detail(format_args!(
            "image {}: {} packages, {} jobs, {}",
            p.name,
            p.packages.len(),
            p.jobs.len(),
            manifest.digest()
        ));
        images.push((p.name.clone(), manifest));
    }

    // Then where they go; ^C from here on stops the transfer (what it wrote is removed).
    let cancel = CancelToken::new();
    let _ = interrupt::install(cancel.clone());
    let written = write(
        &destination,
        store,
        &images,
        &args.compile.run.registry,
        &compiled.wd,
        printer,
        &cancel,
    )?;
    for (reference, digest) in written {
        println!("{reference} {digest}");
        if printer.log_format == LogFormat::Json && !printer.quiet {
            eprintln!(
                "{}",
                serde_json::json!({"event": "image", "reference": reference, "digest": digest})
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `images` to `destination`; returns each one's reference there and digest.
fn write(
    destination: &Destination,
    store: &OciStore,
    images: &[(String, Descriptor)],
    registry: &RegistryArgs,
    wd: &fissile_oci::workdir::WorkDir,
    printer: Printer,
    cancel: &CancelToken,
) -> anyhow::Result<Vec<(String, String)>> {
    let created = fissile_oci::clock::source_date_epoch();
    let digests = images.iter().map(|(_, d)| d.digest().to_string());
    match destination {
        Destination::Layout { dir, .. } if same_dir(dir, &wd.oci()) => {
            name_in_store(store, images)?;
            Ok(images
                .iter()
                .map(|(n, _)| format!("oci:{}:{n}", store.root().display()))
                .zip(digests)
                .collect())
        }
        Destination::Layout { dir, .. } => {
            write_layout(store, images, dir, cancel)
                .with_context(|| format!("cannot write the layout {}", dir.display()))?;
            Ok(images
                .iter()
                .map(|(n, _)| format!("oci:{}:{n}", dir.display()))
                .zip(digests)
                .collect())
        }
        Destination::OciArchive { file, .. } => {
            write_oci_archive(store, images, file, created, cancel)
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(images
                .iter()
                .map(|(n, _)| format!("oci-archive:{}:{n}", file.display()))
                .zip(digests)
                .collect())
        }
        Destination::DockerArchive { file, .. } => {
            let named: Vec<(String, Descriptor)> = images
                .iter()
                .map(|(n, d)| (docker_archive_name(n), d.clone()))
                .collect();
            write_docker_archive(store, &named, file, created, cancel)
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(named
                .iter()
                .map(|(n, _)| format!("docker-archive:{}:{n}", file.display()))
                .zip(digests)
                .collect())
        }
        Destination::Registry(reference) => {
            let client = registry.client(wd, printer)?.with_cancel(cancel.clone());
            let display = TransferDisplay::new(printer, "push");
            let mut out = Vec::new();
            for (name, manifest) in images {
                let target = reference.with_tag(name);
                let report = push_image(&client, store, manifest, &target, &display)
                    .with_context(|| format!("cannot push docker://{target}"))?;
                printer.info(format_args!(
                    "pushed docker://{target}: {} blobs uploaded ({}), {} already there, {} mounted",
                    report.uploaded,
                    human_size(report.bytes_uploaded),
                    report.existed,
                    report.mounted
                ));
                out.push((format!("docker://{target}"), report.digest));
            }
            Ok(out)
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs_err::canonicalize(a), fs_err::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Names the images in the work dir's store, refusing to take a name a base, a compilation base
/// or a compiled package has.
fn name_in_store(store: &OciStore, images: &[(String, Descriptor)]) -> anyhow::Result<()> {
    let refs = store.ref_map()?;
    let mut named = Vec::new();
    for (name, manifest) in images {
        if let Some(existing) = refs.get(name) {
            let notes = annotations(existing);
            let kind = notes
                .get(KIND_ANNOTATION)
                .map(String::as_str)
                .unwrap_or("compiled package");
            anyhow::ensure!(
                kind == fissile_oci::image::KIND,
                "{name:?} already names a {kind} in {}: give the image another name with --tag",
                store.root().display()
            );
        }
        let mut d = manifest.clone();
        let mut notes = std::collections::HashMap::new();
        notes.insert(
            KIND_ANNOTATION.to_string(),
            fissile_oci::image::KIND.to_string(),
        );
        notes.insert(
            "org.opencontainers.image.created".to_string(),
            fissile_oci::clock::now_rfc3339(),
        );
        d.set_annotations(Some(notes));
        named.push((name.clone(), d));
    }
    store.set_refs(&named)?;
    Ok(())
}
