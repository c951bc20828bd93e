//! Configuration profiles (`snap.toml`) and `snap run`.
//!
//! A profile names a repository, what to back up and how long to keep it. Its steps
//! are turned into the same command lines a user would type (`backup ...`, `forget
//! ... --prune`) and run through the same parser and code, so a profile can do
//! nothing the command line cannot, and its errors read the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use snap::span::Span;

use super::Ctx;

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The profile `snap run` and `snap backup` use when none is named.
    default: Option<String>,
    /// Named profiles.
    #[serde(default)]
    profile: BTreeMap<String, Profile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    repository: String,
    /// Passphrase file of an encrypted repository.
    password_file: Option<PathBuf>,
    #[serde(default)]
    paths: Vec<String>,
    /// A NextGIS Web config.ini.
    ngw: Option<String>,
    #[serde(default)]
    pg: Vec<String>,
    pg_all: Option<String>,
    #[serde(default)]
    mongo: Vec<String>,
    #[serde(default)]
    commands: Vec<Named>,
    #[serde(default)]
    command_dirs: Vec<Named>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    host: Option<String>,
    retention: Option<Retention>,
    /// Repositories `snap run` syncs to after retention (`--delete` with retention).
    #[serde(default)]
    sync: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    command: String,
    #[serde(rename = "as")]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    /// Read (and so checked, with its line) by the same parser as `--keep-within`.
    keep_within: Option<Span>,
    #[serde(default)]
    keep_tag: Vec<String>,
    /// Delete the forgotten snapshots' data right away (default true).
    prune: Option<bool>,
    max_unused: Option<String>,
}

/// Where the configuration file is: `--config`/`SNAP_CONFIG`, else
/// `$XDG_CONFIG_HOME/snap/snap.toml` (`~/.config/...`), else `/etc/snap/snap.toml`;
/// `None` when no file exists and none was named.
fn locate(ctx: &Ctx) -> Option<PathBuf> {
    if let Some(p) = &ctx.config {
        return Some(p.clone());
    }
    let user = super::xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("snap/snap.toml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/snap/snap.toml")])
        .find(|p| p.exists())
}

/// Reads and validates the configuration file, if there is one.
pub fn load(ctx: &Ctx) -> Result<Option<(PathBuf, File)>> {
    let Some(path) = locate(ctx) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading configuration {}", path.display()))?;
    // toml's errors name the line, the column and the key.
    let file: File = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            e.to_string().trim_end().replace('\n', "\n  ")
        )
    })?;
    if let Some(d) = &file.default {
        if !file.profile.contains_key(d) {
            bail!("{}: default profile {d:?} is not defined", path.display());
        }
    }
    Ok(Some((path, file)))
}

/// One step of a profile: its name and the command line that does it.
pub struct Step {
    /// `backup`, `forget`.
    pub name: &'static str,
    /// Arguments after `snap`.
    pub argv: Vec<String>,
    /// The destination of a sync step.
    pub to: Option<String>,
}

impl File {
    /// The profile `name`, or the default one.
    fn get(&self, path: &Path, name: Option<&str>) -> Result<(String, &Profile)> {
        let name = match name.or(self.default.as_deref()) {
            Some(n) => n,
            None => bail!(
                "{}: name a profile (`snap run NAME`) or set `default = \"NAME\"`",
                path.display()
            ),
        };
        let p = self.profile.get(name).with_context(|| {
            format!(
                "{}: no profile {name:?} (defined: {})",
                path.display(),
                self.profile.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok((name.to_string(), p))
    }

    /// The steps of profile `name` (or the default one) and its passphrase file.
    pub fn steps(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<(String, Vec<Step>, Option<PathBuf>)> {
        let (name, p) = self.get(path, name)?;
        let repo = p.repository.clone();
        let base = |sub: &str| vec!["--repo".to_string(), repo.clone(), sub.to_string()];
        let mut backup = base("backup");
        backup.extend(p.paths.iter().cloned());
        let mut opt = |flag: &str, v: &str| {
            backup.push(flag.to_string());
            backup.push(v.to_string());
        };
        for (flag, vals) in [
            ("--pg", &p.pg),
            ("--mongo", &p.mongo),
            ("--exclude", &p.exclude),
            ("--tag", &p.tags),
        ] {
            for v in vals {
                opt(flag, v);
            }
        }
        if let Some(v) = &p.ngw {
            opt("--ngw", v);
        }
        if let Some(v) = &p.pg_all {
            opt("--pg-all", v);
        }
        if let Some(v) = &p.host {
            opt("--host", v);
        }
        for (flag, list) in [
            ("--command", &p.commands),
            ("--command-dir", &p.command_dirs),
        ] {
            for c in list {
                opt(flag, &c.command);
                opt("--as", &c.name);
            }
        }
        let mut steps = vec![Step {
            name: "backup",
            argv: backup,
            to: None,
        }];
        if let Some(r) = &p.retention {
            let mut forget = base("forget");
            let counts = [
                ("--keep-last", r.keep_last),
                ("--keep-hourly", r.keep_hourly),
                ("--keep-daily", r.keep_daily),
                ("--keep-weekly", r.keep_weekly),
                ("--keep-monthly", r.keep_monthly),
                ("--keep-yearly", r.keep_yearly),
            ];
            for (flag, n) in counts {
                if let Some(n) = n {
                    forget.extend([flag.to_string(), n.to_string()]);
                }
            }
            if let Some(w) = &r.keep_within {
                forget.extend(["--keep-within".to_string(), w.to_string()]);
            }
            for t in &r.keep_tag {
                forget.extend(["--keep-tag".to_string(), t.clone()]);
            }
            if let Some(h) = &p.host {
                forget.extend(["--host".to_string(), h.clone()]);
            }
            if r.prune.unwrap_or(true) {
                forget.push("--prune".to_string());
                if let Some(m) = &r.max_unused {
                    forget.extend(["--max-unused".to_string(), m.clone()]);
                }
            }
            steps.push(Step {
                name: "forget",
                argv: forget,
                to: None,
            });
        }
        for to in &p.sync {
            let mut sync = base("sync");
            sync.extend(["--to".to_string(), to.clone()]);
            // What retention removed here goes there too.
            if p.retention.is_some() {
                sync.push("--delete".to_string());
            }
            steps.push(Step {
                name: "sync",
                argv: sync,
                to: Some(to.clone()),
            });
        }
        Ok((name, steps, p.password_file.clone()))
    }
}
