//! A streaming reader of the ustar archives `pg_basebackup --format=tar` writes: one
//! member at a time, its data read straight from the stream (a member may be a 1 GiB
//! relation segment, never held in memory). Only what PostgreSQL writes is accepted:
//! regular files and directories with ustar or old-style headers, sizes in octal or
//! base-256; a header whose checksum fails, a link, a device or an extension header is
//! an error naming it.

use std::io::{self, Read};

const BLOCK: usize = 512;

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symlink (a tablespace's entry in `pg_tblspc`).
    Symlink,
}

/// A member's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its path as stored (the ustar prefix joined on).
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Data length.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
}

/// A tar stream being read; [`Read`] gives the current member's data.
pub struct TarStream<R> {
    inner: R,
    /// Data bytes of the current member not read yet.
    left: u64,
    /// Padding after them.
    pad: u64,
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tar stream: {why}"))
}

/// A numeric header field: octal digits (space or NUL ended), or base-256 when its
/// first byte has the high bit set.
fn number(field: &[u8], what: &str) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad(format!("{what} is out of range")))?;
        }
        return Ok(v);
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if digits.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&digits).map_err(|_| bad(format!("{what} is not a number")))?;
    u64::from_str_radix(s, 8).map_err(|_| bad(format!("{what} {s:?} is not octal")))
}

fn field_str(f: &[u8]) -> &[u8] {
    &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
}

impl<R: Read> TarStream<R> {
    pub fn new(inner: R) -> TarStream<R> {
        TarStream {
            inner,
            left: 0,
            pad: 0,
        }
    }

    /// Skips what is left of the current member and reads the next header; `None` at
    /// the end of the archive (a zero block).
    pub fn next_member(&mut self) -> io::Result<Option<Member>> {
        let rest = self.left + self.pad;
        let skipped = io::copy(&mut (&mut self.inner).take(rest), &mut io::sink())?;
        if skipped != rest {
            return Err(bad("the archive ends inside a member".into()));
        }
        let mut h = [0u8; BLOCK];
        self.inner
            .read_exact(&mut h)
            .map_err(|_| bad("the archive ends without its end marker".into()))?;
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let stored = number(&h[148..156], "header checksum")?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        let name_field = field_str(&h[..100]);
        let shown = || String::from_utf8_lossy(name_field).into_owned();
        if sum != stored {
            return Err(bad(format!(
                "the header of {:?} fails its checksum",
                shown()
            )));
        }
        let mut name = Vec::new();
        if &h[257..262] == b"ustar" {
            let prefix = field_str(&h[345..500]);
            if !prefix.is_empty() {
                name.extend_from_slice(prefix);
                name.push(b'/');
            }
        }
        name.extend_from_slice(name_field);
        let kind = match h[156] {
            b'0' | 0 => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            t => {
                return Err(bad(format!(
                    "member {:?} has type {:?}, which pg_basebackup does not write",
                    shown(),
                    char::from(t)
                )))
            }
        };
        let size = number(&h[124..136], "size")?;
        let member = Member {
            name,
            kind,
            mode: u32::try_from(number(&h[100..108], "mode")? & 0o7777).expect("12 bits"),
            size: if kind == Kind::File { size } else { 0 },
            mtime: i64::try_from(number(&h[136..148], "mtime")?).unwrap_or(0),
        };
        self.left = member.size;
        self.pad = (BLOCK as u64 - member.size % BLOCK as u64) % BLOCK as u64;
        Ok(Some(member))
    }
}

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(bad("the archive ends inside a member".into()));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_size(0);
        dir.set_mtime(1_700_000_000);
        b.append_data(&mut dir, "base/1", io::empty()).unwrap();
        for (name, len) in [("base/1/1259", 8192 * 3 + 5), ("PG_VERSION", 3)] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o600);
            h.set_size(len);
            h.set_mtime(1_700_000_001);
            let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 7).unwrap()).collect();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn members_and_their_data_read_in_order() {
        let bytes = archive();
        let mut t = TarStream::new(&bytes[..]);
        let d = t.next_member().unwrap().unwrap();
        assert_eq!(
            (d.name.as_slice(), d.kind, d.mode),
            (&b"base/1"[..], Kind::Dir, 0o700)
        );
        let f = t.next_member().unwrap().unwrap();
        assert_eq!(
            (f.name.as_slice(), f.size, f.mtime),
            (&b"base/1/1259"[..], 24581, 1_700_000_001)
        );
        let mut data = Vec::new();
        t.read_to_end(&mut data).unwrap();
        assert_eq!(data.len(), 24581);
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i % 7));
        // The next member is found without reading the data of the one before.
        let v = t.next_member().unwrap().unwrap();
        assert_eq!(v.name, b"PG_VERSION");
        assert_eq!(t.next_member().unwrap(), None);
    }

    #[test]
    fn damage_and_truncation_are_errors() {
        let mut bytes = archive();
        bytes[5] ^= 1;
        let e = TarStream::new(&bytes[..]).next_member().unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let bytes = archive();
        let mut t = TarStream::new(&bytes[..1024 + 600]);
        t.next_member().unwrap();
        t.next_member().unwrap();
        let mut sink = Vec::new();
        assert!(
            t.read_to_end(&mut sink).is_err(),
            "a cut member reads as an error"
        );
        assert!(TarStream::new(&bytes[..512])
            .next_member()
            .unwrap()
            .is_some());
        let mut t = TarStream::new(&bytes[..512]);
        t.next_member().unwrap();
        assert!(t.next_member().is_err(), "no end marker");
    }

    #[test]
    fn base_256_sizes() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 1;
        f[10] = 2;
        assert_eq!(number(&f, "size").unwrap(), 513);
        assert_eq!(number(b"00000001000\0", "size").unwrap(), 512);
    }
}
