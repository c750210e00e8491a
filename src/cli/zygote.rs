//! The hidden `__sandbox-zygote` subcommand: the single-threaded process that forks the helper
//! of each sandbox a compile, a compilation base or a shell runs (`run` usually does the
//! helper's work in its own process; see `fissile_oci::sandbox`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct ZygoteArgs {
    #[arg(long, value_name = "DIR")]
    pub runtime_root: PathBuf,
}

pub fn run(args: ZygoteArgs) -> anyhow::Result<ExitCode> {
    let code = fissile_oci::sandbox::zygote_main(&args.runtime_root);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
