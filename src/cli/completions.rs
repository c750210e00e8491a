//! `fissile-oci completions SHELL` and `fissile-oci completions man`: generated from the clap
//! definition, so they never fall behind the flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, ValueEnum};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish, powershell, or man (roff man pages)
    #[arg(value_enum)]
    pub shell: Target,
    /// man: write one page per command (fissile-oci.1, fissile-oci-compile.1, ...) into DIR
    /// instead of the main page to stdout
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
    Man,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = public_command();
    let shell = match args.shell {
        Target::Bash => clap_complete::Shell::Bash,
        Target::Zsh => clap_complete::Shell::Zsh,
        Target::Fish => clap_complete::Shell::Fish,
        Target::Elvish => clap_complete::Shell::Elvish,
        Target::Powershell => clap_complete::Shell::PowerShell,
        Target::Man => return man(command, args.dir),
    };
    if args.dir.is_some() {
        anyhow::bail!("--dir is for man pages; completions go to stdout");
    }
    clap_complete::generate(shell, &mut command, "fissile-oci", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// The command line without what is hidden (the sandbox helper is this binary's own business):
/// the completion generators would offer it otherwise.
fn public_command() -> clap::Command {
    let full = super::Cli::command();
    let mut public = clap::Command::new("fissile-oci")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    if let Some(after) = full.get_after_help() {
        public = public.after_help(after.clone());
    }
    public
}

fn man(command: clap::Command, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("cannot write the man page")?,
        Some(dir) => {
            fs_err::create_dir_all(&dir)?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
