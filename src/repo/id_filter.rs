//! A Bloom filter of blob ids: "surely absent" without a B-tree walk.
//!
//! A backup looks up every new chunk's id before storing it, and a new chunk is, by
//! definition, in neither table of the index cache: each such lookup walks both B-trees
//! down to a leaf, and the trees (and the page reads of a walk) grow with the
//! repository's history. The filter answers most of those lookups from memory. It may
//! say "maybe" for an absent id (then the tables answer), never "no" for a present one,
//! as long as every id added to the cache is added to it (see `index.rs`).
//!
//! Blob ids are BLAKE3 outputs (keyed in an encrypted repository), uniform already, so
//! the filter's positions are taken from the id's bytes: the first two little-endian
//! `u64`s, `h1` and `h2 | 1`, give positions `h1 + i * h2` for `i` in `0..HASHES`,
//! modulo the number of bits (a power of two).

use crate::format::id::Id;

/// Bytes of one stored block of the filter's bits.
pub const BLOCK_BYTES: usize = 4096;
/// Bit positions per id.
const HASHES: u64 = 7;
/// A filter is made with 16 to 32 bits per id (at least [`MIN_BITS`]) and counts as
/// full, to be made again larger, past [`FULL_BITS_PER_ID`] bits per id: at 10 bits and
/// 7 positions an absent id passes about 1 % of the time.
const BUILD_BITS_PER_ID: u64 = 16;
const FULL_BITS_PER_ID: u64 = 10;
const MIN_BITS: u64 = 1 << 20;

/// The bits and the count of ids added (an id added twice counts twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdFilter {
    words: Vec<u64>,
    count: u64,
}

impl IdFilter {
    /// An empty filter with room for `n` ids.
    pub fn sized_for(n: u64) -> IdFilter {
        let bits = n
            .saturating_mul(BUILD_BITS_PER_ID)
            .max(MIN_BITS)
            .next_power_of_two();
        IdFilter {
            words: vec![0; (bits / 64) as usize],
            count: 0,
        }
    }

    /// The filter stored as `blocks` (each [`BLOCK_BYTES`], in order) with `count` ids
    /// added; `None` unless their number is a power of two and each is whole.
    pub fn from_blocks(blocks: &[Vec<u8>], count: u64) -> Option<IdFilter> {
        if !blocks.len().is_power_of_two() || blocks.iter().any(|b| b.len() != BLOCK_BYTES) {
            return None;
        }
        let words = blocks
            .iter()
            .flat_map(|b| b.chunks_exact(8))
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
        Some(IdFilter { words, count })
    }

    /// Block `i` as stored.
    pub fn block(&self, i: usize) -> Vec<u8> {
        const WORDS: usize = BLOCK_BYTES / 8;
        self.words[i * WORDS..(i + 1) * WORDS]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// The number of blocks.
    pub fn blocks(&self) -> usize {
        self.words.len() * 8 / BLOCK_BYTES
    }

    /// The ids added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether so many ids were added that absent ones pass too often: time to make it
    /// again, larger.
    pub fn is_full(&self) -> bool {
        self.count.saturating_mul(FULL_BITS_PER_ID) > self.bits()
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    /// Adds `id`, noting in `changed` the blocks whose bits it changed.
    pub fn insert(&mut self, id: &Id, changed: &mut Changed) {
        self.count += 1;
        for p in positions(self.bits(), id) {
            let (w, bit) = (p / 64, 1u64 << (p % 64));
            if self.words[w] & bit == 0 {
                self.words[w] |= bit;
                changed.note(p / (BLOCK_BYTES * 8));
            }
        }
    }

    /// False only if `id` was never added.
    pub fn may_contain(&self, id: &Id) -> bool {
        positions(self.bits(), id).all(|p| self.words[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The blocks of a filter whose bits [`IdFilter::insert`] changed: a flag per block, as
/// a rebuild notes nearly every block once per bit it sets.
#[derive(Debug, Default)]
pub struct Changed(Vec<bool>);

impl Changed {
    fn note(&mut self, block: usize) {
        if self.0.len() <= block {
            self.0.resize(block + 1, false);
        }
        self.0[block] = true;
    }

    /// The blocks noted, in order.
    pub fn blocks(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(i, _)| i)
    }
}

/// The bit positions of `id` in a filter of `bits` bits (a power of two).
fn positions(bits: u64, id: &Id) -> impl Iterator<Item = usize> {
    let h1 = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"));
    let h2 = u64::from_le_bytes(id.0[8..16].try_into().expect("8 bytes")) | 1;
    let mask = bits - 1;
    (0..HASHES).map(move |i| {
        let p = h1.wrapping_add(i.wrapping_mul(h2)) & mask;
        usize::try_from(p).expect("under the length of the filter's words")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Id {
        Id::hash(&n.to_le_bytes())
    }

    #[test]
    fn an_added_id_always_passes_and_few_absent_ones_do() {
        let mut f = IdFilter::sized_for(0);
        let n = f.bits() / FULL_BITS_PER_ID;
        let mut changed = Changed::default();
        for k in 0..n {
            f.insert(&id(k), &mut changed);
        }
        assert!(!f.is_full(), "full at its capacity");
        assert!(
            (0..n).all(|k| f.may_contain(&id(k))),
            "an added id was filtered out"
        );
        let passed = (n..n + 100_000).filter(|k| f.may_contain(&id(*k))).count();
        assert!(
            passed < 2_000,
            "{passed} of 100,000 absent ids passed a full filter"
        );
        f.insert(&id(n), &mut changed);
        assert!(f.is_full());
        let empty = IdFilter::sized_for(0);
        assert!((0..1000).all(|k| !empty.may_contain(&id(k))));
    }

    #[test]
    fn blocks_round_trip_and_insert_names_the_blocks_it_changed() {
        let mut f = IdFilter::sized_for(200_000);
        assert!(f.blocks().is_power_of_two() && f.bits() >= 200_000 * BUILD_BITS_PER_ID);
        let mut changed = Changed::default();
        for k in 0..1000 {
            f.insert(&id(k), &mut changed);
        }
        let changed: Vec<usize> = changed.blocks().collect();
        let blocks: Vec<Vec<u8>> = (0..f.blocks()).map(|i| f.block(i)).collect();
        let zero = vec![0u8; BLOCK_BYTES];
        let nonzero: Vec<usize> = (0..f.blocks()).filter(|i| blocks[*i] != zero).collect();
        assert_eq!(
            changed, nonzero,
            "insert named other blocks than it changed"
        );
        assert_eq!(IdFilter::from_blocks(&blocks, 1000), Some(f.clone()));
        assert!(IdFilter::from_blocks(&blocks[..3], 1000).is_none());
        let mut short = blocks.clone();
        short[1].pop();
        assert!(IdFilter::from_blocks(&short, 1000).is_none());
        let mut again = Changed::default();
        f.insert(&id(5), &mut again);
        assert_eq!(again.blocks().count(), 0, "an id added again changed bits");
    }
}
