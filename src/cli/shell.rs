//! `snap completions SHELL` and `snap man`: generated from the clap definitions, so
//! they never drift from the real options.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use super::Cli;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    shell: clap_complete::Shell,
}

/// Prints a completion script: `snap completions bash > /etc/bash_completion.d/snap`.
pub fn completions(a: CompletionsArgs) -> i32 {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "snap", &mut std::io::stdout());
    0
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write snap.1 and one snap-COMMAND.1 per subcommand into this directory instead
    /// of printing snap.1
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// Prints the man page (or writes all pages into a directory).
pub fn man(a: ManArgs) -> Result<i32> {
    let cmd = Cli::command();
    match a.dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(cmd, &dir)?;
        }
    }
    Ok(0)
}
