//! Directory trees and chunk lists: their binary encoding.
//!
//! A [`Tree`] is one directory: its entries sorted by name, each with its metadata and
//! either its content (files), the id of its subtree (directories) or its target
//! (symlinks). Trees are content-addressed blobs, so an unchanged directory encodes to
//! the same bytes and costs nothing in the next snapshot.
//!
//! A file's content is a list of chunk ids. Long lists are split into [`ListNode`] blobs
//! by a content-defined rule on the ids themselves (a hashsplit tree, as in bup): an edit
//! in a huge file rewrites only the list nodes around it, not the whole list.
//!
//! Decoders trust nothing: counts are checked against the bytes present, names are
//! checked to be single, safe path components in strictly increasing order.

use std::fmt::Write as _;

use crate::error::{Error, Result, SourceError};
use crate::format::id::{DataId, Id, TreeId, ID_LEN};

/// Version byte opening every tree blob.
pub const TREE_VERSION: u8 = 1;
/// Version byte opening every list blob.
pub const LIST_VERSION: u8 = 1;
/// Largest tree or list blob accepted on read.
pub const MAX_META_BLOB: u32 = 64 << 20;
/// A content list of at most this many ids is kept inline in the file's node.
pub const INLINE_MAX: usize = 64;
/// A list node closes after at least this many ids when the boundary rule fires...
pub const LIST_MIN: usize = 4;
/// ...and always at this many.
pub const LIST_MAX: usize = 1024;
/// The boundary rule: the low 6 bits of the last byte of the id are zero (1 in 64).
pub const LIST_SPLIT_MASK: u8 = 0x3f;
/// Deepest list tree accepted on read (64^16 chunks is far beyond any file).
pub const MAX_DEPTH: u8 = 16;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds, below 10^9.
    pub nsec: u32,
}

/// Metadata kept for every entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode`: permission bits and file type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time (for change detection only; not restored).
    pub ctime: Timestamp,
    /// Device of the source file system (for hard links and change detection).
    pub dev: u64,
    /// Inode number (same).
    pub ino: u64,
    /// Link count: above 1, entries with the same `dev` and `ino` are hard links.
    pub nlink: u32,
    /// Size in bytes (files: content length).
    pub size: u64,
}

/// The chunks of a file: ids of data chunks when `depth` is 0, else of [`ListNode`]s of
/// level `depth - 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// Levels of list nodes below these ids.
    pub depth: u8,
    /// The top-level ids.
    pub ids: Vec<Id>,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File(Content),
    /// A directory, with the id of its tree blob.
    Dir(TreeId),
    /// A symbolic link and its target (raw bytes).
    Symlink(Vec<u8>),
    /// A named pipe.
    Fifo,
    /// A Unix socket (recorded, never restored).
    Socket,
    /// A character device and its `rdev`.
    CharDev(u64),
    /// A block device and its `rdev`.
    BlockDev(u64),
}

impl NodeKind {
    fn tag(&self) -> u8 {
        match self {
            NodeKind::File(_) => 0,
            NodeKind::Dir(_) => 1,
            NodeKind::Symlink(_) => 2,
            NodeKind::Fifo => 3,
            NodeKind::Socket => 4,
            NodeKind::CharDev(_) => 5,
            NodeKind::BlockDev(_) => 6,
        }
    }

    /// One letter for listings, as `ls -l` prints it.
    pub fn letter(&self) -> char {
        match self {
            NodeKind::File(_) => '-',
            NodeKind::Dir(_) => 'd',
            NodeKind::Symlink(_) => 'l',
            NodeKind::Fifo => 'p',
            NodeKind::Socket => 's',
            NodeKind::CharDev(_) => 'c',
            NodeKind::BlockDev(_) => 'b',
        }
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// File name: one path component, raw bytes (need not be UTF-8).
    pub name: Vec<u8>,
    /// Kind and kind-specific payload.
    pub kind: NodeKind,
    /// Metadata.
    pub meta: Meta,
}

/// A directory's entries, sorted by name bytes, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

/// Longest entry name: its length is stored in a u16.
pub const MAX_NAME_LEN: usize = u16::MAX as usize;

/// The one name rule of trees, applied by [`Tree::encode`] and [`Tree::decode`] alike:
/// why `name` is not a single path component that is safe to join to a directory.
fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty name")
    } else if name == b"." || name == b".." {
        Some("name is . or ..")
    } else if name.contains(&b'/') {
        Some("name contains /")
    } else if name.contains(&0) {
        Some("name contains NUL")
    } else if name.len() > MAX_NAME_LEN {
        Some("name longer than 65535 bytes")
    } else {
        None
    }
}

/// Whether `name` is a single path component that is safe to join to a directory.
pub fn is_safe_name(name: &[u8]) -> bool {
    name_problem(name).is_none()
}

/// A name (or path) as text for people and scripts: each byte that is not part of
/// UTF-8, and each control character (a newline would make one name look like two
/// lines), is written `\xHH`, so names that differ there stay apart, and
/// [`unshown_name`] gives the bytes back.
pub fn shown_name(name: &[u8]) -> String {
    shown(name).into_owned()
}

/// [`shown_name`], borrowing `name` when it is shown as it is (text with no control
/// character: nearly every name), so a match per entry costs no allocation.
pub fn shown(name: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(name) {
        Ok(text) if !text.chars().any(char::is_control) => std::borrow::Cow::Borrowed(text),
        _ => std::borrow::Cow::Owned(escaped(name)),
    }
}

/// `name` with each byte that is not text, and each control character, as `\xHH`.
fn escaped(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02X}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// A glob `pattern` (raw bytes or `\xHH` alike) made to match names as
/// [`shown_name`] writes them: its escapes written as `shown_name` does, their
/// backslashes taken literally (in a glob, `\x` alone would be a plain `x`).
pub fn shown_glob(pattern: &str) -> String {
    shown_name(&unshown_name(pattern.as_bytes())).replace("\\x", "\\\\x")
}

/// The bytes of a name [`shown_name`] wrote: `\xHH` of a byte it escapes (a control
/// character, or one that cannot start UTF-8 text) is that byte; the rest is as
/// written.
pub fn unshown_name(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = (b[i] == b'\\' && b.get(i + 1) == Some(&b'x'))
            .then(|| b.get(i + 2..i + 4))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
            .filter(|v| *v >= 0x80 || *v < 0x20 || *v == 0x7F);
        if let Some(v) = byte {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Splits a `/`-separated path inside a snapshot (`/srv/ngw`, `db/x.sql`) into its
/// components; `None` when one of them is `.` or `..` (or otherwise unsafe).
pub fn split_path(p: &str) -> Option<Vec<Vec<u8>>> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| is_safe_name(c.as_bytes()).then(|| c.as_bytes().to_vec()))
        .collect()
}

impl Tree {
    /// Sorts entries by name. Encoding requires sorted, unique names.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Finds an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Encodes the tree. Names must be sorted and unique (see [`Tree::sort`]); a name
    /// [`Tree::decode`] would reject is an error naming the entry, so that no snapshot
    /// is ever written that cannot be read back.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.nodes.len() * 128);
        out.push(TREE_VERSION);
        put_u32(&mut out, len32(self.nodes.len()));
        for n in &self.nodes {
            if let Some(problem) = name_problem(&n.name) {
                return Err(SourceError::EntryName {
                    name: lossy_prefix(&n.name),
                    problem,
                }
                .into());
            }
            // At most MAX_NAME_LEN, checked just above.
            let len = u16::try_from(n.name.len()).expect("at most MAX_NAME_LEN");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&n.name);
            out.push(n.kind.tag());
            let m = &n.meta;
            put_u32(&mut out, m.mode);
            put_u32(&mut out, m.uid);
            put_u32(&mut out, m.gid);
            put_time(&mut out, m.mtime);
            put_time(&mut out, m.ctime);
            out.extend_from_slice(&m.dev.to_le_bytes());
            out.extend_from_slice(&m.ino.to_le_bytes());
            put_u32(&mut out, m.nlink);
            out.extend_from_slice(&m.size.to_le_bytes());
            match &n.kind {
                NodeKind::File(c) => {
                    out.push(c.depth);
                    put_ids(&mut out, &c.ids);
                }
                NodeKind::Dir(id) => out.extend_from_slice(id.bytes()),
                NodeKind::Symlink(t) => {
                    put_u32(&mut out, len32(t.len()));
                    out.extend_from_slice(t);
                }
                NodeKind::Fifo | NodeKind::Socket => {}
                NodeKind::CharDev(r) | NodeKind::BlockDev(r) => {
                    out.extend_from_slice(&r.to_le_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Decodes and validates a tree blob; `id` names it in errors.
    pub fn decode(id: &TreeId, b: &[u8]) -> Result<Tree> {
        let mut r = Reader {
            b,
            what: "tree",
            id: &id.0,
        };
        let version = r.u8()?;
        if version != TREE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "tree",
                expected: u32::from(TREE_VERSION),
                found: u32::from(version),
            });
        }
        let count = r.count(2 + 1 + 4 * 4 + 12 * 2 + 8 * 3)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
            let name = r.take(name_len)?.to_vec();
            if let Some(problem) = name_problem(&name) {
                return Err(r.bad(format!(
                    "unsafe entry name {:?}: {problem}",
                    lossy_prefix(&name)
                )));
            }
            if let Some(prev) = nodes.last() {
                if prev.name >= name {
                    return Err(r.bad(format!(
                        "entries not sorted or duplicated at {:?}",
                        String::from_utf8_lossy(&name)
                    )));
                }
            }
            let tag = r.u8()?;
            let meta = Meta {
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                mtime: r.time()?,
                ctime: r.time()?,
                dev: r.u64()?,
                ino: r.u64()?,
                nlink: r.u32()?,
                size: r.u64()?,
            };
            let kind = match tag {
                0 => {
                    let depth = r.u8()?;
                    if depth > MAX_DEPTH {
                        return Err(r.bad(format!("content depth {depth}")));
                    }
                    NodeKind::File(Content {
                        depth,
                        ids: r.ids()?,
                    })
                }
                1 => NodeKind::Dir(TreeId(r.id()?)),
                2 => {
                    let n = r.count(1)?;
                    NodeKind::Symlink(r.take(n)?.to_vec())
                }
                3 => NodeKind::Fifo,
                4 => NodeKind::Socket,
                5 => NodeKind::CharDev(r.u64()?),
                6 => NodeKind::BlockDev(r.u64()?),
                t => return Err(r.bad(format!("unknown entry kind {t}"))),
            };
            nodes.push(Node { name, kind, meta });
        }
        if !r.b.is_empty() {
            return Err(r.bad(format!("{} trailing bytes", r.b.len())));
        }
        Ok(Tree { nodes })
    }
}

/// An interior node of a file's chunk list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListNode {
    /// 0: `ids` are data chunks; L: `ids` are list nodes of level L - 1.
    pub level: u8,
    /// The ids, in file order.
    pub ids: Vec<Id>,
}

impl ListNode {
    /// Encodes: version u8 | level u8 | count u32 | ids.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.ids.len() * ID_LEN);
        out.push(LIST_VERSION);
        out.push(self.level);
        put_ids(&mut out, &self.ids);
        out
    }

    /// Decodes and validates a list blob.
    pub fn decode(id: &Id, b: &[u8]) -> Result<ListNode> {
        let mut r = Reader {
            b,
            what: "chunk list",
            id,
        };
        let version = r.u8()?;
        if version != LIST_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "chunk list",
                expected: u32::from(LIST_VERSION),
                found: u32::from(version),
            });
        }
        let level = r.u8()?;
        if level >= MAX_DEPTH {
            return Err(r.bad(format!("level {level}")));
        }
        let ids = r.ids()?;
        if !r.b.is_empty() {
            return Err(r.bad("trailing bytes"));
        }
        Ok(ListNode { level, ids })
    }
}

/// Builds a file's [`Content`] from its chunk ids, storing list nodes as they close, so
/// that memory stays at most [`LIST_MAX`] ids per level whatever the file size.
#[derive(Default)]
pub struct ListBuilder {
    /// The first ids, until there are more than [`INLINE_MAX`]: a short file is stored
    /// inline and never creates a list node.
    inline: Vec<Id>,
    spilled: bool,
    levels: Vec<Vec<Id>>,
}

/// Where a [`ListBuilder`] stores the list nodes it closes; returns the node's id.
pub type StoreList<'a> = dyn FnMut(&ListNode) -> Result<Id> + 'a;

impl ListBuilder {
    /// Appends the next data chunk id.
    pub fn push(&mut self, DataId(id): DataId, store: &mut StoreList<'_>) -> Result<()> {
        if self.spilled {
            return self.push_at(0, id, store);
        }
        self.inline.push(id);
        if self.inline.len() > INLINE_MAX {
            self.spilled = true;
            for id in std::mem::take(&mut self.inline) {
                self.push_at(0, id, store)?;
            }
        }
        Ok(())
    }

    fn push_at(&mut self, level: usize, id: Id, store: &mut StoreList<'_>) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        let pending = &mut self.levels[level];
        pending.push(id);
        let n = pending.len();
        if n >= LIST_MAX || (n >= LIST_MIN && id.0[ID_LEN - 1] & LIST_SPLIT_MASK == 0) {
            let ids = std::mem::take(pending);
            let node = ListNode {
                level: level_u8(level),
                ids,
            };
            let list_id = store(&node)?;
            self.push_at(level + 1, list_id, store)?;
        }
        Ok(())
    }

    /// Closes the open list nodes and returns the file's content.
    pub fn finish(mut self, store: &mut StoreList<'_>) -> Result<Content> {
        if !self.spilled {
            return Ok(Content {
                depth: 0,
                ids: self.inline,
            });
        }
        let mut level = 0;
        loop {
            let pending = match self.levels.get_mut(level) {
                Some(p) => std::mem::take(p),
                None => Vec::new(),
            };
            let top = self.levels.len() <= level + 1;
            if top && pending.len() <= INLINE_MAX {
                return Ok(Content {
                    depth: level_u8(level),
                    ids: pending,
                });
            }
            if !pending.is_empty() {
                let id = store(&ListNode {
                    level: level_u8(level),
                    ids: pending,
                })?;
                if self.levels.len() <= level + 1 {
                    self.levels.push(Vec::new());
                }
                self.levels[level + 1].push(id);
            }
            level += 1;
        }
    }
}

/// A list level as stored: each level holds at least [`LIST_MIN`] of the one below, so
/// no file reaches 256 levels.
fn level_u8(level: usize) -> u8 {
    u8::try_from(level).expect("fewer than 256 levels")
}

/// A name for messages: lossy UTF-8, at most 200 bytes of it.
fn lossy_prefix(name: &[u8]) -> String {
    let cut = &name[..name.len().min(200)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < name.len() {
        s.push_str("...");
    }
    s
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("counts are bounded far below u32::MAX")
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.sec.to_le_bytes());
    put_u32(out, t.nsec);
}

fn put_ids(out: &mut Vec<u8>, ids: &[Id]) {
    put_u32(out, len32(ids.len()));
    for id in ids {
        out.extend_from_slice(&id.0);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
    id: &'a Id,
}

impl<'a> Reader<'a> {
    fn bad(&self, detail: impl ToString) -> Error {
        Error::corrupt(self.what, self.id, detail)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(self.bad("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn time(&mut self) -> Result<Timestamp> {
        let sec = self.u64()? as i64;
        let nsec = self.u32()?;
        if nsec >= 1_000_000_000 {
            return Err(self.bad("nanoseconds out of range"));
        }
        Ok(Timestamp { sec, nsec })
    }
    fn id(&mut self) -> Result<Id> {
        Ok(Id::from_slice(self.take(ID_LEN)?).expect("32 bytes"))
    }
    /// A count whose items take at least `min_item` bytes each, checked against what is left.
    fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.b.len() {
            return Err(self.bad(format!("count {n} exceeds the blob")));
        }
        Ok(n)
    }
    fn ids(&mut self) -> Result<Vec<Id>> {
        let n = self.count(ID_LEN)?;
        (0..n).map(|_| self.id()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_name_reads_back_as_its_bytes() {
        for name in [
            &b"plain.txt"[..],
            "caf\u{e9} \u{1F600}".as_bytes(),
            b"n\xfe",
            b"\xff\xfe\xc3",
            b"half \xe2\x82 euro",
            b"new\nline\ttab\x1b[31m\x7f",
            "c1 \u{9b}".as_bytes(),
        ] {
            let shown = shown_name(name);
            assert_eq!(unshown_name(shown.as_bytes()), name, "{shown}");
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
        assert_eq!(shown_name(b"n\xfe"), "n\\xFE");
        assert_eq!(shown_name(b"a\nb"), "a\\x0Ab");
        assert_ne!(shown_name(b"n\xfe"), shown_name(b"n\xff"));
        // Only bytes that cannot be UTF-8 text are read as escapes.
        assert_eq!(unshown_name(b"a\\x41"), b"a\\x41");
    }
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn arb_node() -> impl Strategy<Value = Node> {
        let kind = prop_oneof![
            (0u8..3, proptest::collection::vec(any::<[u8; 32]>(), 0..5)).prop_map(
                |(depth, ids)| NodeKind::File(Content {
                    depth,
                    ids: ids.into_iter().map(Id).collect()
                })
            ),
            any::<[u8; 32]>().prop_map(|b| NodeKind::Dir(TreeId(Id(b)))),
            proptest::collection::vec(any::<u8>(), 0..50).prop_map(NodeKind::Symlink),
            Just(NodeKind::Fifo),
            Just(NodeKind::Socket),
            any::<u64>().prop_map(NodeKind::CharDev),
            any::<u64>().prop_map(NodeKind::BlockDev),
        ];
        (
            proptest::collection::vec(1u8..=255, 1..40),
            kind,
            any::<(u32, u32, u32, i64, u64, u64, u32, u64)>(),
            0u32..1_000_000_000,
        )
            .prop_filter("safe name", |(n, ..)| is_safe_name(n))
            .prop_map(
                |(name, kind, (mode, uid, gid, sec, dev, ino, nlink, size), nsec)| Node {
                    name,
                    kind,
                    meta: Meta {
                        mode,
                        uid,
                        gid,
                        mtime: Timestamp { sec, nsec },
                        ctime: Timestamp {
                            sec: sec / 2,
                            nsec: nsec / 3,
                        },
                        dev,
                        ino,
                        nlink,
                        size,
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            let mut t = Tree { nodes };
            t.sort();
            t.nodes.dedup_by(|a, b| a.name == b.name);
            let bytes = t.encode().unwrap();
            prop_assert_eq!(Tree::decode(&TreeId(Id::hash(&bytes)), &bytes).unwrap(), t);
        }

        #[test]
        fn tree_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&TreeId(Id::hash(&bytes)), &bytes);
            let _ = ListNode::decode(&Id::hash(&bytes), &bytes);
        }
    }

    fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Fifo,
            meta: Meta::default(),
        }
    }

    /// A one-entry tree blob whose entry is named `name`, bypassing encode's checks.
    fn blob_named(name: &[u8]) -> Vec<u8> {
        let b = Tree {
            nodes: vec![node(b"a")],
        }
        .encode()
        .unwrap();
        let len = u16::try_from(name.len()).unwrap().to_le_bytes();
        [&b[..5], &len[..], name, &b[8..]].concat()
    }

    #[test]
    fn encode_refuses_every_name_decode_rejects() {
        let long = vec![b'x'; MAX_NAME_LEN + 1];
        for bad in [&b".."[..], b".", b"a/b", b"", b"x\0", &long[..]] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            let err = t.encode().expect_err("encoded").to_string();
            let shown = lossy_prefix(bad);
            assert!(err.contains(&format!("{shown:?}")), "{err}");
            if bad.len() <= MAX_NAME_LEN {
                let b = blob_named(bad);
                assert!(
                    Tree::decode(&TreeId(Id::hash(&b)), &b).is_err(),
                    "{bad:?} accepted"
                );
            }
        }
        // The longest name the length field holds round-trips.
        let t = Tree {
            nodes: vec![node(&long[1..])],
        };
        let b = t.encode().unwrap();
        assert_eq!(Tree::decode(&TreeId(Id::hash(&b)), &b).unwrap(), t);
        assert!(is_safe_name(&long[1..]) && !is_safe_name(&long));
    }

    #[test]
    fn rejects_unsorted_and_duplicate_names() {
        for names in [[b"a", b"a"], [b"b", b"a"]] {
            let t = Tree {
                nodes: names.iter().map(|n| node(&n[..])).collect(),
            };
            let b = t.encode().unwrap();
            assert!(Tree::decode(&TreeId(Id::hash(&b)), &b).is_err());
        }
    }

    /// Builds content from ids, keeping stored nodes in a map; expands it back.
    fn build(ids: &[Id], store: &mut HashMap<Id, ListNode>) -> Content {
        let mut put = |n: &ListNode| {
            let id = Id::hash(&n.encode());
            store.insert(id, n.clone());
            Ok(id)
        };
        let mut b = ListBuilder::default();
        for id in ids {
            b.push(DataId(*id), &mut put).unwrap();
        }
        b.finish(&mut put).unwrap()
    }

    fn expand(depth: u8, ids: &[Id], store: &HashMap<Id, ListNode>, out: &mut Vec<Id>) {
        for id in ids {
            if depth == 0 {
                out.push(*id);
            } else {
                let n = &store[id];
                assert_eq!(n.level, depth - 1);
                expand(n.level, &n.ids, store, out);
            }
        }
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<Id> {
        range.map(|i| Id::hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn list_round_trip_and_small_inline() {
        for n in [0u32, 1, 64, 65, 1000, 70_000] {
            let want = ids(0..n);
            let mut store = HashMap::new();
            let c = build(&want, &mut store);
            assert!(c.ids.len() <= INLINE_MAX);
            if n as usize <= INLINE_MAX {
                assert_eq!((c.depth, store.len()), (0, 0));
            }
            let mut got = Vec::new();
            expand(c.depth, &c.ids, &store, &mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn short_lists_never_create_list_nodes() {
        // Ids whose last byte is zero close a group at every chance.
        for n in [4, 10, 64] {
            let ids = vec![Id([0; 32]); n];
            let mut store = HashMap::new();
            let c = build(&ids, &mut store);
            assert_eq!((c.depth, c.ids.len(), store.len()), (0, n, 0));
        }
        let mut store = HashMap::new();
        assert!(build(&vec![Id([0; 32]); 65], &mut store).depth > 0);
    }

    #[test]
    fn identical_ids_terminate() {
        let same = vec![Id([0; 32]); 100_000];
        let mut store = HashMap::new();
        let c = build(&same, &mut store);
        let mut got = Vec::new();
        expand(c.depth, &c.ids, &store, &mut got);
        assert_eq!(got.len(), same.len());
    }

    #[test]
    fn an_insertion_rewrites_few_list_nodes() {
        let before = ids(0..200_000);
        let mut after = before.clone();
        after.insert(100_000, Id::hash(b"inserted"));
        let mut s1 = HashMap::new();
        let mut s2 = HashMap::new();
        build(&before, &mut s1);
        build(&after, &mut s2);
        let new = s2.keys().filter(|k| !s1.contains_key(*k)).count();
        assert!(s1.len() > 1000);
        assert!(new <= 6, "{new} of {} list nodes are new", s2.len());
    }
}
