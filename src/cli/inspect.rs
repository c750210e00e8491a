//! `fissile-oci inspect`: what would be compiled, in which order, from which verified archives.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use fissile_oci::plan::{self, Plan};

use super::args::ReleaseArgs;
use super::Printer;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub releases: ReleaseArgs,
    /// Print JSON: {"releases": [{"name","version","stemcell","packages": [...]}], "compile_order": [...]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    releases: Vec<JsonRelease<'a>>,
    compile_order: Vec<String>,
}

#[derive(Serialize)]
struct JsonRelease<'a> {
    name: &'a str,
    version: &'a str,
    /// `os/version` for a compiled release (whose packages are its compiled packages).
    stemcell: Option<String>,
    packages: Vec<JsonPackage<'a>>,
}

#[derive(Serialize)]
struct JsonPackage<'a> {
    name: &'a str,
    fingerprint: &'a str,
    sha1: Option<&'a str>,
    dependencies: &'a [String],
}

pub fn run(args: InspectArgs, printer: Printer) -> anyhow::Result<ExitCode> {
    let plan = load_plan(&args.releases, printer)?;
    if args.json {
        let out = JsonOutput {
            releases: plan
                .releases
                .iter()
                .enumerate()
                .map(|(rid, r)| JsonRelease {
                    name: &r.name,
                    version: &r.version,
                    stemcell: r.stemcell.as_ref().map(ToString::to_string),
                    packages: r
                        .packages
                        .iter()
                        .enumerate()
                        .filter(|(pid, _)| plan.node_of[rid][*pid].is_some())
                        .map(|(_, p)| JsonPackage {
                            name: &p.name,
                            fingerprint: &p.fingerprint,
                            sha1: p.sha1.as_deref(),
                            dependencies: &p.dependencies,
                        })
                        .collect(),
                })
                .collect(),
            compile_order: compile_order(&plan),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&plan);
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads, verifies and plans the releases named on the command line.
pub fn load_plan(args: &ReleaseArgs, printer: Printer) -> anyhow::Result<Plan> {
    let paths = args.paths();
    let options = args.load_options();
    let plan = plan::load_plan(
        &args.plan_request(&paths, &options),
        &mut |release, took| {
            printer.detail(format_args!(
                "{} {}: {} from {} ({} packages, {} jobs) verified in {:.2}s",
                release.name,
                release.version,
                release.describe(),
                release.path.display(),
                release.packages.len(),
                release.jobs.len(),
                took.as_secs_f64()
            ));
            for w in &release.warnings {
                printer.warn(w);
            }
        },
    )?;
    Ok(plan)
}

fn print_table(plan: &Plan) {
    for (rid, release) in plan.releases.iter().enumerate() {
        println!(
            "{} {} ({}: {})",
            release.name,
            release.version,
            release.describe(),
            release.path.display()
        );
        let rows: Vec<(&str, String, String)> = release
            .packages
            .iter()
            .enumerate()
            .filter(|(pid, _)| plan.node_of[rid][*pid].is_some())
            .map(|(_, p)| {
                let deps = if p.dependencies.is_empty() {
                    "-".to_string()
                } else {
                    p.dependencies.join(", ")
                };
                (p.name.as_str(), p.fingerprint.clone(), deps)
            })
            .collect();
        if rows.is_empty() {
            println!("  (no packages selected)");
            continue;
        }
        let width = rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(0)
            .max("PACKAGE".len());
        println!("  {:width$}  {:64}  DEPENDENCIES", "PACKAGE", "FINGERPRINT");
        for (name, fp, deps) in rows {
            println!("  {name:width$}  {fp:64}  {deps}");
        }
    }
    let order = compile_order(plan);
    let shared: usize = plan
        .nodes
        .iter()
        .filter(|n| !n.is_compiled())
        .map(|n| n.members.len() - 1)
        .sum();
    let imported = plan.nodes.iter().filter(|n| n.is_compiled()).count();
    println!();
    println!(
        "compile order ({} packages{}):",
        order.len(),
        if shared > 0 {
            format!(", {shared} shared between releases")
        } else {
            String::new()
        }
    );
    for (i, label) in order.iter().enumerate() {
        println!("  {:>3}. {label}", i + 1);
    }
    if imported > 0 {
        println!();
        println!("{imported} compiled packages to import (nothing to compile for them)");
    }
}

/// The packages to compile, in order; compiled releases' packages are imported, not compiled.
fn compile_order(plan: &Plan) -> Vec<String> {
    (0..plan.nodes.len())
        .filter(|&id| !plan.nodes[id].is_compiled())
        .map(|id| plan.node_label(id))
        .collect()
}
