//! `snap init`

use std::io::IsTerminal;

use anyhow::{Context, Result};
use snap::format::crypto::Kdf;
use snap::repo::{InitOptions, Repository};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// zstd level of new data (0 = none, 1 fastest .. 19 smallest)
    #[arg(long, default_value_t = snap::format::compress::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: i32,
    /// Encrypt the repository; the passphrase comes from SNAP_PASSWORD,
    /// SNAP_PASSWORD_FILE or a prompt (a profile's repository with a password_file is
    /// encrypted with that file's passphrase, with or without this)
    #[arg(long)]
    encrypt: bool,
    /// Print the result as JSON (a failure: {"error": {"message", "kind"}})
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let (store, _) = ctx.store()?;
    let loc = store.location();
    let opts = InitOptions {
        compression_level: a.compression,
        ..Default::default()
    };
    // A profile that names a password_file wants its repository sealed with it.
    let encrypt = a.encrypt || ctx.password_file.is_some();
    let repo = if encrypt {
        let pass = match &ctx.password_file {
            Some(f) => super::key::first_line(f, "the profile's password_file")?,
            None => super::key::passphrase(
                "passphrase for the new repository: ",
                "SNAP_PASSWORD",
                "SNAP_PASSWORD_FILE",
                true,
            )?,
        };
        if pass.is_empty() {
            return Err(super::output::usage("an empty passphrase is not allowed"));
        }
        Repository::init_encrypted(store, &opts, pass.as_bytes(), Kdf::default())
    } else {
        Repository::create(store, &opts, None)
    }
    .with_context(|| format!("creating repository {loc}"))?;
    if a.json {
        ctx.print_json(&serde_json::json!({
            "id": repo.config().id, "location": loc, "encrypted": encrypt,
        }))?;
    } else if !ctx.quiet {
        outln!(
            "created snap repository {} at {loc}",
            &repo.config().id[..8],
        );
    }
    if !encrypt && !ctx.quiet && std::io::stderr().is_terminal() {
        // Said where a person reads it; scripts and cron see only the line above.
        eprintln!(
            "note: the repository is not encrypted: anyone who can read its files can read \
             the backups. To encrypt, remove it and run `snap init --encrypt` instead."
        );
    }
    if encrypt {
        eprintln!(
            "note: the data can be read only with this passphrase or an exported key. Lose both and \
             nothing in the repository can be recovered, as with an application secret key that \
             does not survive a rebuilt container. Run `snap key export FILE` now and keep FILE \
             somewhere other than the repository."
        );
    }
    Ok(0)
}
