//! The drill of a database dump: restored into a scratch cluster by the functions of
//! `restore --pg` and `restore --pg-all` (a plain SQL stream through `psql`), then
//! checked: the restore's exit status, every table of a `--pg` dump's table of
//! contents present, and the rows of every table counted.
//!
//! Row counts are compared with the last passed drill of the same group and source; a
//! table whose count fell sharply ([`fell_sharply`]: emptied, or a table of at least
//! 100 rows under half) or that is gone (it had rows) fails the source, naming the
//! table and both counts: the backup of a silently emptied table succeeds, its drill
//! must not. A plain SQL dump that is empty, or that begins as pg_dump's output does
//! but lacks its closing line, fails too: `pg_dump | snap backup --stdin-name` records
//! whatever came through the pipe, and `psql` restores a cut dump without an error up
//! to where it stops.

use std::collections::BTreeMap;

use super::cluster::ScratchCluster;
use super::{Proof, SourceCtx};
use crate::error::{Error, Result, Usage};
use crate::format::drill::{fell_sharply, SourceDrill, TableRows};
use crate::format::id::DataId;
use crate::format::tree::NodeKind;
use crate::ops::dump_tables::DumpTables;
use crate::ops::restore::db::{restore_pg, restore_pg_all, restore_pipe};
use crate::ops::restore::node_at;
use crate::source::command::shell_quote;
use crate::source::pg::Dsn;

/// Every user table of database `dsn`, by schema and name, with its exact row count,
/// in one query.
pub(super) fn count_tables(dsn: &Dsn) -> Result<BTreeMap<(String, String), u64>> {
    // Schema and name apart by a unit separator, which no sane name holds.
    let rows = dsn.query(
        "SELECT n.nspname || chr(31) || c.relname || '|' ||
                (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I',
                    n.nspname, c.relname), false, true, '')))[1]::text
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%'",
    )?;
    let mut out = BTreeMap::new();
    for line in rows {
        let parsed = line.rsplit_once('|').and_then(|(t, n)| {
            let (schema, name) = t.split_once('\u{1f}')?;
            Some((
                (schema.to_string(), name.to_string()),
                n.trim().parse().ok()?,
            ))
        });
        let Some((table, n)) = parsed else {
            return Err(Error::internal(
                format!("unexpected row count line from psql: {line:?}"),
                None,
            ));
        };
        out.insert(table, n);
    }
    Ok(out)
}

/// Counts by `schema.table`, as drill records name tables.
pub(super) fn dotted(counts: BTreeMap<(String, String), u64>) -> BTreeMap<String, u64> {
    counts
        .into_iter()
        .map(|((schema, name), n)| (format!("{schema}.{name}"), n))
        .collect()
}

/// The counts of this drill beside the last passed drill's, flagged where they fell
/// sharply, and the reason the source fails when any did.
pub(super) fn compare(
    rows: BTreeMap<String, u64>,
    previous: Option<&SourceDrill>,
) -> (Vec<TableRows>, Option<String>) {
    let before: BTreeMap<&str, u64> = previous
        .map(|p| {
            p.tables
                .iter()
                .map(|t| (t.table.as_str(), t.rows))
                .collect()
        })
        .unwrap_or_default();
    let mut fell: Vec<String> = before
        .iter()
        .filter(|(table, n)| **n > 0 && !rows.contains_key(**table))
        .map(|(table, n)| format!("{table} is gone (it had {n} rows)"))
        .collect();
    let tables: Vec<TableRows> = rows
        .into_iter()
        .map(|(table, n)| {
            let prev = before.get(table.as_str()).copied();
            let flagged = prev.is_some_and(|p| fell_sharply(p, n));
            if flagged {
                fell.push(format!(
                    "{table} fell from {} to {n} rows",
                    prev.unwrap_or_default()
                ));
            }
            TableRows {
                table,
                rows: n,
                previous: prev,
                flagged,
            }
        })
        .collect();
    let reason = (!fell.is_empty()).then(|| {
        format!(
            "row counts fell sharply since the last passed drill: {}",
            fell.join(", ")
        )
    });
    (tables, reason)
}

/// A `--pg` dump (`name`, a pg_dump directory) restored as `restore --pg` does into
/// a new database of the scratch cluster.
pub(super) fn drill_pg(ctx: &SourceCtx<'_>, c: &ScratchCluster, name: &str) -> Result<Proof> {
    let db = name.rsplit('/').find(|p| !p.is_empty()).unwrap_or("drill");
    let dsn = c.dsn(db);
    let out = restore_pg(ctx.repo, ctx.snap, Some(name), &dsn, false, ctx.progress)?;
    let NodeKind::Dir(tree) = node_at(ctx.repo, ctx.snap, name)?.kind else {
        return Err(Usage::NotPgDumpDir {
            path: name.to_string(),
        }
        .into());
    };
    let nodes = ctx.repo.load_tree(&tree)?.nodes;
    let toc = DumpTables::of_nodes(ctx.repo, &nodes)?.unwrap_or_default();
    let counts = count_tables(&dsn)?;
    // In the listing's own form: schema and name joined by a space.
    let restored: std::collections::HashSet<String> = counts
        .keys()
        .map(|(schema, name)| format!("{schema} {name}"))
        .collect();
    let rows = dotted(counts);
    let missing: Vec<&str> = toc
        .listed()
        .into_iter()
        .filter(|t| !restored.contains(*t))
        .collect();
    let mut proof = Proof {
        bytes: out.bytes,
        checks: vec!["restore".into(), "tables".into(), "row_counts".into()],
        ..Default::default()
    };
    if !missing.is_empty() {
        proof.problem = Some(format!(
            "tables of the dump missing after the restore: {}",
            missing.join(", ")
        ));
    }
    let (tables, fell) = compare(rows, ctx.previous);
    proof.tables = tables;
    proof.problem = proof.problem.or(fell);
    Ok(proof)
}

/// A plain SQL dump: a `--pg-all` one (`all`) restored as `restore --pg-all` does,
/// any other (a `.sql` stream) fed to `psql` in a new database `drill`; then the rows
/// of every table of every database (`database.schema.table`).
pub(super) fn drill_sql(
    ctx: &SourceCtx<'_>,
    c: &ScratchCluster,
    name: &str,
    all: bool,
) -> Result<Proof> {
    let maint = c.dsn("postgres");
    let bytes = if all {
        restore_pg_all(ctx.repo, ctx.snap, Some(name), &maint, false, ctx.progress)?.bytes
    } else {
        maint.query("CREATE DATABASE drill")?;
        let psql = format!(
            "psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d {}",
            shell_quote(&c.dsn("drill").shown())
        );
        restore_pipe(ctx.repo, ctx.snap, name, &psql, ctx.progress)?
    };
    let dbs = maint.query(
        "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate",
    )?;
    let mut rows = BTreeMap::new();
    for db in dbs {
        for (t, n) in dotted(count_tables(&c.dsn(&db))?) {
            rows.insert(format!("{db}.{t}"), n);
        }
    }
    let (tables, fell) = compare(rows, ctx.previous);
    let (told, cut) = cut_short(ctx, name)?;
    let mut checks = vec!["restore".to_string()];
    if told {
        checks.push("complete".into());
    }
    checks.push("row_counts".into());
    Ok(Proof {
        bytes,
        checks,
        tables,
        problem: cut.or(fell),
        ..Default::default()
    })
}

/// The first line of pg_dump's and pg_dumpall's plain output, up to where they differ
/// (`dump` or `cluster dump`).
const PG_DUMP_HEAD: &[u8] = b"--\n-- PostgreSQL database ";
/// What the last comment of their output says (`-- PostgreSQL database dump complete`,
/// `-- PostgreSQL database cluster dump complete`), before an `\unrestrict` line at
/// most.
const PG_DUMP_END: &[u8] = b" dump complete\n";

/// Whether the plain SQL dump `name` of the snapshot could be told whole or not, and
/// why it is not: it is empty, or it begins as pg_dump's output does and lacks the
/// comment pg_dump ends it with (other SQL cannot be told). Reads its first chunk and
/// its last two.
fn cut_short(ctx: &SourceCtx<'_>, name: &str) -> Result<(bool, Option<String>)> {
    let NodeKind::File(content) = node_at(ctx.repo, ctx.snap, name)?.kind else {
        return Ok((false, None));
    };
    let ids: Vec<DataId> = ctx.repo.chunk_ids(&content).collect::<Result<_>>()?;
    let Some(first) = ids.first() else {
        return Ok((
            true,
            Some(format!(
            "{name} is empty: the dump wrote nothing (was its command's failure lost in a pipe?)"
        )),
        ));
    };
    if !ctx.repo.read_blob(&first.0)?.starts_with(PG_DUMP_HEAD) {
        return Ok((false, None));
    }
    let mut tail = Vec::new();
    for id in &ids[ids.len().saturating_sub(2)..] {
        tail.extend(ctx.repo.read_blob(&id.0)?);
    }
    let end = &tail[tail.len().saturating_sub(1024)..];
    if end.windows(PG_DUMP_END.len()).any(|w| w == PG_DUMP_END) {
        return Ok((true, None));
    }
    Ok((true, Some(format!(
        "{name} is cut short: it lacks the \"dump complete\" comment pg_dump ends its output with (pg_dump failed or was stopped while it wrote, and the pipe kept what came before)"
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::drill::Outcome;

    #[test]
    fn an_emptied_table_is_flagged_a_new_or_grown_one_is_not() {
        let prev = SourceDrill {
            source: "pg:db/app".into(),
            result: Outcome::Passed,
            reason: None,
            seconds: 1.0,
            bytes: 1,
            checks: Vec::new(),
            tables: vec![
                TableRows {
                    table: "public.orders".into(),
                    rows: 500,
                    previous: None,
                    flagged: false,
                },
                TableRows {
                    table: "public.users".into(),
                    rows: 10,
                    previous: None,
                    flagged: false,
                },
            ],
        };
        let now = BTreeMap::from([
            ("public.orders".to_string(), 0),
            ("public.users".to_string(), 12),
            ("public.new".to_string(), 0),
        ]);
        let (t, why) = compare(now, Some(&prev));
        assert_eq!(why.unwrap(), "row counts fell sharply since the last passed drill: public.orders fell from 500 to 0 rows");
        assert_eq!(t.iter().filter(|t| t.flagged).count(), 1);
        assert_eq!(
            compare(BTreeMap::from([("a".to_string(), 0)]), None).1,
            None
        );
        // Gone: flagged when it had rows.
        let (_, why) = compare(BTreeMap::from([("public.new".to_string(), 0)]), Some(&prev));
        assert_eq!(
            why.unwrap(),
            "row counts fell sharply since the last passed drill: public.orders is gone (it had 500 rows), public.users is gone (it had 10 rows)"
        );
    }
}
