//! The blob store end to end on real files: ingest, span encoding, verified
//! decoding, corruption, resume.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use locus_artifacts::blob::BLOCK;
use locus_artifacts::{
    ArtifactError, BlobStore, DecodeFailure, GROUP_BYTES, SPAN_BYTES, range::missing, spans,
};
use locus_core::ArtifactId;
use proptest::prelude::*;

fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u64 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = BlobStore::open(dir.path()).unwrap();
    (dir, s)
}

fn encoded(s: &BlobStore, id: &ArtifactId, span: std::ops::Range<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    s.encode(id, span, &mut out).unwrap();
    out
}

#[test]
fn ingest_names_content_by_its_blake3_digest_both_ways() {
    let (_d, s) = store();
    let bytes = content(100_000, 1);
    let mut seen = 0;
    let a = s
        .ingest(Cursor::new(&bytes), Some(bytes.len() as u64), &mut |n| {
            seen = n
        })
        .unwrap();
    assert_eq!(a.id, ArtifactId::of(&bytes));
    assert_eq!(a.size, 100_000);
    assert!(a.fresh);
    assert_eq!(seen, 100_000);
    let b = s.ingest(Cursor::new(&bytes), None, &mut |_| {}).unwrap();
    assert_eq!(b.id, a.id);
    assert!(!b.fresh, "the second copy is recognised");
    assert_eq!(fs::read(s.path(&a.id)).unwrap(), bytes);
    let mode = fs::metadata(s.path(&a.id)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o555);
    assert_eq!(s.list().unwrap(), vec![(a.id, 100_000)]);
}

#[test]
fn a_wrong_declared_size_is_refused_and_leaves_nothing() {
    let (d, s) = store();
    let bytes = content(5000, 2);
    assert!(matches!(
        s.ingest(Cursor::new(&bytes), Some(6000), &mut |_| {}),
        Err(ArtifactError::Truncated {
            declared: 6000,
            got: 5000
        })
    ));
    assert!(matches!(
        s.ingest(Cursor::new(&bytes), Some(4000), &mut |_| {}),
        Err(ArtifactError::TooLong { declared: 4000 })
    ));
    assert!(s.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_download_in_spans_rebuilds_the_blob() {
    let (_d, src) = store();
    let (_e, dst) = store();
    let bytes = content(3 * SPAN_BYTES as usize + 12345, 3);
    let a = src
        .ingest(Cursor::new(&bytes), Some(bytes.len() as u64), &mut |_| {})
        .unwrap();
    let p = dst.partial(a.id, a.size).unwrap();
    assert_eq!(p.missing().unwrap(), vec![0..a.size]);
    let mut got = 0;
    for span in spans(0..a.size, SPAN_BYTES) {
        let enc = encoded(&src, &a.id, span.clone());
        p.decode(span, Cursor::new(enc), &mut |n| got += n).unwrap();
    }
    assert_eq!(got, a.size);
    dst.complete(p).unwrap();
    assert_eq!(fs::read(dst.path(&a.id)).unwrap(), bytes);
    // The outboard arrived with the data: the copy can serve spans too.
    let enc = encoded(&dst, &a.id, 0..a.size);
    assert_eq!(enc, encoded(&src, &a.id, 0..a.size));
}

#[test]
fn a_flipped_byte_is_caught_at_its_group_and_the_rest_is_kept() {
    let (_d, src) = store();
    let (_e, dst) = store();
    let bytes = content(40 * GROUP_BYTES as usize, 4);
    let a = src
        .ingest(Cursor::new(&bytes), Some(bytes.len() as u64), &mut |_| {})
        .unwrap();
    let bad_at = 17 * GROUP_BYTES + 100;
    let path = src.path(&a.id);
    let mut perms = fs::metadata(&path).unwrap().permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&path, perms).unwrap();
    let mut raw = fs::read(&path).unwrap();
    raw[bad_at as usize] ^= 0x01;
    fs::write(&path, raw).unwrap();

    let p = dst.partial(a.id, a.size).unwrap();
    let err = p
        .decode(
            0..a.size,
            Cursor::new(encoded(&src, &a.id, 0..a.size)),
            &mut |_| {},
        )
        .unwrap_err();
    assert_eq!(
        err.failure,
        DecodeFailure::Corrupt {
            offset: 17 * GROUP_BYTES
        }
    );
    assert_eq!(err.verified_to, 17 * GROUP_BYTES);
    // What verified before the bad group is kept on disk.
    assert_eq!(p.missing().unwrap(), vec![17 * GROUP_BYTES..a.size]);
    assert!(matches!(dst.complete(p), Err(ArtifactError::Incomplete(_))));
}

#[test]
fn an_interrupted_download_resumes_from_what_verifies() {
    let (_d, src) = store();
    let (_e, dst) = store();
    let bytes = content(2 * SPAN_BYTES as usize, 5);
    let a = src
        .ingest(Cursor::new(&bytes), Some(bytes.len() as u64), &mut |_| {})
        .unwrap();
    let enc = encoded(&src, &a.id, 0..a.size);
    {
        let p = dst.partial(a.id, a.size).unwrap();
        // The stream breaks a little past 1 MiB.
        let cut = &enc[..(1 << 20) + 5000];
        let err = p
            .decode(0..a.size, Cursor::new(cut), &mut |_| {})
            .unwrap_err();
        assert!(matches!(err.failure, DecodeFailure::Interrupted(_)));
        assert!(err.verified_to >= 1 << 19 && err.verified_to % GROUP_BYTES == 0);
    }
    // A new process opens the same partial download.
    let dst = BlobStore::open(_e.path()).unwrap();
    assert_eq!(dst.partials().unwrap(), vec![a.id]);
    let p = dst.partial(a.id, a.size).unwrap();
    let gaps = p.missing().unwrap();
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0].start >= 1 << 19, "{gaps:?}");
    for span in gaps {
        p.decode(
            span.clone(),
            Cursor::new(encoded(&src, &a.id, span)),
            &mut |_| {},
        )
        .unwrap();
    }
    dst.complete(p).unwrap();
    assert_eq!(fs::read(dst.path(&a.id)).unwrap(), bytes);
}

#[test]
fn a_lie_about_the_size_does_not_verify() {
    let (_d, src) = store();
    let (_e, dst) = store();
    let bytes = content(100_000, 6);
    let a = src
        .ingest(Cursor::new(&bytes), Some(bytes.len() as u64), &mut |_| {})
        .unwrap();
    let enc = encoded(&src, &a.id, 0..a.size);
    let p = dst.partial(a.id, a.size - GROUP_BYTES).unwrap();
    assert!(
        p.decode(0..a.size - GROUP_BYTES, Cursor::new(enc), &mut |_| {})
            .is_err()
    );
    let empty = dst.partial(a.id, 0).unwrap();
    assert!(
        dst.finish_unchecked(empty).is_err(),
        "size 0 must be the empty artifact"
    );
}

#[test]
fn the_empty_artifact_is_stored_and_fetched() {
    let (_d, src) = store();
    let (_e, dst) = store();
    let a = src.ingest(Cursor::new(b""), Some(0), &mut |_| {}).unwrap();
    assert_eq!(a.id, ArtifactId::of(b""));
    let p = dst.partial(a.id, 0).unwrap();
    assert!(p.missing().unwrap().is_empty());
    dst.complete(p).unwrap();
    assert_eq!(dst.size(&a.id), Some(0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any size, any cut into spans, any order: the decoded copy is the
    /// original, and a flipped byte anywhere is caught in its own group.
    #[test]
    fn chunking_is_exact_for_any_size_and_cut(
        size in 0usize..300_000,
        span in 1u64..100_000,
        seed in any::<u8>(),
        reverse in any::<bool>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let (_d, src) = store();
        let (_e, dst) = store();
        let bytes = content(size, seed);
        let a = src.ingest(Cursor::new(&bytes), Some(size as u64), &mut |_| {}).unwrap();
        prop_assert_eq!(a.id, ArtifactId::of(&bytes));
        let p = dst.partial(a.id, a.size).unwrap();
        let mut cut = spans(0..a.size, span);
        if reverse { cut.reverse(); }
        for s in cut {
            p.decode(s.clone(), Cursor::new(encoded(&src, &a.id, s)), &mut |_| {}).unwrap();
        }
        prop_assert!(p.missing().unwrap().is_empty());
        dst.complete(p).unwrap();
        prop_assert_eq!(fs::read(dst.path(&a.id)).unwrap(), bytes.clone());

        if size > 0 {
            // Corrupt one byte of the encoding's data and decode the whole.
            let at = flip.index(size) as u64;
            let path = src.path(&a.id);
            let mut perms = fs::metadata(&path).unwrap().permissions();
            perms.set_mode(0o644);
            fs::set_permissions(&path, perms).unwrap();
            let mut raw = bytes.clone();
            raw[at as usize] ^= 0x80;
            fs::write(&path, raw).unwrap();
            let (_f, third) = store();
            let p = third.partial(a.id, a.size).unwrap();
            let err = p.decode(0..a.size, Cursor::new(encoded(&src, &a.id, 0..a.size)), &mut |_| {}).unwrap_err();
            let group = at / GROUP_BYTES * GROUP_BYTES;
            prop_assert_eq!(err.verified_to, group);
            prop_assert_eq!(err.failure, DecodeFailure::Corrupt { offset: group });
        }
    }

    /// A range read is the same slice of the blob whatever the range.
    #[test]
    fn range_reads_return_exactly_the_slice(size in 1usize..200_000, a in any::<prop::sample::Index>(), len in 0usize..50_000) {
        use std::os::unix::fs::FileExt;
        let (_d, s) = store();
        let bytes = content(size, 9);
        let id = s.ingest(Cursor::new(&bytes), Some(size as u64), &mut |_| {}).unwrap().id;
        let start = a.index(size);
        let header = format!("bytes={}-{}", start, start + len);
        let r = locus_artifacts::parse_range(&header, size as u64).unwrap();
        let (f, _) = s.open_blob(&id).unwrap();
        let mut buf = vec![0; (r.end - r.start) as usize];
        f.read_exact_at(&mut buf, r.start).unwrap();
        prop_assert_eq!(&buf[..], &bytes[r.start as usize..r.end as usize]);
        prop_assert_eq!(missing(size as u64, std::slice::from_ref(&r)).iter().map(|g| g.end - g.start).sum::<u64>() + (r.end - r.start), size as u64);
    }
}

#[test]
fn the_outboard_is_a_small_fraction() {
    let tree = bao_tree::BaoTree::new(1 << 30, BLOCK);
    // 64 bytes per 16 KiB group: 0.39%.
    assert_eq!(tree.outboard_size(), ((1u64 << 30) / GROUP_BYTES - 1) * 64);
}
