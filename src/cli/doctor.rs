//! `fissile-oci doctor`: can this host compile? Every check with its finding and, for a problem,
//! the fix; exit 0 when compiles can run, 125 when they cannot.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use fissile_oci::doctor::{self, Status};
use fissile_oci::workdir::WorkDir;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// {"ready": bool, "checks": [{"name","status","detail","fix"}]} on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DoctorArgs, work_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let wd = WorkDir::resolve(work_dir)?;
    let checks = doctor::examine(wd.root());
    let ready = doctor::ready(&checks);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ready": ready, "checks": checks}))?
        );
    } else {
        for check in &checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:16} {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("      {:16} fix: {fix}", "");
            }
        }
        println!(
            "{}",
            if ready {
                "this host can compile"
            } else {
                "this host cannot compile: fix what FAILed above"
            }
        );
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(fissile_oci::error::ErrorClass::Environment.exit_code())
    })
}
