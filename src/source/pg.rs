//! PostgreSQL through its own client tools (pg_dump, pg_dumpall, pg_restore, psql), so
//! libpq's defaults, `PG*` environment and `.pgpass` all apply.
//!
//! A DSN (URI or `key=value` form) is parsed once into libpq's keywords. A password in
//! it reaches the tools through `PGPASSWORD`, never their arguments, and is left out of
//! everything snap records or prints.

use std::path::Path;
use std::process::Command;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result, Usage};
use crate::source::command::Running;

/// A parsed connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    /// libpq keywords and values, without the password.
    params: Vec<(String, String)>,
    password: Option<String>,
}

fn bad(dsn_shown: &str, why: &str) -> Error {
    Usage::PgDsn {
        dsn: dsn_shown.to_string(),
        why: why.to_string(),
    }
    .into()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl Dsn {
    /// Parses `postgresql://[user[:password]@][host[:port][,...]][/dbname][?k=v&...]` or
    /// `k=v k='v w' ...`.
    pub fn parse(dsn: &str) -> Result<Dsn> {
        let mut params = Vec::new();
        let rest = dsn
            .strip_prefix("postgresql://")
            .or_else(|| dsn.strip_prefix("postgres://"));
        match rest {
            Some(rest) => Dsn::parse_uri(rest, &mut params)?,
            None => Dsn::parse_keywords(dsn, &mut params)?,
        }
        let mut password = None;
        params.retain(|(k, v)| {
            if k == "password" {
                password = Some(v.clone());
                false
            } else {
                true
            }
        });
        Ok(Dsn { params, password })
    }

    fn parse_uri(rest: &str, params: &mut Vec<(String, String)>) -> Result<()> {
        let shown = "postgresql://...";
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = userinfo {
            let (user, pw) = match u.split_once(':') {
                Some((user, pw)) => (user, Some(pw)),
                None => (u, None),
            };
            if !user.is_empty() {
                params.push(("user".into(), decode(user)));
            }
            if let Some(pw) = pw {
                params.push(("password".into(), decode(pw)));
            }
        }
        let (mut host_list, mut port_list) = (Vec::new(), Vec::new());
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let (host, port) = if let Some(v6) = h.strip_prefix('[') {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad(shown, "unclosed [ in host"))?;
                (addr.to_string(), after.strip_prefix(':').unwrap_or(""))
            } else {
                let (host, port) = h.split_once(':').unwrap_or((h, ""));
                (decode(host), port)
            };
            if !port.is_empty() && port.parse::<u16>().is_err() {
                return Err(bad(shown, &format!("port {port:?} is not a number")));
            }
            host_list.push(host);
            port_list.push(port.to_string());
        }
        if host_list.iter().any(|h| !h.is_empty()) {
            params.push(("host".into(), host_list.join(",")));
        }
        if port_list.iter().any(|p| !p.is_empty()) {
            params.push(("port".into(), port_list.join(",")));
        }
        if !path.is_empty() {
            params.push(("dbname".into(), decode(path)));
        }
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(shown, &format!("query parameter {kv:?} has no value")))?;
            params.push((decode(k), decode(v)));
        }
        Ok(())
    }

    fn parse_keywords(dsn: &str, params: &mut Vec<(String, String)>) -> Result<()> {
        let shown = "the connection string";
        let mut chars = dsn.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                return Ok(());
            }
            let mut key = String::new();
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                key.push(c);
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return Err(bad(shown, &format!("{key:?} has no value")));
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        Some('\\') => value.extend(chars.next()),
                        Some('\'') => break,
                        Some(c) => value.push(c),
                        None => return Err(bad(shown, "unterminated quoted value")),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
            }
            params.push((key, value));
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The database it names, with libpq's defaults (`PGDATABASE`, then the user name).
    pub fn dbname(&self) -> Result<String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.get("dbname")
            .map(str::to_string)
            .or_else(|| env("PGDATABASE"))
            .or_else(|| self.get("user").map(str::to_string))
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .ok_or_else(|| {
                Usage::PgNoDatabase {
                    dsn: self.shown().clone(),
                }
                .into()
            })
    }

    /// The same connection to another database.
    pub fn with_dbname(&self, db: &str) -> Dsn {
        self.with_param("dbname", db)
    }

    /// The same connection with `key` set to `value` (replacing any it had).
    pub fn with_param(&self, key: &str, value: &str) -> Dsn {
        let mut d = self.clone();
        d.params.retain(|(k, _)| k != key);
        d.params.push((key.into(), value.into()));
        d
    }

    /// The connection for cluster-wide work: its database if it names one, else
    /// `postgres`.
    pub fn maintenance(&self) -> Dsn {
        match self.get("dbname") {
            Some(_) => self.clone(),
            None => self.with_dbname("postgres"),
        }
    }

    /// libpq `key='value'` form, without the password: safe to show and record.
    pub fn shown(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `program` connected with this DSN: `--dbname=<conninfo>` and, when the DSN has a
    /// password, `PGPASSWORD`.
    pub fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg(format!("--dbname={}", self.shown()));
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c
    }

    /// Runs `sql` with psql (stopping at the first error) and returns its rows, one
    /// `|`-separated line each.
    pub fn query(&self, sql: &str) -> Result<Vec<String>> {
        let mut c = self.tool("psql");
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = Running::capture(c, &format!("psql on {}", self.shown()))?;
        Ok(out.lines().map(str::to_string).collect())
    }
}

/// A WAL location written as PostgreSQL does (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// `pg_dump --format=directory --compress=0` of `dsn` into the new directory `out`: one
/// uncompressed file per table, which dedups day over day and restores in parallel.
pub fn pg_dump_dir(dsn: &Dsn, out: &Path) -> Command {
    let mut c = dsn.tool("pg_dump");
    c.arg("--format=directory")
        .arg("--compress=0")
        // A scratch directory, read and deleted while pg_dump runs: fsync is wasted.
        .arg("--no-sync")
        .arg(format!("--file={}", out.display()));
    c
}

/// `pg_dumpall` of the cluster as plain SQL, with a constant `\restrict` key where
/// pg_dumpall has the option (a random one would change every dump).
pub fn pg_dumpall(dsn: &Dsn) -> Result<Command> {
    let help = Command::new("pg_dumpall").arg("--help").output();
    let restrict = match help {
        Ok(h) => String::from_utf8_lossy(&h.stdout).contains("--restrict-key"),
        Err(_) => false,
    };
    let mut c = dsn.tool("pg_dumpall");
    if restrict {
        c.arg("--restrict-key=snap");
    }
    Ok(c)
}

/// Tables, views, sequences and functions outside the system schemas that no
/// extension owns, as `schema.name` (at most `limit`).
pub fn user_objects(dsn: &Dsn, limit: usize) -> Result<Vec<String>> {
    dsn.query(&format!(
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%'
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                             WHERE d.classid = 'pg_catalog.pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype = 'e')
          ORDER BY 1 LIMIT {limit}"
    ))
}

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x200_0028));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("12"), None);
    }

    #[test]
    fn uri_and_keyword_forms_keep_the_password_out_of_what_is_shown() {
        let d =
            Dsn::parse("postgresql://app:s%40cret@db.example:5433/shop?sslmode=require").unwrap();
        assert_eq!(
            d.shown(),
            "user='app' host='db.example' port='5433' dbname='shop' sslmode='require'"
        );
        assert_eq!(d.password.as_deref(), Some("s@cret"));
        assert_eq!(d.dbname().unwrap(), "shop");
        let c = d.tool("pg_dump");
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.concat().contains("cret"), "{args:?}");

        let d = Dsn::parse("host=/var/run/postgresql dbname='my db' password='it''s' user=x")
            .unwrap_err();
        assert!(
            d.to_string().contains("not a PostgreSQL connection string"),
            "{d}"
        );
        let d =
            Dsn::parse("host=/var/run/postgresql  dbname = 'my \\'db' password=pw user=x").unwrap();
        assert_eq!(d.dbname().unwrap(), "my 'db");
        assert_eq!(d.password.as_deref(), Some("pw"));
        assert_eq!(
            d.with_dbname("postgres").shown(),
            "host='/var/run/postgresql' user='x' dbname='postgres'"
        );

        let d = Dsn::parse("postgresql://%2Ftmp%2Fsock,[::1]:5434/").unwrap();
        assert_eq!(d.shown(), "host='/tmp/sock,::1' port=',5434'");
        assert!(Dsn::parse("postgresql://h:port/db").is_err());
    }
}
