//! `snap backup`

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use snap::backup::{backup, BackupOptions};
use snap::chunker::Profile;

use super::{human, ngw_config, print_list, progress_for, Bar, Ctx, EXIT_WARNINGS};

#[derive(clap::Args)]
pub struct Args {
    /// Files and directories to back up
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Read standard input and store it under this name (e.g. db/app.sql)
    #[arg(long, value_name = "NAME")]
    stdin_name: Option<String>,
    /// Run this shell command and store its standard output (repeatable; pair with --as)
    #[arg(long = "command", value_name = "CMD")]
    commands: Vec<String>,
    /// Name inside the snapshot for the output of the --command at the same position
    #[arg(long = "as", value_name = "NAME")]
    names: Vec<String>,
    /// Back up a NextGIS Web instance (database, file storage, fonts) from its
    /// config.ini [default: $NEXTGISWEB_CONFIG]
    #[arg(long, value_name = "CONFIG", num_args = 0..=1)]
    ngw: Option<Option<PathBuf>>,
    /// Leave out entries matching this glob (repeatable; with a / it matches the full path)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long)]
    host: Option<String>,
    /// zstd level for new data [default: the repository's]
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: Option<i32>,
    /// Chunking profile of --stdin-name and --command data
    #[arg(long, value_enum, default_value_t = Profile::Dump)]
    stream_profile: Profile,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    force: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    if a.commands.len() != a.names.len() {
        bail!(
            "{} --command but {} --as: give each command the name its output is stored under (--command 'pg_dump db' --as db/db.sql)",
            a.commands.len(),
            a.names.len()
        );
    }
    if a.stdin_name.is_some() && std::io::stdin().is_terminal() {
        bail!("--stdin-name reads standard input, but it is a terminal: pipe the data in");
    }
    let ngw = ngw_config(a.ngw)?;
    let repo = ctx.open(true)?;
    let opts = BackupOptions {
        paths: a.paths,
        stdin_name: a.stdin_name.clone(),
        commands: a.commands.into_iter().zip(a.names).collect(),
        ngw,
        archive: None,
        time: None,
        excludes: a.exclude,
        tags: a.tag,
        host: a.host,
        compression: a.compression,
        stream_profile: a.stream_profile,
        no_parent: a.force,
    };
    let bar = Bar::new(ctx, "backup");
    let mut stdin = std::io::stdin();
    let input: Option<&mut (dyn std::io::Read + Send)> = if a.stdin_name.is_some() {
        Some(&mut stdin)
    } else {
        None
    };
    let done = backup(&repo, &opts, input, progress_for(&bar))?;
    drop(bar);
    let s = &done.snapshot.summary;
    if a.json {
        let out = serde_json::json!({
            "id": done.id,
            "short_id": done.id.short(),
            "time": done.snapshot.time,
            "parent": done.snapshot.parent,
            "summary": s,
            "warnings": done.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "snapshot {} saved: {} files ({} read), {} read, {} added, {:.1} s",
            done.id.short(),
            s.files,
            s.files_read,
            human(s.bytes_read),
            human(s.bytes_added),
            s.duration
        );
    }
    print_list("some entries were left out", &done.warnings);
    Ok(if done.warnings.is_empty() {
        0
    } else {
        EXIT_WARNINGS
    })
}
