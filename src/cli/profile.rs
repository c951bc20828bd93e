//! Configuration profiles (`snap.toml`) and `snap run`.
//!
//! A profile names a repository, what to back up and how long to keep it. Its steps
//! are typed values, the same ones the command line's `backup`, `forget --prune` and
//! `sync` build (library options, or the subcommand's own arguments), run by the same
//! code: a profile can do nothing the command line cannot, and a renamed option is a
//! compile error here rather than a failure at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};
use snap::ops::backup::BackupOptions;
use snap::ops::prune::PruneOptions;
use snap::ops::retention::GroupBy;
use snap::span::Span;

use super::{forget, prune, sync, Ctx};

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The profile used when none is named: its repository for every command, its
    /// sources for `snap run` and `snap backup` without sources.
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
    /// Record the NGW snapshot when file-storage blobs are missing, listing them as
    /// warnings (exit 3), instead of failing (`--allow-missing-blobs`).
    #[serde(default)]
    allow_missing_blobs: bool,
    /// Record the NGW snapshot without the rasters of an external storage it cannot
    /// reach (`--ngw-skip-external`).
    #[serde(default)]
    ngw_skip_external: bool,
    /// The S3 region of the instance's external raster storages (`--ngw-s3-region`).
    ngw_s3_region: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pg: Vec<String>,
    pg_all: Option<String>,
    /// A PostgreSQL cluster for a physical base backup (`--pg-base`).
    pg_base: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    mongo: Vec<String>,
    #[serde(default)]
    commands: Vec<Named>,
    #[serde(default)]
    command_dirs: Vec<Named>,
    #[serde(default)]
    exclude: Vec<String>,
    /// As `backup --exclude-file`, `--files-from` and the other selection options.
    #[serde(default)]
    exclude_file: Vec<PathBuf>,
    #[serde(default)]
    files_from: Vec<PathBuf>,
    #[serde(default)]
    exclude_caches: bool,
    #[serde(default)]
    exclude_if_present: Vec<String>,
    /// Read (and so checked, with its line) by the same parser as
    /// `--exclude-larger-than`.
    #[serde(default, deserialize_with = "size")]
    exclude_larger_than: Option<u64>,
    #[serde(default)]
    one_file_system: bool,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "host")]
    host: Option<String>,
    #[serde(default, deserialize_with = "retention")]
    retention: Option<Retention>,
    /// Repositories `snap run` syncs to after retention (`--delete` with retention).
    #[serde(default)]
    sync: Vec<String>,
    /// Where `snap run` writes `snap metrics` (and its own outcome) after every run.
    metrics_file: Option<PathBuf>,
    /// A push-monitoring URL: `URL/start`, then `URL` or `URL/fail` (see `ping`).
    #[serde(default, deserialize_with = "http_url")]
    ping: Option<String>,
    /// Run a restore drill of the new snapshot after the backup: `daily`, `weekly`,
    /// `monthly` (when the group's last drill is older), or every N snapshots.
    drill: Option<DrillEvery>,
    /// Application-level checks of drills: source name -> command, `{path}` the
    /// restored copy.
    #[serde(default)]
    verify: BTreeMap<String, String>,
}

/// How often `snap run` drills.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum DrillEvery {
    /// Every N snapshots of the group.
    Runs(u32),
    /// When the group's last drill is older than a day, a week or a month.
    Period(Period),
}

/// `daily`, `weekly` or `monthly`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl std::fmt::Display for DrillEvery {
    /// As the profile says it: `drill = 7` (every 7th snapshot), `drill = "weekly"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrillEvery::Runs(n) => write!(f, "drill = {n}: every {n}th snapshot of the group"),
            DrillEvery::Period(p) => {
                let name = match p {
                    Period::Daily => "daily",
                    Period::Weekly => "weekly",
                    Period::Monthly => "monthly",
                };
                write!(f, "drill = \"{name}\"")
            }
        }
    }
}

impl Period {
    /// Its length.
    pub fn length(self) -> chrono::Duration {
        chrono::Duration::days(match self {
            Period::Daily => 1,
            Period::Weekly => 7,
            Period::Monthly => 30,
        })
    }
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
    /// Counts: a number, `"unlimited"` or -1, as `--keep-*` reads them.
    #[serde(default, deserialize_with = "keep")]
    keep_last: Option<u32>,
    #[serde(default, deserialize_with = "keep")]
    keep_hourly: Option<u32>,
    #[serde(default, deserialize_with = "keep")]
    keep_daily: Option<u32>,
    #[serde(default, deserialize_with = "keep")]
    keep_weekly: Option<u32>,
    #[serde(default, deserialize_with = "keep")]
    keep_monthly: Option<u32>,
    #[serde(default, deserialize_with = "keep")]
    keep_yearly: Option<u32>,
    /// Read (and so checked, with its line) by the same parser as `--keep-within`.
    #[serde(default, deserialize_with = "keep_within")]
    keep_within: Option<Span>,
    #[serde(default)]
    keep_tag: Vec<String>,
    /// Read by the same parser as `--group-by` (default `host,paths`).
    #[serde(default, deserialize_with = "group_by")]
    group_by: Option<GroupBy>,
    /// Delete the forgotten snapshots' data right away (default true).
    prune: Option<bool>,
    /// Read (and so checked, with its line) by the same parser as `--max-unused`.
    #[serde(default, deserialize_with = "max_unused")]
    max_unused: Option<f64>,
}

impl Retention {
    /// What it keeps, as `forget` would judge it.
    fn policy(&self) -> snap::ops::retention::Policy {
        snap::ops::retention::Policy {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
            within: self.keep_within,
            tags: self.keep_tag.clone(),
        }
    }
}

/// A string read by `parse`, a command-line option's parser (so that a file and the
/// option take the same), its error reported with the key's line.
fn parsed<'de, D: Deserializer<'de>, T, E: std::fmt::Display>(
    d: D,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> std::result::Result<Option<T>, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map(Some).map_err(serde::de::Error::custom)
}

/// A share written as `5%` (or `5`, or `unlimited`), read by `--max-unused`'s parser.
fn max_unused<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    parsed(d, prune::parse_max_unused)
}

/// Tags, each read by `--tag`'s parser.
fn tags<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| super::parse_tag(t).map_err(serde::de::Error::custom))
        .collect()
}

/// A host name, read by `--host`'s parser.
fn host<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    parsed(d, super::parse_host)
}

/// A size written as `100M` (or `4096`), read by `--exclude-larger-than`'s parser.
fn size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    parsed(d, super::backup::parse_size)
}

/// An `http://` or `https://` URL.
fn http_url<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let scheme = s.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        Ok(Some(s))
    } else {
        Err(serde::de::Error::custom(
            "a ping is an http:// or https:// URL",
        ))
    }
}

/// A string or a list of strings: `pg = "DSN"` as `pg = ["DSN"]`, as `pg_all` takes
/// one.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

/// A retention table that keeps something (`forget` refuses one that keeps nothing,
/// and `snap run` would fail only after its backup).
fn retention<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Retention>, D::Error> {
    let r = Retention::deserialize(d)?;
    if r.policy().is_empty() {
        return Err(serde::de::Error::custom(
            "this retention keeps no snapshot: give at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within, keep_tag",
        ));
    }
    Ok(Some(r))
}

/// A count, read by `--keep-daily`'s parser: a number, `"unlimited"` or -1.
fn keep<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Count {
        Number(i64),
        Text(String),
    }
    let text = match Count::deserialize(d)? {
        Count::Number(n) => n.to_string(),
        Count::Text(t) => t,
    };
    forget::parse_keep(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A span, read by `--keep-within`'s parser.
fn keep_within<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Span>, D::Error> {
    parsed(d, forget::parse_keep_within)
}

/// Groups written as `host,paths`, read by `--group-by`'s parser.
fn group_by<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<GroupBy>, D::Error> {
    parsed(d, str::parse::<GroupBy>)
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
        super::output::usage(format!(
            "{}: {}",
            path.display(),
            e.to_string().trim_end().replace('\n', "\n  ")
        ))
    })?;
    if let Some(d) = &file.default {
        if !file.profile.contains_key(d) {
            return Err(super::output::usage(format!(
                "{}: default profile {d:?} is not defined",
                path.display()
            )));
        }
    }
    Ok(Some((path, file)))
}

/// One step of a profile: what the subcommand of its name would run.
pub enum Step {
    /// `snap backup`, with its sources and settings.
    Backup(Box<BackupOptions>),
    /// `snap forget --keep-... [--prune]`.
    Forget(forget::Args),
    /// `snap sync --to ... [--delete]`.
    Sync(sync::Args),
    /// `snap drill latest` when due, with the profile's `verify` commands.
    Drill(DrillEvery, BTreeMap<String, String>),
}

impl Step {
    /// `backup`, `drill`, `forget` or `sync`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Backup(_) => "backup",
            Step::Forget(_) => "forget",
            Step::Sync(_) => "sync",
            Step::Drill(..) => "drill",
        }
    }

    /// The destination of a sync step.
    pub fn to(&self) -> Option<&str> {
        match self {
            Step::Sync(a) => Some(&a.to),
            _ => None,
        }
    }
}

/// The repository a profile selects for every command.
pub struct Chosen {
    /// The profile's name.
    pub name: String,
    /// Its repository.
    pub repository: String,
    /// Passphrase file of an encrypted repository.
    pub password_file: Option<PathBuf>,
}

/// A profile ready to run.
pub struct Run {
    /// Its name.
    pub name: String,
    /// Its repository.
    pub repository: String,
    /// Passphrase file of an encrypted repository.
    pub password_file: Option<PathBuf>,
    /// Its steps, in order.
    pub steps: Vec<Step>,
    /// Where the metrics go after the run.
    pub metrics_file: Option<PathBuf>,
    /// The push-monitoring URL told of the run.
    pub ping: Option<String>,
}

impl File {
    /// The profile `name`, or the default one.
    fn get(&self, path: &Path, name: Option<&str>) -> Result<(String, &Profile)> {
        let Some(name) = name.or(self.default.as_deref()) else {
            return Err(super::output::usage(format!(
                "{}: name a profile (`snap run NAME`) or set `default = \"NAME\"`",
                path.display()
            )));
        };
        let p = self.profile.get(name).ok_or_else(|| {
            super::output::usage(format!(
                "{}: no profile {name:?} (defined: {})",
                path.display(),
                self.profile.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok((name.to_string(), p))
    }

    /// The repository of profile `name`, else of the default profile; `None` when no
    /// profile is named and there is no default.
    pub fn repository(&self, path: &Path, name: Option<&str>) -> Result<Option<Chosen>> {
        if name.is_none() && self.default.is_none() {
            return Ok(None);
        }
        let (name, p) = self.get(path, name)?;
        Ok(Some(Chosen {
            name,
            repository: p.repository.clone(),
            password_file: p.password_file.clone(),
        }))
    }

    /// The steps of profile `name` (or the default one).
    pub fn steps(&self, path: &Path, name: Option<&str>) -> Result<Run> {
        let (name, p) = self.get(path, name)?;
        let backup = BackupOptions {
            paths: p.paths.iter().map(PathBuf::from).collect(),
            commands: pairs(&p.commands),
            command_dirs: pairs(&p.command_dirs),
            pg: p.pg.clone(),
            pg_all: p.pg_all.iter().cloned().collect(),
            pg_base: p.pg_base.iter().cloned().collect(),
            mongo: p.mongo.clone(),
            ngw: p.ngw.as_ref().map(PathBuf::from),
            allow_missing_blobs: p.allow_missing_blobs,
            ngw_skip_external: p.ngw_skip_external,
            ngw_s3_region: p.ngw_s3_region.clone(),
            excludes: p.exclude.clone(),
            exclude_files: p.exclude_file.clone(),
            files_from: p.files_from.clone(),
            one_file_system: p.one_file_system,
            exclude_caches: p.exclude_caches,
            exclude_if_present: p.exclude_if_present.clone(),
            exclude_larger_than: p.exclude_larger_than,
            tags: p.tags.clone(),
            host: p.host.clone(),
            ..Default::default()
        };
        if !backup.has_source() {
            return Err(super::output::usage(format!(
                "{}: profile {name} has nothing to back up: give it paths, files_from, commands, command_dirs, pg, pg_all, pg_base, mongo or ngw",
                path.display()
            )));
        }
        let mut steps = vec![Step::Backup(Box::new(backup))];
        if let Some(every) = p.drill {
            steps.push(Step::Drill(every, p.verify.clone()));
        }
        if let Some(r) = &p.retention {
            steps.push(Step::Forget(forget::Args {
                snapshots: Vec::new(),
                keep_last: r.keep_last.unwrap_or(0),
                keep_hourly: r.keep_hourly.unwrap_or(0),
                keep_daily: r.keep_daily.unwrap_or(0),
                keep_weekly: r.keep_weekly.unwrap_or(0),
                keep_monthly: r.keep_monthly.unwrap_or(0),
                keep_yearly: r.keep_yearly.unwrap_or(0),
                keep_within: r.keep_within,
                keep_tag: r.keep_tag.clone(),
                // The profile's own snapshots: with its tags, and (set when its
                // backup has run) of its host and sources.
                filter: super::FilterArgs {
                    host: Vec::new(),
                    tag: (!p.tags.is_empty())
                        .then(|| p.tags.join(","))
                        .into_iter()
                        .collect(),
                    path: Vec::new(),
                },
                group: None,
                group_by: r.group_by.unwrap_or_default(),
                dry_run: false,
                prune: r.prune.unwrap_or(true),
                max_unused: r.max_unused.unwrap_or(PruneOptions::default().max_unused),
                json: false,
            }));
        }
        for to in &p.sync {
            steps.push(Step::Sync(sync::Args {
                to: to.clone(),
                endpoint: None,
                snapshots: Vec::new(),
                filter: super::FilterArgs::default(),
                // What retention removed here goes there too.
                delete: p.retention.is_some(),
                dry_run: false,
                json: false,
            }));
        }
        Ok(Run {
            name,
            repository: p.repository.clone(),
            password_file: p.password_file.clone(),
            steps,
            metrics_file: p.metrics_file.clone(),
            ping: p.ping.clone(),
        })
    }
}

/// What `snap drill` takes of the selected profile (`-p`, else the default).
pub struct DrillScope {
    /// Its `verify` commands.
    pub verify: BTreeMap<String, String>,
    /// Whose snapshots are its own: its host (this machine's unless it names one)
    /// and its tags.
    pub host: String,
    /// Its tags, every one of which its snapshots carry.
    pub tags: Vec<String>,
}

/// The selected profile's [`DrillScope`]; `None` without a configuration or profile.
pub fn drill_scope(ctx: &Ctx) -> Result<Option<DrillScope>> {
    let Some((path, file)) = load(ctx)? else {
        return Ok(None);
    };
    if ctx.profile.is_none() && file.default.is_none() {
        return Ok(None);
    }
    let p = file.get(&path, ctx.profile.as_deref())?.1;
    Ok(Some(DrillScope {
        verify: p.verify.clone(),
        host: p.host.clone().unwrap_or_else(snap::host::hostname),
        tags: p.tags.clone(),
    }))
}

/// Commands with the names their output is stored under.
fn pairs(named: &[Named]) -> Vec<(String, String)> {
    named
        .iter()
        .map(|c| (c.command.clone(), c.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::File;

    #[test]
    fn pg_and_mongo_take_a_string_or_a_list() {
        let file: File = toml::from_str(
            "[profile.one]\nrepository = \"/r\"\npg = \"dbname=app\"\nmongo = \"mongodb://h/db\"\n\
             [profile.many]\nrepository = \"/r\"\npg = [\"dbname=a\", \"dbname=b\"]\n",
        )
        .unwrap();
        assert_eq!(file.profile["one"].pg, ["dbname=app"]);
        assert_eq!(file.profile["one"].mongo, ["mongodb://h/db"]);
        assert_eq!(file.profile["many"].pg, ["dbname=a", "dbname=b"]);
        let e = toml::from_str::<File>("[profile.x]\nrepository = \"/r\"\npg = 5\n")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("a string or a list of strings"),
            "{e}"
        );
    }
}
