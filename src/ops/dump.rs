//! `snap dump`: one entry of a snapshot streamed out without a temporary copy. A file
//! is written as it is; a directory as a tar (modes, owners, times to the nanosecond,
//! symlinks, hard links, FIFOs and devices) or a ZIP (ZIP64 where needed; modes,
//! times and symlinks, but no owners, and hard links as copies), in name order.
//!
//! Member names are the snapshot's paths without their leading `/`, as GNU tar
//! writes them, so `tar -x` recreates the backed-up layout below its directory.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chrono::DateTime;

use crate::error::{Error, IoContext, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{shown_name, Meta, Node, NodeKind};
use crate::ops::export::{dos_time, zip_err};
use crate::ops::restore::{node_at, snapshot_path};
use crate::repo::Repository;

/// The archive format of a dumped directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    /// POSIX tar (GNU headers, PAX records for sub-second times).
    Tar,
    /// ZIP, stored (not deflated: dumps of data that snap already compresses well are
    /// rarely worth a second pass), streamed with data descriptors.
    Zip,
}

/// What a dump wrote.
#[derive(Clone, Debug, Default)]
pub struct DumpStats {
    /// Regular files written with their content (hard links after the first not
    /// counted).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries the archive format cannot hold, left out: sockets, and in a ZIP also
    /// FIFOs and devices. Their paths.
    pub skipped: Vec<String>,
}

/// Writes the entry at `path` of `snap` to `out`: with no `archive`, a file as its
/// bytes and anything else (a directory, or `/`, the whole snapshot) as a tar; with
/// one, any entry as that archive. Holds a shared lock while reading.
pub fn dump(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    archive: Option<Archive>,
    out: &mut dyn Write,
) -> Result<DumpStats> {
    let _lock = repo.read_lock("dump")?;
    let comps = snapshot_path(path)?;
    let node = node_at(repo, snap, path)?;
    let mut stats = DumpStats::default();
    let archive = match (&node.kind, archive) {
        (NodeKind::File(content), None) => {
            stats.files = 1;
            stats.bytes = repo.write_content(content, out)?;
            out.flush().at("<output>")?;
            return Ok(stats);
        }
        (_, archive) => archive.unwrap_or(Archive::Tar),
    };
    // The member name of the dumped directory itself: its components joined, no
    // leading `/`; empty for the snapshot's root, which gets no member of its own.
    let base = comps.join(&b'/');
    let mut walker = Walker {
        repo,
        links: HashMap::new(),
        stats,
    };
    match archive {
        Archive::Tar => {
            let mut sink = TarSink {
                tar: tar::Builder::new(out),
            };
            walker.entry(&mut sink, base, &node)?;
            sink.tar
                .into_inner()
                .and_then(Write::flush)
                .at("<output>")?;
        }
        Archive::Zip => {
            let mut sink = ZipSink {
                zip: zip::ZipWriter::new_stream(out),
            };
            walker.entry(&mut sink, base, &node)?;
            sink.zip
                .finish()
                .map_err(zip_err)?
                .into_inner()
                .flush()
                .at("<output>")?;
        }
    }
    Ok(walker.stats)
}

/// Whether a sink wrote an entry or cannot hold its kind.
enum Put {
    Written,
    Unsupported,
}

/// An archive being written.
trait Sink {
    fn dir(&mut self, name: &[u8], meta: &Meta) -> Result<()>;
    fn file(&mut self, name: &[u8], meta: &Meta, data: &mut dyn Read) -> Result<()>;
    /// A later name of a file already written under `first`.
    fn hard_link(
        &mut self,
        name: &[u8],
        meta: &Meta,
        first: &[u8],
        data: &mut dyn Read,
    ) -> Result<()>;
    fn symlink(&mut self, name: &[u8], meta: &Meta, target: &[u8]) -> Result<()>;
    fn special(&mut self, name: &[u8], meta: &Meta, kind: &NodeKind) -> Result<Put>;
}

/// Walks a snapshot's tree in name order into a sink.
struct Walker<'r> {
    repo: &'r Repository,
    /// Files with more than one link seen so far, by (device, inode): the member name
    /// they were first written under.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: DumpStats,
}

impl Walker<'_> {
    fn entry(&mut self, sink: &mut dyn Sink, name: Vec<u8>, node: &Node) -> Result<()> {
        self.put(sink, &name, node).map_err(|e| match e {
            e @ Error::Entry { .. } => e,
            e => Error::Entry {
                path: format!("/{}", shown_name(&name)),
                source: Box::new(e),
            },
        })
    }

    fn put(&mut self, sink: &mut dyn Sink, name: &[u8], node: &Node) -> Result<()> {
        let meta = &node.meta;
        match &node.kind {
            NodeKind::Dir(tree) => {
                if !name.is_empty() {
                    sink.dir(name, meta)?;
                }
                for child in self.repo.load_tree(tree)?.nodes {
                    let mut child_name = name.to_vec();
                    if !child_name.is_empty() {
                        child_name.push(b'/');
                    }
                    child_name.extend_from_slice(&child.name);
                    self.entry(sink, child_name, &child)?;
                }
            }
            NodeKind::File(content) => {
                let mut data = self.repo.content_reader(content);
                let first = (meta.nlink > 1)
                    .then(|| self.links.get(&(meta.dev, meta.ino)).cloned())
                    .flatten();
                if let Some(first) = first {
                    sink.hard_link(name, meta, &first, &mut data)?;
                } else {
                    sink.file(name, meta, &mut data)?;
                    self.stats.files += 1;
                    self.stats.bytes += meta.size;
                    if meta.nlink > 1 {
                        self.links.insert((meta.dev, meta.ino), name.to_vec());
                    }
                }
            }
            NodeKind::Symlink(target) => sink.symlink(name, meta, target)?,
            kind => {
                if let Put::Unsupported = sink.special(name, meta, kind)? {
                    let shown = format!("/{}", shown_name(name));
                    let what = match kind {
                        NodeKind::Socket => "socket",
                        NodeKind::Fifo => "FIFO",
                        _ => "device",
                    };
                    log::warn!("{shown}: left out: the archive format cannot hold a {what}");
                    self.stats.skipped.push(shown);
                }
            }
        }
        Ok(())
    }
}

/// An archive write error as the repository's error: the repository's own errors
/// (a damaged chunk) come back out of the `io::Error` the archive writer wrapped
/// them in.
fn archive_err(e: std::io::Error) -> Error {
    if !e
        .get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<Error>)
    {
        return Error::Io {
            path: PathBuf::from("<archive output>"),
            source: e,
        };
    }
    match e
        .into_inner()
        .map(<dyn std::error::Error + Send + Sync>::downcast::<Error>)
    {
        Some(Ok(inner)) => *inner,
        _ => Error::internal("an archive error lost its cause", None),
    }
}

/// A file's bytes, which must be exactly the size its header announced: a tar member
/// longer or shorter than its header would shift every member after it.
struct Exact<'a> {
    data: &'a mut dyn Read,
    left: u64,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if (n == 0 && self.left > 0) || n as u64 > self.left {
            return Err(std::io::Error::other(Error::corrupt(
                "file",
                "content",
                "its chunks do not add up to the size its entry records",
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn os(name: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(name))
}

struct TarSink<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> TarSink<W> {
    /// A header with `meta`'s mode, owner and time, and a PAX record first when the
    /// time has a fraction of a second or is before 1970, which the header cannot hold
    /// (GNU tar, bsdtar and Python restore it).
    fn header(&mut self, meta: &Meta, kind: tar::EntryType, size: u64) -> Result<tar::Header> {
        let (sec, nsec) = (meta.mtime.sec, meta.mtime.nsec);
        if nsec != 0 || sec < 0 {
            // A decimal number of seconds: -1.25 is a quarter before -1, so a time
            // before 1970 with a fraction counts the fraction down from the second after.
            let t = if sec < 0 && nsec != 0 {
                format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
            } else {
                format!("{sec}.{nsec:09}")
            };
            self.tar
                .append_pax_extensions([("mtime", t.as_bytes())])
                .map_err(archive_err)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode & 0o7777);
        h.set_uid(meta.uid.into());
        h.set_gid(meta.gid.into());
        h.set_mtime(u64::try_from(meta.mtime.sec).unwrap_or(0));
        h.set_size(size);
        Ok(h)
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, name: &[u8], meta: &Meta) -> Result<()> {
        let mut h = self.header(meta, tar::EntryType::Directory, 0)?;
        self.tar
            .append_data(&mut h, os(name), std::io::empty())
            .map_err(archive_err)
    }

    fn file(&mut self, name: &[u8], meta: &Meta, data: &mut dyn Read) -> Result<()> {
        let mut h = self.header(meta, tar::EntryType::Regular, meta.size)?;
        let exact = Exact {
            data,
            left: meta.size,
        };
        self.tar
            .append_data(&mut h, os(name), exact)
            .map_err(archive_err)
    }

    fn hard_link(
        &mut self,
        name: &[u8],
        meta: &Meta,
        first: &[u8],
        _data: &mut dyn Read,
    ) -> Result<()> {
        let mut h = self.header(meta, tar::EntryType::Link, 0)?;
        self.tar
            .append_link(&mut h, os(name), os(first))
            .map_err(archive_err)
    }

    fn symlink(&mut self, name: &[u8], meta: &Meta, target: &[u8]) -> Result<()> {
        let mut h = self.header(meta, tar::EntryType::Symlink, 0)?;
        self.tar
            .append_link(&mut h, os(name), os(target))
            .map_err(archive_err)
    }

    fn special(&mut self, name: &[u8], meta: &Meta, kind: &NodeKind) -> Result<Put> {
        let (entry, rdev) = match kind {
            NodeKind::Fifo => (tar::EntryType::Fifo, 0),
            NodeKind::CharDev(rdev) => (tar::EntryType::Char, *rdev),
            NodeKind::BlockDev(rdev) => (tar::EntryType::Block, *rdev),
            _ => return Ok(Put::Unsupported),
        };
        let mut h = self.header(meta, entry, 0)?;
        h.set_device_major(rustix::fs::major(rdev))
            .and_then(|()| h.set_device_minor(rustix::fs::minor(rdev)))
            .map_err(archive_err)?;
        self.tar
            .append_data(&mut h, os(name), std::io::empty())
            .map_err(archive_err)?;
        Ok(Put::Written)
    }
}

struct ZipSink<W: Write> {
    zip: zip::ZipWriter<zip::write::StreamWriter<W>>,
}

/// ZIP member options for `meta`: stored, its mode and time: in local DOS time, and
/// exactly (to the second, in UTC, 1901 to 2038) in Info-ZIP's extended timestamp,
/// which `unzip` restores.
fn zip_options(meta: &Meta) -> Result<zip::write::FullFileOptions<'static, 'static>> {
    let mtime = DateTime::from_timestamp(meta.mtime.sec, meta.mtime.nsec).unwrap_or_default();
    let mut o = zip::write::FullFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(dos_time(mtime))
        .unix_permissions(meta.mode & 0o7777);
    if let Ok(t) = i32::try_from(meta.mtime.sec) {
        let mut ut = vec![1u8];
        ut.extend(t.to_le_bytes());
        o.add_extra_field(0x5455, ut, false).map_err(zip_err)?;
    }
    Ok(o)
}

/// A ZIP member name: ZIP names are text, so bytes that are not UTF-8 are written as
/// `\xHH` (see [`shown_name`]); two names that differ in such bytes stay apart.
fn zip_name(name: &[u8]) -> String {
    shown_name(name)
}

impl<W: Write> Sink for ZipSink<W> {
    fn dir(&mut self, name: &[u8], meta: &Meta) -> Result<()> {
        self.zip
            .add_directory(zip_name(name), zip_options(meta)?)
            .map_err(zip_err)
    }

    fn file(&mut self, name: &[u8], meta: &Meta, data: &mut dyn Read) -> Result<()> {
        let opts = zip_options(meta)?.large_file(meta.size >= u64::from(u32::MAX));
        self.zip.start_file(zip_name(name), opts).map_err(zip_err)?;
        std::io::copy(data, &mut self.zip).map_err(archive_err)?;
        Ok(())
    }

    fn hard_link(
        &mut self,
        name: &[u8],
        meta: &Meta,
        _first: &[u8],
        data: &mut dyn Read,
    ) -> Result<()> {
        // ZIP has no hard links: every name gets the content.
        self.file(name, meta, data)
    }

    fn symlink(&mut self, name: &[u8], meta: &Meta, target: &[u8]) -> Result<()> {
        self.zip
            .add_symlink(zip_name(name), zip_name(target), zip_options(meta)?)
            .map_err(zip_err)
    }

    fn special(&mut self, _name: &[u8], _meta: &Meta, _kind: &NodeKind) -> Result<Put> {
        Ok(Put::Unsupported)
    }
}
