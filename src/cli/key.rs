//! `snap key` and the passphrases of encrypted repositories.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use snap::format::crypto::{Kdf, MasterKey};
use snap::repo::remembered::{self, Remembered};
use snap::repo::{keys, Repository};
use snap::store::Store;
use zeroize::Zeroizing;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// List the key files; * marks the one the passphrase opened
    List {
        /// Print the key files as a JSON array (`current`: the one the passphrase
        /// opened)
        #[arg(long)]
        json: bool,
    },
    /// Add a passphrase (from SNAP_NEW_PASSWORD, SNAP_NEW_PASSWORD_FILE or a prompt)
    Add,
    /// Remove a key file by id
    Remove {
        /// Key id, as `snap key list` shows it
        id: String,
    },
    /// Replace the passphrase in use by a new one
    Passwd,
    /// Write the master key to FILE (mode 0600), for recovery with SNAP_KEY_FILE
    Export {
        /// The file to create
        file: std::path::PathBuf,
    },
}

/// A passphrase from environment variable `var`, the file named by `file_var`, or a
/// prompt on the terminal (asked twice when `confirm`).
pub fn passphrase(
    prompt: &str,
    var: &str,
    file_var: &str,
    confirm: bool,
) -> Result<Zeroizing<String>> {
    // A new passphrase may not be empty (an unset variable in a script would set one).
    let chosen = |p: Zeroizing<String>| {
        if confirm && p.is_empty() {
            return Err(super::output::usage(format!(
                "an empty passphrase is not allowed ({var} or {file_var} gave one); nothing was changed"
            )));
        }
        Ok(p)
    };
    if let Some(v) = std::env::var_os(var) {
        let v = v
            .into_string()
            .map_err(|_| super::output::usage(format!("{var} is not UTF-8")))?;
        return chosen(Zeroizing::new(v));
    }
    if let Some(f) = std::env::var_os(file_var) {
        return chosen(first_line(Path::new(&f), file_var)?);
    }
    if !std::io::stdin().is_terminal() {
        // Opening (not choosing a passphrase), an exported key file does as well.
        let key_file = var
            .strip_suffix("_PASSWORD")
            .filter(|_| !confirm)
            .map(|p| format!(" (or {p}_KEY_FILE to an exported key)"))
            .unwrap_or_default();
        return Err(super::output::key(format!(
            "a passphrase is needed: set {var} or {file_var}{key_file}, or run on a terminal to be asked"
        )));
    }
    let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
        if *first != *again {
            return Err(super::output::usage(
                "the two passphrases differ; nothing was changed",
            ));
        }
        if first.is_empty() {
            return Err(super::output::usage("an empty passphrase is not allowed"));
        }
    }
    Ok(first)
}

/// The first line of passphrase file `f` (`what` names it in errors).
pub fn first_line(f: &Path, what: &str) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(f).with_context(|| format!("reading {what} {}", f.display()))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

/// How [`unlock`] opened a repository.
pub enum Unlocked {
    /// With the exported key file `{env}_KEY_FILE` names.
    Exported(MasterKey),
    /// With the key file this host remembered ([`remembered`]), read from no store.
    Remembered(MasterKey),
    /// With one of the repository's key files, as read from it.
    File(keys::Opened),
}

impl Unlocked {
    /// The master key.
    pub fn key(self) -> MasterKey {
        match self {
            Unlocked::Exported(k) | Unlocked::Remembered(k) => k,
            Unlocked::File(o) => o.key,
        }
    }
}

/// The exported key file `{env}_KEY_FILE` names, which [`unlock`] opens with instead of
/// a passphrase: `None` when it names none, or when `password_file` (a profile's)
/// comes first.
pub fn exported_key_file(password_file: Option<&Path>, env: &str) -> Option<std::ffi::OsString> {
    password_file
        .is_none()
        .then(|| std::env::var_os(format!("{env}_KEY_FILE")))
        .flatten()
}

/// The master key of the encrypted repository `repo_id` in `store`: from the exported
/// key file `{env}_KEY_FILE` names, else from a passphrase (`password_file`,
/// `{env}_PASSWORD`, `{env}_PASSWORD_FILE` or a prompt). `env` is `SNAP`, or
/// `SNAP_TO` for a sync destination. A passphrase is tried on the key file `memory`
/// holds first, if any, and then on the repository's.
pub fn unlock(
    store: &dyn Store,
    repo_id: &str,
    password_file: Option<&Path>,
    env: &str,
    memory: Option<&Remembered>,
) -> Result<Unlocked> {
    if let Some(f) = exported_key_file(password_file, env) {
        let key_var = format!("{env}_KEY_FILE");
        let b = std::fs::read(&f)
            .with_context(|| format!("reading {key_var}={}", Path::new(&f).display()))?;
        let k = MasterKey::import(&b, repo_id)
            .with_context(|| format!("{key_var}={}", Path::new(&f).display()))?;
        return Ok(Unlocked::Exported(k));
    }
    let pass = if let Some(f) = password_file {
        first_line(f, "the profile's password_file")?
    } else {
        passphrase(
            &format!("passphrase for {}: ", store.location()),
            &format!("{env}_PASSWORD"),
            &format!("{env}_PASSWORD_FILE"),
            false,
        )?
    };
    // A remembered key file that does not open (or no longer decodes) is only not used.
    if let Some(Ok(Some(k))) = memory.map(|m| m.unlock(store, pass.as_bytes())) {
        return Ok(Unlocked::Remembered(k));
    }
    let hint = snap::repo::key_hint(store, repo_id).ok();
    let last = hint.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    // Not the remembered key file again, which just did not open.
    let last = last
        .as_deref()
        .map(str::trim)
        .filter(|id| memory.is_none_or(|m| m.key_id() != *id));
    let opened = keys::unlock_first(store, pass.as_bytes(), last)?;
    if let (Some(p), false) = (&hint, last == Some(opened.id.as_str())) {
        // Only a hint: without it the next run lists the key files again.
        let _ = std::fs::write(p, &opened.id);
    }
    Ok(Unlocked::File(opened))
}

fn new_passphrase() -> Result<Zeroizing<String>> {
    passphrase(
        "new passphrase: ",
        "SNAP_NEW_PASSWORD",
        "SNAP_NEW_PASSWORD_FILE",
        true,
    )
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let (store, _) = ctx.store()?;
    let loc = store.location();
    let probe =
        Repository::probe(store.as_ref()).with_context(|| format!("opening repository {loc}"))?;
    if !probe.encrypted() {
        return Err(super::output::usage(format!(
            "repository {loc} is not encrypted: it has no keys (create an encrypted one with `snap init --encrypt`)"
        )));
    }
    let (current, key) = match unlock(
        store.as_ref(),
        probe.id(),
        ctx.password_file.as_deref(),
        "SNAP",
        None,
    )? {
        Unlocked::File(o) => (Some(o.id), o.key),
        u => (None, u.key()),
    };
    let repo_id = probe.id().to_string();
    // Proves the key opens this repository before any key file changes.
    Repository::open_probed(store.clone(), probe, Some(key.clone()))?;
    match a.what {
        What::List { json: true } => {
            let arr: Vec<serde_json::Value> = keys::list(store.as_ref())?
                .into_iter()
                .map(|(id, f)| match f {
                    Ok(f) => serde_json::json!({
                        "id": id, "current": current.as_deref() == Some(&id),
                        "created": f.created, "host": f.host, "user": f.user,
                    }),
                    Err(e) => serde_json::json!({
                        "id": id, "current": false, "damaged": e.to_string(),
                    }),
                })
                .collect();
            ctx.print_json(&arr)?;
        }
        What::List { json: false } => {
            outln!(
                "{:<1} {:<16}  {:<26}  {:<16}  user",
                "",
                "id",
                "created",
                "host"
            );
            for (id, f) in keys::list(store.as_ref())? {
                let mark = if current.as_deref() == Some(&id) {
                    "*"
                } else {
                    ""
                };
                match f {
                    Ok(f) => outln!(
                        "{mark:<1} {id:<16}  {:<26}  {:<16}  {}",
                        snap::host::local_time(&f.created),
                        f.host,
                        f.user
                    ),
                    Err(e) => outln!("{mark:<1} {id:<16}  damaged: {e}"),
                }
            }
        }
        What::Add => {
            let pass = new_passphrase()?;
            let id = keys::add(store.as_ref(), &key, pass.as_bytes(), Kdf::default())?;
            if !ctx.quiet {
                outln!("added key {id}");
            }
        }
        What::Remove { id } => {
            if current.as_deref() == Some(id.as_str()) {
                return Err(super::output::refused(format!("key {id} is the one in use; open the repository with another passphrase to remove it (or use `snap key passwd`)")));
            }
            keys::remove(store.as_ref(), &id)?;
            // This host may have remembered that key file.
            remembered::forget(store.as_ref());
            if !ctx.quiet {
                outln!("removed key {id}");
            }
        }
        What::Passwd => {
            let pass = new_passphrase()?;
            let id = keys::add(store.as_ref(), &key, pass.as_bytes(), Kdf::default())?;
            if let Some(old) = &current {
                keys::remove(store.as_ref(), old)?;
                remembered::forget(store.as_ref());
            }
            if !ctx.quiet {
                outln!(
                    "passphrase changed: key {id} replaces {}",
                    current.as_deref().unwrap_or("none")
                );
            }
        }
        What::Export { file } => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            f.write_all(&key.export(&repo_id))
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            if !ctx.quiet {
                outln!(
                    "wrote the master key to {}: anyone with this file can read the repository; keep it offline, away from the repository",
                    file.display()
                );
            }
        }
    }
    Ok(0)
}

use std::os::unix::fs::OpenOptionsExt;
