//! Throughput of the backup pipeline next to raw BLAKE3 on the same buffer.
//!
//! `blake3_1core`: single-threaded hash of the buffer (the floor of one core).
//! `blake3_chunks_1core`: the same bytes hashed one dump-profile chunk at a time, as
//! chunk ids are (BLAKE3's SIMD lanes are full only on long inputs).
//! `blake3_chunks_all`: the same chunks hashed on every core (the ceiling of hashing
//! ids here: what the cores give together, not the single-core figure times two).
//! `chunk_only`: FastCDC cut points (dump profile).
//! `chunk_hash_stored`: cutting and hashing a stream whose previous version is the same
//! bytes (the chunker's hints path, lengths from memory): the stage the target
//! ">= 70 % of BLAKE3 x cores on data already stored" is about.
//! `backup_stored`: a whole backup of a stream the repository already holds (adds the
//! index lookups, and a snapshot's tree, index and record with their fsyncs).
//! `backup_new`: a backup of new data into a fresh repository (adds zstd and packs).

use std::collections::HashMap;
use std::io::Cursor;
use std::ops::Range;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use snap::format::chunker::{ChunkParams, Gear, HintSource, Hints, Known, LenFn, StreamChunker};
use snap::format::id::{DataId, Id};
use snap::ops::backup::{backup, BackupOptions};
use snap::progress::NoProgress;
use snap::repo::Repository;

const LEN: usize = 64 << 20;

/// Half incompressible, half text-like: roughly what a dump with binary columns looks like.
fn data() -> Vec<u8> {
    let mut out = vec![0u8; LEN];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut out);
    for (i, b) in out.iter_mut().enumerate() {
        if (i / 4096) % 2 == 0 {
            *b = b"0123456789 ,abcdef\n"[(*b % 19) as usize];
        }
    }
    out
}

fn stream_backup(repo: &Repository, data: &[u8]) {
    let opts = BackupOptions {
        stdin_name: Some("db.sql".into()),
        ..Default::default()
    };
    let mut input = Cursor::new(data);
    backup(repo, &opts, Some(&mut input), &NoProgress).unwrap();
}

fn bench(c: &mut Criterion) {
    let data = data();
    let gear = Gear::public();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);

    g.bench_function("blake3_1core", |b| b.iter(|| blake3::hash(&data)));

    g.bench_function("chunk_only", |b| {
        b.iter(|| {
            let mut ch = StreamChunker::new(ChunkParams::DUMP, &gear, None);
            let mut r = Cursor::new(&data);
            let mut n = 0;
            while let Some(batch) = ch.next_batch(&mut r).unwrap() {
                n += batch.cuts.len();
            }
            n
        });
    });

    // The previous version: the same bytes, cut and hashed once.
    let mut prev: Vec<(DataId, u32)> = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut ch = StreamChunker::new(ChunkParams::DUMP, &gear, None);
    let mut r = Cursor::new(&data);
    while let Some(batch) = ch.next_batch(&mut r).unwrap() {
        for c in &batch.cuts {
            let at = ranges.last().map_or(0, |r| r.end);
            ranges.push(at..at + c.len());
            let len = u32::try_from(c.len()).expect("chunks are at most 64 KiB");
            prev.push((DataId(Id::hash(&batch.data[c.clone()])), len));
        }
    }
    let lens: HashMap<DataId, u32> = prev.iter().copied().collect();
    let hash_chunk = |r: &Range<usize>| {
        std::hint::black_box(blake3::hash(&data[r.clone()]));
    };
    g.bench_function("blake3_chunks_1core", |b| {
        b.iter(|| ranges.iter().for_each(hash_chunk));
    });
    g.bench_function("blake3_chunks_all", |b| {
        b.iter(|| ranges.par_iter().for_each(hash_chunk));
    });
    g.bench_function("chunk_hash_stored", |b| {
        b.iter(|| {
            let mut ids = prev.iter().map(|(id, _)| *id);
            let source: HintSource = Box::new(move || ids.next());
            let len: LenFn = Box::new(|id| lens.get(id).copied());
            let hints = Hints::new(source, len, Box::new(|d: &[u8]| DataId(Id::hash(d))));
            let mut ch = StreamChunker::new(ChunkParams::DUMP, &gear, None).with_hints(hints);
            let mut r = Cursor::new(&data);
            let mut stored = 0;
            while let Some(batch) = ch.next_batch(&mut r).unwrap() {
                stored += batch
                    .known
                    .iter()
                    .filter(|k| matches!(k, Known::Stored(_)))
                    .count();
                ch.recycle(batch.data);
            }
            assert!(stored + 8 >= prev.len(), "the hints path was taken");
            stored
        });
    });

    let dir = tempfile::tempdir().unwrap();
    snap::repo::set_cache_root(dir.path().join("cache"));
    let repo = Repository::init(
        &dir.path().join("repo"),
        &snap::repo::InitOptions::default(),
    )
    .unwrap();
    stream_backup(&repo, &data);
    g.bench_function("backup_stored", |b| b.iter(|| stream_backup(&repo, &data)));

    g.bench_function("backup_new", |b| {
        b.iter_with_setup(
            || {
                let d = tempfile::tempdir().unwrap();
                let r =
                    Repository::init(&d.path().join("repo"), &snap::repo::InitOptions::default())
                        .unwrap();
                (d, r)
            },
            |(_d, r)| stream_backup(&r, &data),
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
