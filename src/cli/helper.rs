//! The hidden `__sandbox-helper` subcommand: the single-threaded process each sandbox of a
//! compile, a compilation base or a shell is created from (`run` usually does the helper's work
//! in its own process; see `fissile_oci::sandbox`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct HelperArgs {
    #[arg(long, value_name = "DIR")]
    pub runtime_root: PathBuf,
    #[arg(long, value_name = "PID")]
    pub caller_pid: Option<u32>,
}

pub fn run(args: HelperArgs) -> anyhow::Result<ExitCode> {
    let code = fissile_oci::sandbox::helper_main(&args.runtime_root, args.caller_pid);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
