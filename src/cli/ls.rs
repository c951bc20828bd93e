//! `snap ls`

use std::io::Write;

use anyhow::Result;
use chrono::DateTime;
use snap::format::tree::{Node, NodeKind};
use snap::ops::restore::snapshot_path;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot: `latest` or an id prefix
    snapshot: String,
    #[command(flatten)]
    of: super::SnapshotOf,
    /// Only below this path of the snapshot
    #[arg(value_parser = super::snapshot_path_arg())]
    path: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

/// The mode as `ls -l` shows it: setuid and setgid as `s` (`S` without execute), the
/// sticky bit as `t` (`T`).
fn mode_string(n: &Node) -> String {
    let m = n.meta.mode;
    let mut s = String::with_capacity(10);
    s.push(n.kind.letter());
    for (shift, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => mark,
            (false, true) => mark.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// An entry as `ls --json` prints it.
pub(super) fn entry_json(path: &str, n: &Node) -> serde_json::Value {
    let mtime = DateTime::from_timestamp(n.meta.mtime.sec, n.meta.mtime.nsec).unwrap_or_default();
    serde_json::json!({
        "path": path,
        "type": match n.kind { NodeKind::File(_) => "file", NodeKind::Dir(_) => "dir", NodeKind::Symlink(_) => "symlink",
            NodeKind::Fifo => "fifo", NodeKind::Socket => "socket", NodeKind::CharDev(_) => "chardev", NodeKind::BlockDev(_) => "blockdev" },
        "mode": n.meta.mode & 0o7777,
        "size": n.meta.size,
        "uid": n.meta.uid,
        "gid": n.meta.gid,
        "mtime": mtime,
        "target": symlink_target(n),
    })
}

/// An entry as `ls` prints it: mode, owner, size, modification time, path.
pub(super) fn entry_line(path: &str, n: &Node) -> String {
    let mtime = DateTime::from_timestamp(n.meta.mtime.sec, n.meta.mtime.nsec).unwrap_or_default();
    let arrow = symlink_target(n)
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    format!(
        "{} {:>5}/{:<5} {:>12}  {}  {path}{arrow}",
        mode_string(n),
        n.meta.uid,
        n.meta.gid,
        n.meta.size,
        snap::host::local_time(&mtime)
    )
}

fn symlink_target(n: &Node) -> Option<String> {
    match &n.kind {
        NodeKind::Symlink(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

fn print(out: &mut dyn Write, json: bool, path: &str, n: &Node) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", entry_json(path, n))
    } else {
        writeln!(out, "{}", entry_line(path, n))
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<i32> {
    let repo = ctx.open(false)?;
    // Shared: prune (exclusive) must not delete packs this reads.
    let _lock = repo.lock(false, "ls")?;
    let (_, snap) = a.of.find(&repo, &a.snapshot)?;
    let comps = snapshot_path(a.path.as_deref().unwrap_or("/"))?;
    let Some(node) = repo.find_node(&snap.tree, &comps)? else {
        return Err(super::output::not_found(format!(
            "{} is not in snapshot {}; `snap ls {}` shows the paths inside",
            a.path.unwrap_or_default(),
            a.snapshot,
            a.snapshot
        )));
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let prefix: String = comps
        .iter()
        .map(|c| format!("/{}", snap::format::tree::shown_name(c)))
        .collect();
    match &node.kind {
        NodeKind::Dir(tree) => {
            if !comps.is_empty() {
                print(&mut out, a.json, &prefix, &node)?;
            }
            repo.walk(tree, &prefix, &mut |p, n| {
                print(&mut out, a.json, p, n).map_err(|e| snap::error::Error::Io {
                    path: "<stdout>".into(),
                    source: e,
                })
            })?;
        }
        _ => print(&mut out, a.json, &prefix, &node)?,
    }
    out.flush()?;
    Ok(0)
}
