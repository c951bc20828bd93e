//! Content-defined chunking (FastCDC 2020, normalization level 1, the `fastcdc` crate's
//! cut with a [`Gear`] table: the crate's public one, or one keyed by an encrypted
//! repository's master key) over a bounded, refillable window.
//!
//! Invariant: the cut points of a stream do not depend on how it arrives (read sizes,
//! window size): a chunk is emitted only once at least `max` bytes follow its start or
//! the stream has ended, so every cut is the one FastCDC makes on the whole stream.
//! Memory is the window, never the stream.
//!
//! Given the chunks of the stream's previous version ([`Hints`]), unchanged stretches
//! are cut by hashing alone, to the same cut points.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, Normalization, MASKS};
use serde::{Deserialize, Serialize};

use crate::format::id::DataId;

mod hints;

pub use hints::{HashFn, Hints, LenFn, Source as HintSource};

/// Chunk size bounds of one profile, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    /// No chunk is shorter, except the last of a stream.
    pub min: u32,
    /// The size FastCDC aims for (a power of two).
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
}

impl ChunkParams {
    /// Profile for files: large chunks keep the index small for bulk data.
    pub const FILES: ChunkParams = ChunkParams {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };
    /// Profile for database dumps and other streams: small chunks dedup scattered edits
    /// (see `dump-dedup.md`: new bytes grow with edit sites times the chunk size).
    /// 16 KiB measured best on a week of pgbench dumps (`benches/pg_dedup.sh`): 8 KiB
    /// saved little more and doubled the index, 32 and 64 KiB stored 25-80 % more a day.
    pub const DUMP: ChunkParams = ChunkParams {
        min: 4 * 1024,
        avg: 16 * 1024,
        max: 64 * 1024,
    };
    /// Chunks of a PostgreSQL data directory (`backup --pg-base`): fixed 16 KiB pieces
    /// (`min = avg = max`, so FastCDC cuts at every 16 KiB), two pages each of the
    /// 8 KiB-page relation files, aligned to them: a changed page costs 16 KiB, and an
    /// unchanged pair always dedups. zstd 3 on pgbench's accounts file: 6.01 % of raw
    /// in 8 KiB pieces, 4.66 % in 16, 3.55 % in 64; measured against 64 KiB
    /// content-defined chunks (`benches/results/pitr-20261204.md`), nightly base
    /// backups store 0.86-0.91x as much and the first 1.42x. Fixed, not configured: how
    /// chunks were cut never matters to a reader.
    pub const PG_DATA: ChunkParams = ChunkParams {
        min: 16 * 1024,
        avg: 16 * 1024,
        max: 16 * 1024,
    };
    /// Largest `max` a repository may configure; also caps every blob read from disk.
    pub const MAX_CHUNK: u32 = 16 * 1024 * 1024;

    /// Checks the bounds FastCDC accepts, so that a bad config is an error, not a panic.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min >= fastcdc::v2020::MINIMUM_MIN
            && self.min <= fastcdc::v2020::MINIMUM_MAX
            && self.avg >= fastcdc::v2020::AVERAGE_MIN
            && self.avg <= fastcdc::v2020::AVERAGE_MAX
            && self.avg.is_power_of_two()
            && self.max >= fastcdc::v2020::MAXIMUM_MIN
            && self.max <= Self::MAX_CHUNK
            && self.min < self.avg
            && self.avg < self.max;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes min {} avg {} max {} are out of range (need 64 <= min < avg < max <= 16 MiB, avg a power of two)",
                self.min, self.avg, self.max
            ))
        }
    }

    /// The window a stream chunker needs: room for two maximal chunks, at least 8 MiB
    /// so that one refill feeds every core.
    pub fn window(&self) -> usize {
        (2 * self.max as usize).max(8 << 20)
    }
}

/// The table FastCDC's gear hash adds for each byte, with its twin shifted left one
/// bit (FastCDC 2020 rolls two bytes per step). Cut points follow the table: with the
/// public one anybody holding a file can compute its chunk lengths; with a keyed one
/// only holders of the key can.
pub struct Gear {
    gear: Box<[u64; 256]>,
    shifted: Box<[u64; 256]>,
}

impl Gear {
    /// The `fastcdc` crate's standard table (no seed): unencrypted and version 2
    /// repositories.
    pub fn public() -> Gear {
        let (gear, shifted) = get_gear_with_seed(0);
        Gear { gear, shifted }
    }

    /// The table keyed by `key` (version 3): entry `i` is the little-endian `u64` at
    /// bytes `8i..8i+8` of the BLAKE3 XOF of the empty input keyed with `key`. Not the
    /// crate's seed, which XORs one public `u64` into the public table (see
    /// format-spec, Chunking).
    pub fn keyed(key: &[u8; 32]) -> Gear {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .finalize_xof()
            .fill(&mut bytes);
        let gear: Box<[u64; 256]> = Box::new(std::array::from_fn(|i| {
            u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        }));
        let shifted = Box::new(gear.map(|g| g << 1));
        Gear { gear, shifted }
    }
}

/// FastCDC 2020 at normalization level 1 with one profile's sizes and a gear table,
/// as `fastcdc::v2020::FastCDC` computes its masks.
#[derive(Clone, Copy)]
pub(crate) struct Cdc<'g> {
    p: ChunkParams,
    gear: &'g Gear,
    mask_s: u64,
    mask_l: u64,
}

impl<'g> Cdc<'g> {
    /// `p` must have passed [`ChunkParams::validate`].
    fn new(p: ChunkParams, gear: &'g Gear) -> Self {
        let bits = logarithm2(p.avg);
        let level = Normalization::Level1.bits();
        Cdc {
            p,
            gear,
            mask_s: MASKS[(bits + level) as usize],
            mask_l: MASKS[(bits - level) as usize],
        }
    }

    /// The end of the chunk of `data` that starts at `pos`.
    fn cut(&self, data: &[u8], pos: usize) -> usize {
        let (_, len) = cut_gear(
            &data[pos..],
            self.p.min as usize,
            self.p.avg as usize,
            self.p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear.gear,
            &self.gear.shifted,
        );
        pos + len
    }
}

/// Which chunk sizes a source uses; a repository configures both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Large chunks, for file trees.
    Files,
    /// Small chunks, for database dumps and other streams.
    Dump,
}

/// The chunk parameters of each profile, as the repository config records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profiles {
    /// For [`Profile::Files`].
    pub files: ChunkParams,
    /// For [`Profile::Dump`].
    pub dump: ChunkParams,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles {
            files: ChunkParams::FILES,
            dump: ChunkParams::DUMP,
        }
    }
}

impl Profiles {
    /// The parameters of `p`.
    pub fn get(&self, p: Profile) -> ChunkParams {
        match p {
            Profile::Files => self.files,
            Profile::Dump => self.dump,
        }
    }
}

/// Splits a byte stream into chunks, one window at a time. While a window is cut, the
/// next one is read (into a buffer with room in front for the window's tail), so that
/// reading overlaps cutting and hashing.
pub struct StreamChunker<'h> {
    cdc: Cdc<'h>,
    window: usize,
    /// Room in front of a buffer, where the previous window's tail goes: under `max`
    /// bytes when reading ahead, else none (the tail starts the buffer, and the window
    /// is read after it).
    head: usize,
    size_hint: Option<u64>,
    /// The bytes not yet handed out: `buf[start..end]`; the stream ends after them when
    /// `eof`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    primed: bool,
    spare: Option<Vec<u8>>,
    hints: Option<Hints<'h>>,
}

/// What the chunker learnt of a chunk while cutting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Nothing: its id is still to be computed.
    Nothing,
    /// Its id, computed to compare it with the previous version's chunks.
    Id(DataId),
    /// Its id, that of a previous chunk the repository holds (see [`Hints::new`]).
    Stored(DataId),
}

/// The chunks found in one window: `data[cut]` for each cut, in stream order. The
/// batch owns its bytes, so the next window can be chunked while this one is processed;
/// give `data` back with [`StreamChunker::recycle`] to reuse its allocation.
pub struct Batch {
    /// The buffer holding the window; only the bytes under `cuts` are the stream's.
    pub data: Vec<u8>,
    /// Chunk ranges within `data`, adjacent.
    pub cuts: Vec<Range<usize>>,
    /// What is known of each chunk, in the order of `cuts`.
    pub known: Vec<Known>,
}

impl Batch {
    /// The stream bytes in this batch.
    pub fn bytes(&self) -> usize {
        match (self.cuts.first(), self.cuts.last()) {
            (Some(a), Some(b)) => b.end - a.start,
            _ => 0,
        }
    }
}

impl<'h> StreamChunker<'h> {
    /// A chunker cutting with `gear` whose first buffer fits `size_hint` bytes (grown to
    /// the full window when the stream turns out longer). `params` must have passed
    /// [`ChunkParams::validate`].
    pub fn new(params: ChunkParams, gear: &'h Gear, size_hint: Option<u64>) -> Self {
        StreamChunker {
            cdc: Cdc::new(params, gear),
            window: params.window(),
            head: 0,
            size_hint,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            primed: false,
            spare: None,
            hints: None,
        }
    }

    /// Cuts against a previous version of the stream (same cut points, less work
    /// where it did not change).
    pub fn with_hints(mut self, hints: Hints<'h>) -> Self {
        self.hints = Some(hints);
        self.head = self.cdc.p.max as usize;
        self
    }

    /// Reads the first window, sized by the hint (a whole small file in one buffer).
    fn prime<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<()> {
        let first = match self.size_hint {
            Some(n) => usize::try_from(n.saturating_add(1))
                .unwrap_or(self.window)
                .min(self.window),
            None => self.window,
        };
        self.buf = vec![0; first.max(1)];
        loop {
            self.read(r)?;
            if self.eof || self.buf.len() >= self.window {
                return Ok(());
            }
            self.buf.resize(self.window, 0);
        }
    }

    /// Reads into the buffer after `end` until it is full or the stream ends.
    fn read<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<()> {
        let (n, eof) = fill(r, &mut self.buf[self.end..])?;
        self.end += n;
        self.eof = eof;
        Ok(())
    }

    /// Returns the next chunks whose bounds are final, or `None` once the stream is
    /// exhausted; meanwhile reads the window after them. A returned batch holds at
    /// least one chunk.
    pub fn next_batch<R: Read + Send + ?Sized>(&mut self, r: &mut R) -> io::Result<Option<Batch>> {
        if !self.primed {
            self.primed = true;
            self.prime(r)?;
        } else if !self.eof && self.end < self.buf.len() {
            // Not read ahead: this window is read now.
            self.read(r)?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let (head, eof, cdc, base) = (self.head, self.eof, self.cdc, self.start);
        let mut next = match self.spare.take() {
            _ if eof => None,
            Some(b) if b.len() == head + self.window => Some(b),
            _ => Some(vec![0; head + self.window]),
        };
        // Reading ahead pays where cutting is mere hashing (with hints); without them
        // the window's read already overlaps the previous batch's hashing and
        // compression, and reading ahead would only hold one more window per stream.
        let data = &self.buf[self.start..self.end];
        let hints = &mut self.hints;
        let ((n, next_eof), (cuts, known)) = match next.as_mut() {
            Some(b) if head > 0 => {
                let (read, cut) =
                    rayon::join(|| fill(r, &mut b[head..]), || cut(hints, data, eof, cdc));
                (read?, cut)
            }
            _ => ((0, eof), cut(hints, data, eof, cdc)),
        };
        let emitted = cuts.last().map_or(0, |c| c.end);
        let tail = self.start + emitted..self.end;
        let old = if let Some(mut b) = next {
            // Reading ahead, the tail fills the room in front of what was read
            // (under `max` bytes: every chunk starting before it was final); else
            // it starts the buffer.
            debug_assert!(head == 0 || tail.len() <= head, "the tail fits the room");
            let at = head.saturating_sub(tail.len());
            let len = tail.len();
            b[at..at + len].copy_from_slice(&self.buf[tail]);
            self.start = at;
            self.end = at + len + n;
            self.eof = next_eof;
            std::mem::replace(&mut self.buf, b)
        } else {
            self.start = 0;
            self.end = 0;
            std::mem::take(&mut self.buf)
        };
        let cuts = cuts
            .into_iter()
            .map(|c| base + c.start..base + c.end)
            .collect();
        Ok(Some(Batch {
            data: old,
            cuts,
            known,
        }))
    }

    /// Takes back a batch's buffer for reuse.
    pub fn recycle(&mut self, data: Vec<u8>) {
        if data.len() == self.head + self.window {
            self.spare = Some(data);
        }
    }
}

/// Reads into `buf` until it is full or the stream ends: (bytes read, ended).
fn fill<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, false))
}

/// The final chunks of a window, with what is known of each.
fn cut(
    hints: &mut Option<Hints<'_>>,
    data: &[u8],
    eof: bool,
    cdc: Cdc<'_>,
) -> (Vec<Range<usize>>, Vec<Known>) {
    if let Some(h) = hints {
        return h.cut(data, eof, cdc);
    }
    let cuts = final_cuts(data, eof, cdc);
    let known = vec![Known::Nothing; cuts.len()];
    (cuts, known)
}

/// The chunks of `data` (starting at a cut point) that its end cannot have decided:
/// those with `max` bytes of `data` after their start, or all when `data` ends the
/// stream. These are FastCDC's cuts on the whole stream.
fn final_cuts(data: &[u8], ends_stream: bool, cdc: Cdc<'_>) -> Vec<Range<usize>> {
    let mut cuts = find_cuts(data, cdc);
    if !ends_stream {
        let max = cdc.p.max as usize;
        let keep = cuts.partition_point(|c| data.len() - c.start >= max);
        cuts.truncate(keep);
    }
    cuts
}

/// Below this many bytes a window is chunked on one thread.
const SPLIT_MIN: usize = 2 << 20;

/// The chunks of `data`, exactly as one FastCDC pass from its start finds them, on
/// two threads: while one pass runs over the first half, a second one starts at the
/// middle as if a chunk began there. A cut depends only on the bytes after the one
/// before it, so once the first pass, continued past the middle, lands on the start
/// of a chunk of the second, the two agree from there on (usually within a few
/// chunks; on data where they never meet, the first pass simply runs to the end).
fn find_cuts(data: &[u8], cdc: Cdc<'_>) -> Vec<Range<usize>> {
    let run = |mut pos: usize, until: usize| {
        let mut cuts = Vec::with_capacity((until - pos) / cdc.p.avg as usize + 1);
        while pos < until {
            let end = cdc.cut(data, pos);
            cuts.push(pos..end);
            pos = end;
        }
        cuts
    };
    if data.len() < SPLIT_MIN {
        return run(0, data.len());
    }
    let mid = data.len() / 2;
    let (mut cuts, ahead) = rayon::join(|| run(0, mid), || run(mid, data.len()));
    let mut pos = cuts.last().map_or(0, |c| c.end);
    while pos < data.len() {
        if let Ok(i) = ahead.binary_search_by_key(&pos, |c| c.start) {
            cuts.extend_from_slice(&ahead[i..]);
            break;
        }
        let end = cdc.cut(data, pos);
        cuts.push(pos..end);
        pos = end;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::format::id::Id;

    fn data_id(b: &[u8]) -> DataId {
        DataId(Id::hash(b))
    }

    /// Deterministic test data: splitmix64 output, with runs of text-like bytes so that
    /// both the small- and the large-mask phases of FastCDC are exercised.
    fn seeded(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Reads in awkward sizes to show cut points do not depend on read boundaries.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = (self.1 * 7 + 3) % 70_001 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn stream_cuts(
        data: &[u8],
        params: ChunkParams,
        gear: &Gear,
        hint: Option<u64>,
    ) -> Vec<(usize, usize)> {
        let mut ch = StreamChunker::new(params, gear, hint);
        let mut r = Dribble(data, 0);
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(b) = ch.next_batch(&mut r).unwrap() {
            assert!(!b.cuts.is_empty());
            let first = b.cuts[0].start;
            for c in &b.cuts {
                out.push((pos + c.start - first, c.len()));
            }
            pos += b.bytes();
            ch.recycle(b.data);
        }
        out
    }

    /// The `fastcdc` crate's own FastCDC over the whole input: the public table.
    fn crate_cuts(data: &[u8], p: ChunkParams) -> Vec<(usize, usize)> {
        fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max)
            .map(|c| (c.offset, c.length))
            .collect()
    }

    /// One pass over the whole input with `gear`: the reference the windowed, split and
    /// hinted paths must match.
    fn whole_cuts(data: &[u8], p: ChunkParams, gear: &Gear) -> Vec<(usize, usize)> {
        let cdc = Cdc::new(p, gear);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let end = cdc.cut(data, pos);
            out.push((pos, end - pos));
            pos = end;
        }
        out
    }

    /// Both kinds of table: the public one and a keyed one.
    fn gears() -> [Gear; 2] {
        [Gear::public(), Gear::keyed(&[7; 32])]
    }

    /// Data files of a base backup: every chunk two whole 8 KiB pages, whatever the
    /// bytes and the table, but a shorter last one.
    #[test]
    fn pg_data_chunks_are_page_pairs() {
        let data = seeded(5 * 16384 + 8192 + 100, 29);
        for gear in gears() {
            let cuts = whole_cuts(&data, ChunkParams::PG_DATA, &gear);
            let (last, whole) = cuts.split_last().unwrap();
            assert!(
                whole.iter().all(|&(o, l)| l == 16384 && o % 8192 == 0),
                "{cuts:?}"
            );
            assert_eq!(*last, (5 * 16384, 8192 + 100));
        }
    }

    #[test]
    fn the_public_table_cuts_as_the_crate_does() {
        let data = seeded(8 << 20, 13);
        for p in [ChunkParams::DUMP, ChunkParams::FILES, TINY] {
            assert_eq!(whole_cuts(&data, p, &Gear::public()), crate_cuts(&data, p));
        }
    }

    #[test]
    fn stream_matches_whole_input_reference() {
        let data = seeded(40 << 20, 7);
        for gear in &gears() {
            for p in [ChunkParams::DUMP, ChunkParams::FILES] {
                let want = whole_cuts(&data, p, gear);
                assert_eq!(stream_cuts(&data, p, gear, None), want);
                assert_eq!(
                    stream_cuts(&data, p, gear, Some(1000)),
                    want,
                    "small first buffer"
                );
            }
        }
    }

    #[test]
    fn split_chunking_matches_one_pass() {
        let mut mixed = seeded(6 << 20, 3);
        mixed[1 << 20..4 << 20].fill(0);
        let text: Vec<u8> = seeded(5 << 20, 9)
            .iter()
            .map(|b| b"abcdefgh ,\n"[(*b % 11) as usize])
            .collect();
        for data in [seeded(9 << 20, 5), mixed, text, vec![0u8; 3 << 20]] {
            for gear in &gears() {
                for p in [ChunkParams::DUMP, ChunkParams::FILES] {
                    let got: Vec<(usize, usize)> = find_cuts(&data, Cdc::new(p, gear))
                        .iter()
                        .map(|c| (c.start, c.len()))
                        .collect();
                    assert_eq!(got, whole_cuts(&data, p, gear));
                }
            }
        }
    }

    /// Cuts `data` against `base`'s chunks, reading in awkward sizes; each chunk with
    /// what the chunker knew of it.
    fn hinted_cuts(
        data: &[u8],
        base: &[u8],
        p: ChunkParams,
        gear: &Gear,
    ) -> Vec<(usize, usize, Known)> {
        hinted_cuts_from(data, base, p, p, gear)
    }

    /// Like `hinted_cuts`, with `base` cut by `base_p`.
    fn hinted_cuts_from(
        data: &[u8],
        base: &[u8],
        p: ChunkParams,
        base_p: ChunkParams,
        gear: &Gear,
    ) -> Vec<(usize, usize, Known)> {
        let prev: HashMap<DataId, u32> = whole_cuts(base, base_p, gear)
            .into_iter()
            .map(|(o, l)| (data_id(&base[o..o + l]), u32::try_from(l).unwrap()))
            .collect();
        let mut ids = whole_cuts(base, base_p, gear)
            .into_iter()
            .map(|(o, l)| data_id(&base[o..o + l]));
        let source: HintSource = Box::new(move || ids.next());
        let len: LenFn = Box::new(move |id| prev.get(id).copied());
        let hints = Hints::new(source, len, Box::new(data_id));
        let mut ch = StreamChunker::new(p, gear, None).with_hints(hints);
        let mut r = Dribble(data, 0);
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(b) = ch.next_batch(&mut r).unwrap() {
            assert_eq!(b.cuts.len(), b.known.len());
            let first = b.cuts[0].start;
            for (c, k) in b.cuts.iter().zip(&b.known) {
                if let Known::Id(id) | Known::Stored(id) = k {
                    assert_eq!(
                        *id,
                        data_id(&b.data[c.clone()]),
                        "a known id is the chunk's"
                    );
                }
                out.push((pos + c.start - first, c.len(), *k));
            }
            pos += b.bytes();
            ch.recycle(b.data);
        }
        out
    }

    /// Small chunks, so that the tests cross [`hints::AHEAD`] previous chunks.
    const TINY: ChunkParams = ChunkParams {
        min: 256,
        avg: 1024,
        max: 4096,
    };

    #[test]
    fn hints_give_the_cut_points_of_one_pass() {
        let text: Vec<u8> = seeded(3 << 20, 11)
            .iter()
            .map(|b| b"abcdefgh ,\n"[(*b % 11) as usize])
            .collect();
        let mut zeros_inside = seeded(3 << 20, 12);
        zeros_inside[1 << 20..(1 << 20) + 300_000].fill(0);
        for base in [text, zeros_inside] {
            let n = base.len();
            let splice = |at: usize, del: usize, ins: &[u8]| {
                let mut v = base[..at].to_vec();
                v.extend_from_slice(ins);
                v.extend_from_slice(&base[at + del..]);
                v
            };
            let mut flipped = base.clone();
            for at in [10, n / 3, n / 2 + 7, n - 5] {
                flipped[at] ^= 0x55;
            }
            let mut moved = base[n / 4..].to_vec();
            moved.extend_from_slice(&base[..n / 4]);
            let edits: Vec<(&str, Vec<u8>)> = vec![
                ("same", base.clone()),
                ("bytes flipped", flipped),
                ("inserted", splice(n / 2, 0, &seeded(777, 1))),
                ("deleted", splice(n / 3, 50_000, b"")),
                ("deleted past the look-ahead", splice(1000, 2 << 20, b"x")),
                ("prepended", splice(0, 0, b"header\n")),
                ("appended", [&base[..], b"tail"].concat()),
                ("truncated", base[..n - 3000].to_vec()),
                ("head moved to the end", moved),
                ("other data", seeded(n, 99)),
                ("empty", Vec::new()),
                ("short", base[..3000].to_vec()),
            ];
            for (p, gear) in [ChunkParams::DUMP, TINY]
                .into_iter()
                .flat_map(|p| gears().map(|g| (p, g)))
            {
                let gear = &gear;
                for (what, data) in &edits {
                    let got = hinted_cuts(data, &base, p, gear);
                    let cuts: Vec<(usize, usize)> = got.iter().map(|c| (c.0, c.1)).collect();
                    assert_eq!(cuts, whole_cuts(data, p, gear), "{what}, {p:?}");
                    let stored = got
                        .iter()
                        .filter(|c| matches!(c.2, Known::Stored(_)))
                        .count();
                    if *what == "same" || *what == "bytes flipped" {
                        // All but the chunks near a change or the end come from hints.
                        assert!(
                            stored * 100 >= got.len() * 85,
                            "{what}, {p:?}: {stored} of {}",
                            got.len()
                        );
                    }
                    if *what == "other data" || *what == "empty" {
                        assert_eq!(stored, 0, "{what}");
                    }
                }
                // Hints from an empty or short previous version offer nothing.
                for prev in [&b""[..], &base[..3000]] {
                    let cuts: Vec<(usize, usize)> = hinted_cuts(&base, prev, p, gear)
                        .iter()
                        .map(|c| (c.0, c.1))
                        .collect();
                    assert_eq!(cuts, whole_cuts(&base, p, gear));
                }
            }
            // A previous version cut with other parameters has chunk lengths the
            // current ones never cut: no offer is taken.
            let public = Gear::public();
            let got =
                hinted_cuts_from(&base, &base, ChunkParams::DUMP, ChunkParams::FILES, &public);
            let cuts: Vec<(usize, usize)> = got.iter().map(|c| (c.0, c.1)).collect();
            assert_eq!(cuts, whole_cuts(&base, ChunkParams::DUMP, &public));
            assert!(got.iter().all(|c| !matches!(c.2, Known::Stored(_))));
        }
    }

    #[test]
    fn empty_and_tiny_streams() {
        let gear = Gear::public();
        assert!(stream_cuts(&[], ChunkParams::DUMP, &gear, Some(0)).is_empty());
        assert_eq!(
            stream_cuts(b"abc", ChunkParams::DUMP, &gear, Some(3)),
            vec![(0, 3)]
        );
        let zeros = vec![0u8; 1 << 20];
        let cuts = stream_cuts(&zeros, ChunkParams::DUMP, &gear, None);
        assert!(cuts.iter().all(|c| c.1 == ChunkParams::DUMP.max as usize));
    }

    /// The first twelve `dump` chunk lengths of the golden data (format-spec, Chunking)
    /// cut with `gear`.
    fn golden_lengths(gear: &Gear) -> Vec<usize> {
        let data = seeded(1 << 20, 42);
        let cuts = stream_cuts(&data, ChunkParams::DUMP, gear, None);
        cuts.iter().map(|c| c.1).take(12).collect()
    }

    /// Golden boundaries: a change here changes every chunk id of every repository, so
    /// it is a format break, not a refactoring.
    #[test]
    fn golden_boundaries() {
        let public = Gear::public();
        assert_eq!(golden_lengths(&public), GOLDEN_DUMP);
        let data = seeded(1 << 20, 42);
        let text: Vec<u8> = data
            .iter()
            .map(|b| b"abcdefgh ,\n"[(*b % 11) as usize])
            .collect();
        let first = stream_cuts(&text, ChunkParams::DUMP, &public, None);
        let ids: Vec<String> = first
            .iter()
            .take(3)
            .map(|c| crate::format::id::Id::hash(&text[c.0..c.0 + c.1]).short())
            .collect();
        assert_eq!(ids, GOLDEN_TEXT_IDS);
    }
    const GOLDEN_DUMP: [usize; 12] = [
        6146, 22708, 17021, 21285, 30548, 8886, 18530, 10976, 19529, 17571, 8602, 14871,
    ];
    const GOLDEN_TEXT_IDS: [&str; 3] = ["739fb0d5", "ecc38de3", "13025580"];

    /// Golden keyed table (format version 3): `K_chunk` of the master key whose 64
    /// bytes are 0, 1, ..., 63 (see `crypto::tests`), the table's first and last
    /// entries, and the first `dump` chunk lengths of the golden data.
    #[test]
    fn golden_keyed_boundaries() {
        let key: [u8; 32] = hex::decode(GOLDEN_K_CHUNK).unwrap().try_into().unwrap();
        let gear = Gear::keyed(&key);
        assert_eq!(
            [gear.gear[0], gear.gear[255]].map(|g| format!("{g:016x}")),
            GOLDEN_GEAR_ENDS
        );
        assert_eq!(gear.shifted[255], gear.gear[255] << 1);
        assert_eq!(golden_lengths(&gear), GOLDEN_KEYED_DUMP);
    }
    const GOLDEN_K_CHUNK: &str = "736392d9c5e9946150d23f95e1ecaf7ddd1479b2f9f9f5eef42560c595adf54c";
    const GOLDEN_GEAR_ENDS: [&str; 2] = ["0cbd24f42a68e4c2", "bd23a075aa96d62f"];
    const GOLDEN_KEYED_DUMP: [usize; 12] = [
        20850, 22132, 34098, 33162, 11532, 12570, 27847, 21499, 8152, 18679, 15601, 21546,
    ];

    /// What an attacker holding the data computes with the public table (or with
    /// another repository's key) shares almost no chunk with what is stored.
    #[test]
    fn keyed_cut_points_are_unrelated_to_public_and_other_keys() {
        let data = seeded(8 << 20, 21);
        let p = ChunkParams::DUMP;
        let ends = |gear: &Gear| -> HashSet<usize> {
            whole_cuts(&data, p, gear)
                .iter()
                .map(|c| c.0 + c.1)
                .collect()
        };
        let public = ends(&Gear::public());
        let mine = ends(&Gear::keyed(&[1; 32]));
        let other = ends(&Gear::keyed(&[2; 32]));
        for (what, theirs) in [("public", &public), ("another key's", &other)] {
            let shared = mine.intersection(theirs).count();
            assert!(
                shared * 50 < mine.len(),
                "{shared} of {} cut points also in the {what} table's",
                mine.len()
            );
        }
        assert_eq!(mine, ends(&Gear::keyed(&[1; 32])), "one key, one table");
    }

    #[test]
    fn validate_rejects_bad_params() {
        assert!(ChunkParams::FILES.validate().is_ok());
        assert!(ChunkParams::DUMP.validate().is_ok());
        let bad = ChunkParams {
            min: 10,
            avg: 100,
            max: 50,
        };
        assert!(bad.validate().is_err());
        let huge = ChunkParams {
            min: 1 << 20,
            avg: 1 << 22,
            max: 1 << 26,
        };
        assert!(huge.validate().is_err());
    }
}
