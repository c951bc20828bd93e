//! Cutting a stream against its previous version: where the bytes did not change, the
//! previous chunks are taken after hashing alone, without FastCDC's gear scan.
//!
//! Exact: a cut depends only on the bytes after the cut before it, at most `max` of
//! them, so a chunk that starts at a cut point and holds the bytes of a previous chunk
//! ends where FastCDC ends it, provided that chunk was cut with the same parameters
//! and gear table (a repository has one) and with `max` bytes of its stream ahead of
//! it (not short of them by the stream's end; the same holds in the new stream).
//! Each offered chunk is therefore hashed where it would start and taken only if its
//! id matches. After a miss FastCDC runs from there over a stretch (on both cores,
//! hashed on both), and if the stretch's last chunk is among the previous chunks read
//! ahead, offers resume after that one. The stretch doubles while the versions keep
//! differing, so a stream that changed all over costs about what it costs without
//! hints.
//!
//! Memory is bounded: the ids of [`AHEAD`] previous chunks are held, read from the
//! source as the new stream advances; data moved further than that is simply cut by
//! FastCDC. A previous chunk's length is looked up only when it is offered (or counted
//! towards the `max` bytes an offered one needs after its start), so a stream that
//! changed all over costs no lookups.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use rayon::prelude::*;

use super::{final_cuts, Cdc, ChunkParams, Known};
use crate::format::id::DataId;

/// Previous chunks held ahead of the position, to find where two versions agree again.
pub const AHEAD: usize = 4096;
/// Offers hashed at once after the versions start to agree; doubled after each batch
/// that matched whole, up to [`SPEC_MAX`]. A miss wastes at most this many hashes.
const SPEC_MIN: usize = 2;
const SPEC_MAX: usize = 1024;
/// The first stretch cut by FastCDC after a miss, in average chunks; the longest, in
/// bytes.
const STRETCH_MIN: usize = 4;
const STRETCH_MAX: usize = 8 << 20;

/// Where a chunk's id comes from: the repository's blob id of its bytes.
pub type HashFn<'a> = Box<dyn Fn(&[u8]) -> DataId + Send + Sync + 'a>;

/// The id of the next previous chunk, or `None` when there are no more.
pub type Source<'a> = Box<dyn FnMut() -> Option<DataId> + Send + 'a>;

/// A previous chunk's length, if the repository holds it as a data chunk.
pub type LenFn<'a> = Box<dyn Fn(&DataId) -> Option<u32> + Send + 'a>;

/// The chunks of a stream's previous version, offered to the chunker in order.
pub struct Hints<'a> {
    source: Source<'a>,
    len: LenFn<'a>,
    hash: HashFn<'a>,
    /// No more ids to read (or none to trust: see [`Hints::give_up`]).
    exhausted: bool,
    /// Previous chunks read and not yet passed, with their lengths once looked up;
    /// `ahead[0]` is number `first`.
    ahead: VecDeque<(DataId, Option<u32>)>,
    first: u64,
    /// The number of each id held in `ahead` (its first occurrence).
    by_id: HashMap<DataId, u64>,
    /// The previous chunk that would start at the current position, while the two
    /// versions agree.
    at: Option<u64>,
    spec: usize,
    /// Bytes of the next stretch cut by FastCDC (0: not started).
    stretch: usize,
}

impl<'a> Hints<'a> {
    /// Hints from a previous version whose chunk ids `source` yields in order, cut with
    /// the parameters the new stream is cut with. `len` gives a chunk's length if the
    /// repository holds it: an offered chunk whose id matches is handed out as
    /// [`Known::Stored`]. `hash` gives a chunk's id.
    pub fn new(source: Source<'a>, len: LenFn<'a>, hash: HashFn<'a>) -> Self {
        Hints {
            source,
            len,
            hash,
            exhausted: false,
            ahead: VecDeque::new(),
            first: 0,
            by_id: HashMap::new(),
            at: Some(0),
            spec: SPEC_MIN,
            stretch: 0,
        }
    }

    /// Reads previous ids until more than `i` are held (at least [`AHEAD`]); whether
    /// number `first + i` is there.
    fn read_ids(&mut self, i: usize) -> bool {
        while self.ahead.len() <= i.max(AHEAD - 1) && !self.exhausted {
            match (self.source)() {
                Some(id) => {
                    let seq = self.first + self.ahead.len() as u64;
                    self.by_id.entry(id).or_insert(seq);
                    self.ahead.push_back((id, None));
                }
                None => self.exhausted = true,
            }
        }
        i < self.ahead.len()
    }

    /// The length of `ahead[i]`, looked up once.
    fn len_at(&mut self, i: usize) -> Option<u32> {
        let (id, len) = &mut self.ahead[i];
        if len.is_none() {
            *len = (self.len)(id);
        }
        *len
    }

    /// Stops offering: a previous chunk is missing, or of a length these parameters
    /// never cut (so not cut with them).
    fn give_up(&mut self) {
        self.exhausted = true;
        self.ahead.clear();
        self.by_id.clear();
        self.at = None;
    }

    /// `ahead[i]` with its length, if it may be offered: its length is one these
    /// parameters cut, and its stream went on for `max` bytes from its start (else its
    /// end may have been cut by the stream's end).
    fn offer(&mut self, i: usize, p: ChunkParams) -> Option<(DataId, u32)> {
        if !self.read_ids(i) {
            return None;
        }
        let Some(len) = self.len_at(i).filter(|l| (p.min..=p.max).contains(l)) else {
            self.give_up();
            return None;
        };
        let mut span = u64::from(len);
        let mut j = i + 1;
        while span < u64::from(p.max) {
            if !self.read_ids(j) {
                return None;
            }
            let Some(l) = self.len_at(j) else {
                self.give_up();
                return None;
            };
            span += u64::from(l);
            j += 1;
        }
        Some((self.ahead[i].0, len))
    }

    /// Passes the previous chunks before number `seq`; the next offer is `seq`.
    fn advance(&mut self, seq: u64) {
        while self.first < seq {
            let Some((id, _)) = self.ahead.pop_front() else {
                break;
            };
            if self.by_id.get(&id) == Some(&self.first) {
                self.by_id.remove(&id);
            }
            self.first += 1;
        }
        self.at = Some(seq);
    }

    /// A chunk FastCDC just ended: if it is a previous one, offers resume after it.
    fn resync(&mut self, id: &DataId) -> bool {
        let Some(&seq) = self.by_id.get(id) else {
            return false;
        };
        self.spec = SPEC_MIN;
        self.advance(seq + 1);
        true
    }

    /// The chunks of `data` (a window starting at a cut point) that are final: those
    /// with `max` bytes after their start, or all when `eof`. Returns their ranges and
    /// what is known of each; the same cut points as [`final_cuts`] gives.
    pub(super) fn cut(
        &mut self,
        data: &[u8],
        eof: bool,
        cdc: Cdc<'_>,
    ) -> (Vec<Range<usize>>, Vec<Known>) {
        let p = cdc.p;
        let max = p.max as usize;
        let room = |s: usize| data.len() - s >= max;
        let mut cuts = Vec::new();
        let mut known = Vec::new();
        let mut pos = 0;
        while pos < data.len() && (eof || room(pos)) {
            if self.at.is_some() && room(pos) {
                // Returns with `at` set only when no offer fits: then the loop ends,
                // or at the stream's end FastCDC cuts the rest.
                pos = self.take(data, pos, p, &mut cuts, &mut known);
                continue;
            }
            self.read_ids(0);
            if self.ahead.is_empty() && self.exhausted {
                // Nothing left to agree with: the rest as one pass cuts it.
                let rest = final_cuts(&data[pos..], eof, cdc);
                known.extend(std::iter::repeat_n(Known::Nothing, rest.len()));
                cuts.extend(rest.into_iter().map(|c| pos + c.start..pos + c.end));
                break;
            }
            pos = self.stretch(data, pos, eof, cdc, &mut cuts, &mut known);
        }
        (cuts, known)
    }

    /// Cuts a stretch from `pos` with FastCDC and hashes its chunks; returns the
    /// position after them. Only the stretch's final cuts are kept (see
    /// [`final_cuts`]); at least one is, since `pos` has room or the stream ends.
    fn stretch(
        &mut self,
        data: &[u8],
        pos: usize,
        eof: bool,
        cdc: Cdc<'_>,
        cuts: &mut Vec<Range<usize>>,
        known: &mut Vec<Known>,
    ) -> usize {
        let p = cdc.p;
        let len = if self.stretch == 0 {
            STRETCH_MIN * p.avg as usize
        } else {
            self.stretch
        };
        let end = data.len().min(pos + len + p.max as usize);
        let slice = &data[pos..end];
        let found = final_cuts(slice, eof && end == data.len(), cdc);
        let hash = &self.hash;
        let ids: Vec<DataId> = if found.len() > 2 {
            found.par_iter().map(|c| hash(&slice[c.clone()])).collect()
        } else {
            found.iter().map(|c| hash(&slice[c.clone()])).collect()
        };
        let next = pos + found.last().map_or(0, |c| c.end);
        cuts.extend(found.into_iter().map(|c| pos + c.start..pos + c.end));
        known.extend(ids.iter().map(|id| Known::Id(*id)));
        self.at = None;
        if !ids.last().is_some_and(|id| self.resync(id)) {
            self.stretch = (len * 2).min(STRETCH_MAX);
        }
        next
    }

    /// Takes the offered chunks that start at `pos` while their ids match; returns the
    /// position after them. `at` is left `None` on a miss or when nothing is left to
    /// offer, and `Some` when the window has no room for the next offer (chunks are
    /// offered only with `max` bytes of the window after their start).
    fn take(
        &mut self,
        data: &[u8],
        mut pos: usize,
        p: ChunkParams,
        cuts: &mut Vec<Range<usize>>,
        known: &mut Vec<Known>,
    ) -> usize {
        let max = p.max as usize;
        while let Some(at) = self.at {
            let skip = usize::try_from(at - self.first).expect("a window's chunks fit in memory");
            let mut offers: Vec<(Range<usize>, DataId)> = Vec::new();
            let mut s = pos;
            while offers.len() < self.spec && data.len() - s >= max {
                let Some((id, len)) = self.offer(skip + offers.len(), p) else {
                    break;
                };
                offers.push((s..s + len as usize, id));
                s += len as usize;
            }
            if offers.is_empty() {
                if data.len() - pos >= max {
                    // Nothing (more) to offer.
                    self.at = None;
                }
                break;
            }
            let hash = &self.hash;
            let matches = |(r, id): &(Range<usize>, DataId)| hash(&data[r.clone()]) == *id;
            let ok: Vec<bool> = if offers.len() > 2 {
                offers.par_iter().map(matches).collect()
            } else {
                offers.iter().map(matches).collect()
            };
            let n = ok.iter().take_while(|m| **m).count();
            for (r, id) in &offers[..n] {
                known.push(Known::Stored(*id));
                cuts.push(r.clone());
                pos = r.end;
            }
            self.advance(at + n as u64);
            if n < offers.len() {
                self.at = None;
                self.spec = SPEC_MIN;
            } else {
                self.spec = (self.spec * 2).min(SPEC_MAX);
                self.stretch = 0;
            }
        }
        pos
    }
}
