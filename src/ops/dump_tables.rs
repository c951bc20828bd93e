//! Which table each data file of a pg_dump directory holds, and which file of an
//! earlier dump holds the same table.
//!
//! pg_dump names a table's data `<dumpId>.dat`, and dump ids are handed out in catalog
//! order, so a table added to the database renumbers the files of the tables after it:
//! yesterday's `3551.dat` may be today's `3552.dat`, and today's `3551.dat` another
//! table. Files are therefore paired across dumps by their table (schema and name, from
//! `pg_restore --list` of each dump's `toc.dat`), and only files that are no table's
//! data (`toc.dat`, large objects' `blob_<oid>.dat`) by name. Used by `diff` and by
//! `backup`'s hints, which cut each new file against its previous version.
//!
//! A dump whose `toc.dat` cannot be listed (pg_restore missing, a damaged file) is
//! paired by name, as any other directory: that costs `diff` its table names and the
//! hints their matches, never correctness.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::error::{IoContext, Result};
use crate::format::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::source::command::Running;

/// The name of a pg_dump directory's table of contents.
pub const TOC: &[u8] = b"toc.dat";

/// The table data files of one pg_dump directory.
#[derive(Debug, Default)]
pub struct DumpTables {
    /// `<dumpId>.dat` -> `schema.table`.
    by_file: HashMap<Vec<u8>, String>,
    /// `schema.table` -> `<dumpId>.dat`.
    by_table: HashMap<String, Vec<u8>>,
    /// Each table with data as the listing names it: schema and name joined by a
    /// space, which cannot tell `"a b".t` from `a."b t"` (see [`DumpTables::listed`]).
    listed: Vec<String>,
}

impl DumpTables {
    /// The tables of the dump in directory `dir` (which holds its `toc.dat`), from
    /// `pg_restore --list`.
    pub fn of_dir(dir: &Path) -> Result<DumpTables> {
        let mut list = Command::new("pg_restore");
        list.arg("--list").arg(dir);
        let listing = Running::capture(list, "pg_restore --list")?;
        Ok(DumpTables::parse(&listing))
    }

    /// The tables of the dump whose directory entries in `repo` are `nodes`; `None`
    /// when they hold no `toc.dat` file.
    pub fn of_nodes(repo: &Repository, nodes: &[Node]) -> Result<Option<DumpTables>> {
        let Some(NodeKind::File(content)) = nodes.iter().find(|n| n.name == TOC).map(|n| &n.kind)
        else {
            return Ok(None);
        };
        let dir = crate::scratch::dir(&std::env::temp_dir(), "toc")?;
        let path = dir.path().join("toc.dat");
        let mut f = std::fs::File::create(&path).at(&path)?;
        repo.write_content(content, &mut f)?;
        drop(f);
        DumpTables::of_dir(dir.path()).map(Some)
    }

    /// Table data entries of a `pg_restore --list`: `3345; 0 16390 TABLE DATA public
    /// accounts owner` gives `3345.dat` -> `public.accounts`. The last word is the
    /// owner, so a table name with spaces is kept whole (a schema's is not).
    fn parse(listing: &str) -> DumpTables {
        let mut out = DumpTables::default();
        for line in listing.lines() {
            let Some((id, rest)) = line.split_once(';') else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() < 6 || words[2] != "TABLE" || words[3] != "DATA" {
                continue;
            }
            let name = &words[5..words.len() - 1];
            let table = format!("{}.{}", words[4], name.join(" "));
            out.listed.push(words[4..words.len() - 1].join(" "));
            let file = format!("{}.dat", id.trim()).into_bytes();
            out.by_table.insert(table.clone(), file.clone());
            out.by_file.insert(file, table);
        }
        out
    }

    /// Every table with data in the dump as `pg_restore --list` names it: schema and
    /// name joined by a space (so a schema with a space in its name is told apart from
    /// a table with one only by this whole form), sorted.
    pub fn listed(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.listed.iter().map(String::as_str).collect();
        t.sort_unstable();
        t
    }

    /// The table whose data file `file` is.
    pub fn table(&self, file: &[u8]) -> Option<&str> {
        self.by_file.get(file).map(String::as_str)
    }
}

/// How the files of a dump directory pair with an earlier dump's.
#[derive(Debug, Default)]
pub struct Pairing {
    /// The earlier dump's tables, if known.
    pub old: Option<DumpTables>,
    /// The newer dump's tables, if known.
    pub new: Option<DumpTables>,
}

impl Pairing {
    /// The name of the earlier dump's file that holds what the newer dump's file
    /// `name` holds: the same table's file, or for a file that is no table's data the
    /// same name (unless that is a table's file there); `None` for a new table.
    pub fn old_name<'a>(&'a self, name: &'a [u8]) -> Option<&'a [u8]> {
        let (Some(old), Some(new)) = (&self.old, &self.new) else {
            return Some(name);
        };
        match new.table(name) {
            Some(table) => old.by_table.get(table).map(Vec::as_slice),
            None => old.table(name).is_none().then_some(name),
        }
    }

    /// Whether files are paired by table.
    pub fn by_table(&self) -> bool {
        self.old.is_some() && self.new.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::{DumpTables, Pairing};

    #[test]
    fn table_data_lines_name_their_files() {
        let listing = ";\n; Archive created at ...\n215; 1259 16389 TABLE public pgbench_accounts postgres\n3345; 0 16389 TABLE DATA public pgbench_accounts postgres\n3346; 0 16395 TABLE DATA app orders postgres\n3347; 0 16399 TABLE DATA public my table postgres\n";
        let t = DumpTables::parse(listing);
        assert_eq!(t.table(b"3345.dat"), Some("public.pgbench_accounts"));
        assert_eq!(t.table(b"3346.dat"), Some("app.orders"));
        assert_eq!(t.table(b"3347.dat"), Some("public.my table"));
        assert_eq!(t.by_file.len(), 3);
        assert_eq!(
            t.listed(),
            ["app orders", "public my table", "public pgbench_accounts"]
        );
    }

    #[test]
    fn renumbered_files_pair_by_table() {
        let old = DumpTables::parse(
            "10; 0 1 TABLE DATA public layer o\n11; 0 2 TABLE DATA public resource o\n",
        );
        // A table added before both shifts their numbers by one.
        let new = DumpTables::parse(
            "11; 0 3 TABLE DATA public added o\n12; 0 1 TABLE DATA public layer o\n13; 0 2 TABLE DATA public resource o\n",
        );
        let p = Pairing {
            old: Some(old),
            new: Some(new),
        };
        assert_eq!(p.old_name(b"12.dat"), Some(&b"10.dat"[..]));
        assert_eq!(p.old_name(b"13.dat"), Some(&b"11.dat"[..]));
        assert_eq!(
            p.old_name(b"11.dat"),
            None,
            "a new table has no earlier file"
        );
        assert_eq!(p.old_name(b"toc.dat"), Some(&b"toc.dat"[..]));
        let by_name = Pairing {
            old: None,
            new: Some(DumpTables::default()),
        };
        assert_eq!(by_name.old_name(b"12.dat"), Some(&b"12.dat"[..]));
    }
}
