use super::*;
use crate::checkpoint::{sign, verifier_key};
use crate::reading::Value;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

const ORIGIN: &str = "locus.example/node/abc";
const NAME: &str = "node-abc";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn vkey() -> String {
    verifier_key(NAME, &key().verifying_key()).unwrap()
}

fn reading(i: u64) -> Reading {
    Reading::new(
        format!("thing-{}", i % 3),
        "temp",
        Value::Number(i as f64 * 0.5),
        Some("Cel".into()),
        1_700_000_000_000 + i as i64 * 1000,
    )
    .unwrap()
}

/// A node's log of `n` readings and its notes signed at `sizes`.
struct Node {
    log: SealLog,
    readings: Vec<Reading>,
    notes: Vec<String>,
}

fn node(n: u64, sizes: &[u64]) -> Node {
    let mut log = SealLog::new();
    let mut readings = Vec::new();
    for i in 0..n {
        let sealed = log.append(reading(i));
        assert_eq!(sealed.seq, i);
        readings.push(sealed.reading);
    }
    let notes = sizes
        .iter()
        .map(|&s| sign(&log.checkpoint_at(ORIGIN, s).unwrap(), NAME, &key()).unwrap())
        .collect();
    Node {
        log,
        readings,
        notes,
    }
}

impl Node {
    fn export(&self, range: Range<u64>) -> Bundle {
        let rs = &self.readings[range.start as usize..range.end as usize];
        Bundle::export(&self.log, &self.notes, range, rs).unwrap()
    }
}

/// 40 readings, checkpoints at 5, 17 and 40, readings 3..30 exported:
/// seq `s` is at position `s - 3`.
fn bundle() -> Bundle {
    node(40, &[5, 17, 40]).export(3..30)
}

fn problems(b: &Bundle) -> Vec<Problem> {
    verify(b, &vkey()).problems
}

fn with_reading(b: &mut Bundle, position: usize, f: impl FnOnce(&Reading) -> Reading) {
    b.entries[position].reading = f(&b.entries[position].reading);
}

fn rebuilt(r: &Reading, thing: &str, value: Value, unit: Option<&str>, time: i64) -> Reading {
    Reading::new(thing, r.resource(), value, unit.map(str::to_owned), time).unwrap()
}

#[test]
fn sealed_leaf_bytes_are_as_documented() {
    let sealed = Sealed {
        seq: 0x0102_0304_0506_0708,
        reading: reading(1),
    };
    let mut want = vec![1u8, 1, 2, 3, 4, 5, 6, 7, 8];
    want.extend_from_slice(&reading(1).leaf_bytes());
    assert_eq!(sealed.leaf_bytes(), want);
    assert_eq!(sealed.leaf_hash(), merkle::leaf_hash(&want));
    assert_eq!(
        sealed_leaf_hash(sealed.seq, &reading(1).leaf_bytes()),
        merkle::leaf_hash(&want)
    );
    assert_eq!(Sealed::from_leaf_bytes(&want).unwrap(), sealed);

    let mut trailing = want.clone();
    trailing.push(0);
    let e = Sealed::from_leaf_bytes(&trailing).unwrap_err();
    assert!(matches!(
        e,
        SealError::Reading(ReadingError::Trailing { extra: 1, .. })
    ));
    let mut v2 = want.clone();
    v2[0] = 2;
    assert_eq!(
        Sealed::from_leaf_bytes(&v2),
        Err(SealError::LeafFormat { got: 2 })
    );
    assert_eq!(
        Sealed::from_leaf_bytes(&want[..5]),
        Err(SealError::LeafTruncated { len: 5 })
    );
    assert_eq!(
        Sealed::from_leaf_bytes(&[]),
        Err(SealError::LeafTruncated { len: 0 })
    );
    assert_eq!(
        SealError::LeafFormat { got: 2 }.to_string(),
        "sealed leaf format 2 is not known (this is format 1)"
    );
}

#[test]
fn the_seq_is_part_of_the_leaf() {
    let a = Sealed {
        seq: 3,
        reading: reading(3),
    };
    let b = Sealed {
        seq: 4,
        reading: reading(3),
    };
    assert_ne!(a.leaf_hash(), b.leaf_hash());
    assert_ne!(a.leaf_hash(), reading(3).leaf_hash());
}

#[test]
fn the_log_numbers_leaves_and_rebuilds_from_hashes() {
    let n = node(23, &[]);
    assert_eq!(n.log.size(), 23);
    let leaves: Vec<Hash> = (0..23).map(|i| n.log.leaf(i).unwrap()).collect();
    for (i, leaf) in leaves.iter().enumerate() {
        let sealed = Sealed {
            seq: i as u64,
            reading: reading(i as u64),
        };
        assert_eq!(*leaf, sealed.leaf_hash());
    }
    let again = SealLog::from_leaves(leaves.clone());
    assert_eq!(again, n.log);
    let mut appended = SealLog::new();
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(appended.append_leaf(*leaf), i as u64);
    }
    assert_eq!(appended, n.log);
    assert_eq!(again.checkpoint(ORIGIN), n.log.checkpoint(ORIGIN));
    let cp = n.log.checkpoint(ORIGIN);
    assert_eq!((cp.size, cp.origin.as_str()), (23, ORIGIN));
    assert_eq!(cp.root, n.log.root(23).unwrap());
    let proof = n.log.inclusion_proof(7, 20).unwrap();
    merkle::verify_inclusion(&leaves_at(&n, 7), 7, 20, &proof, &n.log.root(20).unwrap()).unwrap();
    let proof = n.log.consistency_proof(9, 23).unwrap();
    merkle::verify_consistency(9, 23, &n.log.root(9).unwrap(), &cp.root, &proof).unwrap();
    assert!(n.log.checkpoint_at(ORIGIN, 24).is_err());
}

fn leaves_at(n: &Node, seq: u64) -> Hash {
    n.log.leaf(seq).unwrap()
}

#[test]
fn an_honest_bundle_verifies_clean() {
    let b = bundle();
    let report = verify(&b, &vkey());
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.checkpoints_ok);
    assert_eq!(report.entries_checked, 27);
    assert_eq!(report.tree_size, Some(40));
    assert_eq!(report.range, 3..30);
    assert_eq!(report.origin, ORIGIN);
    assert_eq!(b.consistency.len(), 2);

    // One checkpoint, the whole log; an empty range; repeated sizes; a
    // checkpoint of the empty log first.
    let n = node(40, &[40]);
    assert!(verify(&n.export(0..40), &vkey()).is_clean());
    let empty = n.export(40..40);
    let report = verify(&empty, &vkey());
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 0);
    let n = node(9, &[0, 9, 9]);
    assert!(verify(&n.export(0..9), &vkey()).is_clean());
}

type Alter = fn(&Reading) -> Reading;

#[test]
fn altering_any_field_is_exactly_that_seq() {
    let base = bundle();
    let alter: [(&str, Alter); 5] = [
        ("value", |r| {
            rebuilt(r, r.thing(), Value::Number(99.0), r.unit(), r.time_ms())
        }),
        ("time", |r| {
            rebuilt(r, r.thing(), r.value().clone(), r.unit(), r.time_ms() + 1)
        }),
        ("unit", |r| {
            rebuilt(r, r.thing(), r.value().clone(), Some("K"), r.time_ms())
        }),
        ("no unit", |r| {
            rebuilt(r, r.thing(), r.value().clone(), None, r.time_ms())
        }),
        ("thing", |r| {
            rebuilt(r, "thing-9", r.value().clone(), r.unit(), r.time_ms())
        }),
    ];
    for (field, f) in alter {
        let mut b = base.clone();
        with_reading(&mut b, 9, f);
        let report = verify(&b, &vkey());
        assert_eq!(
            report.problems,
            vec![Problem::Altered {
                seq: 12,
                position: 9
            }],
            "{field}"
        );
        assert!(report.checkpoints_ok);
        assert_eq!(
            report.problems[0].to_string(),
            "reading seq 12 (position 9) was altered: its inclusion proof does not verify"
        );
    }
    // Renumbering an entry is altering it: its old seq is then missing.
    let mut b = base.clone();
    b.entries[9].seq = 31;
    assert_eq!(
        problems(&b),
        vec![
            Problem::OutsideRange {
                seq: 31,
                position: 9,
                range: 3..30
            },
            Problem::Dropped {
                first: 12,
                last: 12
            }
        ]
    );
    let mut b = base;
    b.entries[9].seq = 13;
    assert_eq!(
        problems(&b),
        vec![
            Problem::Altered {
                seq: 13,
                position: 9
            },
            Problem::Duplicated {
                seq: 13,
                position: 10,
                first_position: 9
            },
            Problem::Dropped {
                first: 12,
                last: 12
            },
        ]
    );
}

#[test]
fn dropped_entries_are_exactly_the_gap() {
    let base = bundle();
    let mut b = base.clone();
    b.entries.remove(9);
    let p = problems(&b);
    assert_eq!(
        p,
        vec![Problem::Dropped {
            first: 12,
            last: 12
        }]
    );
    assert_eq!(p[0].to_string(), "reading seq 12 was dropped");

    let mut b = base.clone();
    b.entries.drain(7..10);
    let p = problems(&b);
    assert_eq!(
        p,
        vec![Problem::Dropped {
            first: 10,
            last: 12
        }]
    );
    assert_eq!(p[0].to_string(), "readings seq 10–12 were dropped");

    // The ends of the range, and every entry.
    let mut b = base.clone();
    b.entries.remove(26);
    b.entries.remove(0);
    assert_eq!(
        problems(&b),
        vec![
            Problem::Dropped { first: 3, last: 3 },
            Problem::Dropped {
                first: 29,
                last: 29
            }
        ]
    );
    let mut b = base;
    b.entries.clear();
    assert_eq!(problems(&b), vec![Problem::Dropped { first: 3, last: 29 }]);
}

#[test]
fn an_altered_entry_is_not_also_dropped() {
    let mut b = bundle();
    with_reading(&mut b, 0, |r| {
        rebuilt(r, r.thing(), Value::Bool(true), r.unit(), r.time_ms())
    });
    b.entries.remove(1);
    assert_eq!(
        problems(&b),
        vec![
            Problem::Altered {
                seq: 3,
                position: 0
            },
            Problem::Dropped { first: 4, last: 4 }
        ]
    );
}

#[test]
fn swapped_entries_are_reordered_and_named() {
    let mut b = bundle();
    b.entries.swap(4, 11);
    let p = problems(&b);
    assert_eq!(
        p,
        vec![
            Problem::Reordered {
                seq: 14,
                position: 4,
                after: Some(13),
                before: Some(15)
            },
            Problem::Reordered {
                seq: 7,
                position: 11,
                after: Some(6),
                before: Some(8)
            },
        ]
    );
    assert_eq!(
        p[0].to_string(),
        "reading seq 14 (position 4) is out of order: expected after seq 13 and before seq 15"
    );

    // Neighbours, and the ends.
    let mut b = bundle();
    b.entries.swap(0, 1);
    assert_eq!(
        problems(&b),
        vec![
            Problem::Reordered {
                seq: 4,
                position: 0,
                after: Some(3),
                before: Some(5)
            },
            Problem::Reordered {
                seq: 3,
                position: 1,
                after: None,
                before: Some(4)
            },
        ]
    );
    assert_eq!(
        problems(&b)[1].to_string(),
        "reading seq 3 (position 1) is out of order: expected first, before seq 4"
    );
}

#[test]
fn a_duplicated_entry_is_reported() {
    let mut b = bundle();
    let copy = b.entries[5].clone();
    b.entries.insert(6, copy);
    let p = problems(&b);
    assert_eq!(
        p,
        vec![Problem::Duplicated {
            seq: 8,
            position: 6,
            first_position: 5
        }]
    );
    assert_eq!(
        p[0].to_string(),
        "reading seq 8 (position 6) duplicates the entry at position 5"
    );
}

#[test]
fn forged_and_foreign_checkpoints_are_caught() {
    // A forged size: the signature no longer covers the text.
    let mut b = bundle();
    b.checkpoints[1] = b.checkpoints[1].replacen("\n17\n", "\n18\n", 1);
    let report = verify(&b, &vkey());
    assert!(!report.checkpoints_ok);
    assert!(matches!(
        report.problems.as_slice(),
        [Problem::BadCheckpoint { index: 1, .. }]
    ));
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("checkpoint 1 is not valid: the signature by node-abc"),
        "{}",
        report.problems[0]
    );

    // Signed by another key under the same name.
    let mut b = bundle();
    let n = node(40, &[]);
    let other = SigningKey::from_bytes(&[8; 32]);
    b.checkpoints[2] = sign(&n.log.checkpoint(ORIGIN), NAME, &other).unwrap();
    let report = verify(&b, &vkey());
    assert!(matches!(
        report.problems.as_slice(),
        [Problem::BadCheckpoint { index: 2, .. }]
    ));
    assert_eq!(report.entries_checked, 0, "the last root is not trusted");
    assert_eq!(report.tree_size, None);

    // Verified with the wrong key, or a key that does not parse.
    let b = bundle();
    let wrong = verifier_key(NAME, &other.verifying_key()).unwrap();
    let report = verify(&b, &wrong);
    assert_eq!(report.problems.len(), 3);
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::BadCheckpoint { .. }))
    );
    assert!(matches!(
        problems_with(&b, "nonsense").as_slice(),
        [Problem::BadKey { .. }]
    ));

    // Another origin, signed by the right key.
    let mut b = bundle();
    let cp = n.log.checkpoint_at("elsewhere", 5).unwrap();
    b.checkpoints[0] = sign(&cp, NAME, &key()).unwrap();
    assert!(matches!(
        problems(&b).as_slice(),
        [Problem::BadCheckpoint { index: 0, reason }] if reason.contains("elsewhere")
    ));
}

fn problems_with(b: &Bundle, key: &str) -> Vec<Problem> {
    verify(b, key).problems
}

#[test]
fn a_rolled_back_or_forked_checkpoint_is_inconsistent() {
    // The later checkpoint is smaller than the earlier one.
    let n = node(40, &[30, 20]);
    let b = Bundle {
        version: BUNDLE_VERSION,
        origin: ORIGIN.into(),
        checkpoints: n.notes.clone(),
        consistency: vec![vec![]],
        range: 0..0,
        entries: vec![],
    };
    let report = verify(&b, &vkey());
    assert!(!report.checkpoints_ok);
    assert!(matches!(
        report.problems.as_slice(),
        [Problem::Inconsistent { index: 0, reason }] if reason.contains("goes down")
    ));

    // A log that rewrote reading 3 after checkpoint 0, signed by the same
    // key: the proof the forger can make from its log does not hold.
    let honest = node(40, &[5, 17, 40]);
    let mut fork = SealLog::new();
    for i in 0..40 {
        let r = if i == 3 {
            rebuilt(&reading(3), "thing-0", Value::Number(-1.0), Some("Cel"), 0)
        } else {
            reading(i)
        };
        fork.append(r);
    }
    let mut b = honest.export(3..30);
    b.checkpoints[2] = sign(&fork.checkpoint(ORIGIN), NAME, &key()).unwrap();
    b.consistency[1] = fork
        .consistency_proof(17, 40)
        .unwrap()
        .iter()
        .map(to_hex)
        .collect();
    let report = verify(&b, &vkey());
    assert!(!report.checkpoints_ok);
    assert!(matches!(
        report.problems[0],
        Problem::Inconsistent { index: 1, .. }
    ));
    assert!(
        report.problems[0]
            .to_string()
            .starts_with("checkpoint 2 is not an extension of checkpoint 1"),
        "{}",
        report.problems[0]
    );

    // A truncated consistency proof, and a missing one.
    let mut b = bundle();
    b.consistency[0].pop();
    assert!(matches!(
        problems(&b).as_slice(),
        [Problem::Inconsistent { index: 0, reason }] if reason.contains("hashes")
    ));
    let mut b = bundle();
    b.consistency.pop();
    assert!(matches!(
        problems(&b).as_slice(),
        [Problem::Malformed { .. }]
    ));
}

#[test]
fn truncated_or_malformed_proofs_and_sizes_are_caught() {
    let mut b = bundle();
    b.entries[2].proof.pop();
    let p = problems(&b);
    assert!(matches!(
        p.as_slice(),
        [Problem::WrongSize { seq: 5, position: 2, reason }] if reason.contains("malformed")
    ));
    let mut b = bundle();
    b.entries[2].proof[0] = "zz".into();
    assert!(matches!(
        problems(&b).as_slice(),
        [Problem::WrongSize { seq: 5, position: 2, reason }] if reason.contains("hex")
    ));
    // A flipped proof hash is a proof leading elsewhere: altered.
    let mut b = bundle();
    b.entries[2].proof[0] = "00".repeat(32);
    assert_eq!(
        problems(&b),
        vec![Problem::Altered {
            seq: 5,
            position: 2
        }]
    );

    let mut b = bundle();
    b.entries.push(Entry {
        seq: 40,
        reading: reading(40),
        proof: vec![],
    });
    assert!(matches!(
        problems(&b).as_slice(),
        [Problem::WrongSize {
            seq: 40,
            position: 27,
            ..
        }]
    ));
    let mut b = bundle();
    b.range = 3..41;
    assert!(matches!(
        problems(&b).as_slice(),
        [
            Problem::Malformed { .. },
            Problem::Dropped {
                first: 30,
                last: 39
            }
        ]
    ));
    let mut b = bundle();
    b.version = 2;
    assert_eq!(problems(&b), vec![Problem::Unsupported { version: 2 }]);
    let mut b = bundle();
    b.checkpoints.clear();
    b.consistency.clear();
    assert!(!verify(&b, &vkey()).is_clean());
}

#[test]
fn reports_are_deterministic() {
    let mut b = bundle();
    b.entries.swap(1, 20);
    b.entries.remove(5);
    with_reading(&mut b, 9, |r| rebuilt(r, "x", r.value().clone(), None, 0));
    let one = verify(&b, &vkey());
    assert_eq!(one, verify(&b.clone(), &vkey()));
    assert!(one.problems.len() >= 3);
}

#[test]
fn export_refuses_what_the_log_does_not_hold() {
    let n = node(40, &[5, 17, 40]);
    let rs = &n.readings[3..30];
    let mut wrong = rs.to_vec();
    wrong[4] = reading(99);
    assert_eq!(
        Bundle::export(&n.log, &n.notes, 3..30, &wrong),
        Err(SealError::ReadingMismatch { seq: 7 })
    );
    assert_eq!(
        Bundle::export(&n.log, &n.notes, 3..30, &rs[1..]),
        Err(SealError::ReadingCount { got: 26, want: 27 })
    );
    assert!(matches!(
        Bundle::export(&n.log, &n.notes[..2], 3..30, rs),
        Err(SealError::Range { size: 17, .. })
    ));
    assert_eq!(
        Bundle::export(&n.log, &[], 0..0, &[]),
        Err(SealError::NoCheckpoint)
    );
    let other = node(41, &[41]);
    assert!(matches!(
        Bundle::export(&n.log, &other.notes, 3..30, rs),
        Err(SealError::Merkle(_))
    ));
    let mut fork = n.log.clone();
    fork.append(reading(0));
    let notes = vec![sign(&fork.checkpoint(ORIGIN), NAME, &key()).unwrap()];
    let mut grown = n.log.clone();
    grown.append(reading(1));
    assert_eq!(
        Bundle::export(&grown, &notes, 3..30, rs),
        Err(SealError::RootMismatch { index: 0, size: 41 })
    );
    let backwards = vec![n.notes[1].clone(), n.notes[0].clone()];
    assert!(matches!(
        Bundle::export(&n.log, &backwards, 0..0, &[]),
        Err(SealError::SizeDecreases { index: 1, .. })
    ));
}

#[test]
fn bundle_json_round_trips_and_is_checked() {
    let b = bundle();
    let json = b.to_json().unwrap();
    let back = Bundle::from_json(&json).unwrap();
    assert_eq!(back, b);
    assert!(verify(&back, &vkey()).is_clean());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["range"], serde_json::json!({"start": 3, "end": 30}));
    assert_eq!(v["entries"][0]["seq"], 3);
    assert_eq!(v["entries"][0]["proof"][0].as_str().unwrap().len(), 64);
    assert_eq!(v["consistency"].as_array().unwrap().len(), 2);

    for bad in [
        "",
        "{}",
        "[1,2]",
        &json.replacen("\"version\":1", "\"version\":1,\"extra\":0", 1),
        &json.replacen("\"thing\":\"thing-0\"", "\"thing\":\"\"", 1),
        &json[..json.len() / 2],
    ] {
        assert!(
            matches!(Bundle::from_json(bad), Err(SealError::Json(_))),
            "{bad}"
        );
    }
}

#[derive(Debug, Clone)]
enum Tamper {
    None,
    Alter { at: usize, field: u8 },
    Drop { at: usize, len: usize },
    Swap { a: usize, b: usize },
}

fn altered(r: &Reading, field: u8) -> Reading {
    match field {
        0 => rebuilt(
            r,
            r.thing(),
            Value::String("x".into()),
            r.unit(),
            r.time_ms(),
        ),
        1 => rebuilt(r, r.thing(), r.value().clone(), r.unit(), r.time_ms() ^ 1),
        2 => rebuilt(r, r.thing(), r.value().clone(), None, r.time_ms()),
        _ => rebuilt(r, "other", r.value().clone(), r.unit(), r.time_ms()),
    }
}

/// A log size, increasing checkpoint sizes ending at it, an export range
/// and one tampering of the exported entries.
fn arb_case() -> impl Strategy<Value = (u64, Vec<u64>, Range<u64>, Tamper)> {
    (1u64..=300)
        .prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec(0..=n, 0..3),
                0..=n,
                0..=n,
            )
        })
        .prop_flat_map(|(n, mut sizes, a, b)| {
            sizes.push(n);
            sizes.sort_unstable();
            let range = a.min(b)..a.max(b);
            let len = (range.end - range.start) as usize;
            let alter_or_drop = move || {
                prop_oneof![
                    Just(Tamper::None),
                    (0..len, 0u8..4).prop_map(|(at, field)| Tamper::Alter { at, field }),
                    (0..len, 1..=len.min(5)).prop_map(move |(at, l)| Tamper::Drop {
                        at,
                        len: l.min(len - at)
                    }),
                ]
            };
            let tamper = match len {
                0 => Just(Tamper::None).boxed(),
                // One entry cannot be swapped with another.
                1 => alter_or_drop().boxed(),
                _ => prop_oneof![
                    3 => alter_or_drop(),
                    // Two distinct entries: the second at a non-zero offset
                    // from the first (no rejection sampling).
                    1 => (0..len, 1..len).prop_map(move |(a, d)| {
                        let b = (a + d) % len;
                        Tamper::Swap {
                            a: a.min(b),
                            b: a.max(b),
                        }
                    }),
                ]
                .boxed(),
            };
            (Just(n), Just(sizes), Just(range), tamper)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_report_names_exactly_the_tampering((n, sizes, range, tamper) in arb_case()) {
        let node = node(n, &sizes);
        let mut b = node.export(range.clone());
        let start = range.start;
        let seq = |at: usize| start + at as u64;
        let want = match tamper {
            Tamper::None => vec![],
            Tamper::Alter { at, field } => {
                with_reading(&mut b, at, |r| altered(r, field));
                vec![Problem::Altered { seq: seq(at), position: at }]
            }
            Tamper::Drop { at, len } => {
                b.entries.drain(at..at + len);
                vec![Problem::Dropped { first: seq(at), last: seq(at + len - 1) }]
            }
            Tamper::Swap { a, b: c } => {
                b.entries.swap(a, c);
                let near = |s: u64| {
                    (
                        s.checked_sub(1).filter(|p| *p >= range.start),
                        Some(s + 1).filter(|p| *p < range.end),
                    )
                };
                let (after_c, before_c) = near(seq(c));
                let (after_a, before_a) = near(seq(a));
                vec![
                    Problem::Reordered { seq: seq(c), position: a, after: after_c, before: before_c },
                    Problem::Reordered { seq: seq(a), position: c, after: after_a, before: before_a },
                ]
            }
        };
        let report = verify(&b, &vkey());
        prop_assert_eq!(&report.problems, &want);
        prop_assert!(report.checkpoints_ok);
        prop_assert_eq!(report.tree_size, Some(n));
        let json = b.to_json().unwrap();
        prop_assert_eq!(verify(&Bundle::from_json(&json).unwrap(), &vkey()), report);
    }

    #[test]
    fn arbitrary_leaf_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Sealed::from_leaf_bytes(&bytes);
    }
}

#[test]
fn a_block_log_with_its_leaves_exports_the_same_bundle() {
    // 1000 readings, checkpoints inside blocks and at a block's end.
    let n = node(1000, &[5, 256, 300, 777, 1000]);
    let leaves: Vec<Hash> = (0..1000).map(|s| n.log.leaf(s).unwrap()).collect();
    let mut blocks = merkle::BlockLog::new();
    for l in &leaves {
        blocks.append(*l);
    }
    let source = |b: u64| -> Result<Vec<Hash>, String> {
        Ok(leaves[b as usize * 256..(b as usize + 1) * 256].to_vec())
    };
    for range in [0..0, 3..30, 250..260, 700..1000] {
        let stored: Vec<(u64, Reading)> = range
            .clone()
            .map(|s| (s, n.readings[s as usize].clone()))
            .collect();
        let want = Bundle::export_stored(&n.log, &n.notes, range.clone(), stored.clone()).unwrap();
        let got =
            Bundle::export_stored(blocks.prover(source), &n.notes, range.clone(), stored).unwrap();
        assert_eq!(got.to_json().unwrap(), want.to_json().unwrap(), "{range:?}");
        assert!(verify(&got, &vkey()).is_clean());
    }
    // A stored leaf that is not what was sealed: the export says where.
    let mut bad = leaves.clone();
    bad[260][5] ^= 1;
    let e = Bundle::export_stored(
        blocks.prover(|b: u64| -> Result<Vec<Hash>, String> {
            Ok(bad[b as usize * 256..(b as usize + 1) * 256].to_vec())
        }),
        &n.notes,
        0..10,
        [],
    )
    .unwrap_err();
    assert!(
        matches!(e, SealError::Log(ref m) if m.contains("block 1")),
        "{e}"
    );
}

#[test]
fn a_selection_of_one_things_readings_verifies_and_an_altered_one_does_not() {
    let mut b = bundle();
    b.entries.retain(|e| e.reading.thing() == "thing-1");
    assert!(!b.entries.is_empty());
    assert!(
        !verify(&b, &vkey()).is_clean(),
        "the other seqs are dropped"
    );
    assert_eq!(verify_selection(&b, &vkey()), vec![]);
    let mut altered = b.clone();
    altered.entries[0].reading = reading(99);
    let p = verify_selection(&altered, &vkey());
    assert!(matches!(p.as_slice(), [Problem::Altered { .. }]), "{p:?}");
    let other = verifier_key(NAME, &SigningKey::from_bytes(&[8; 32]).verifying_key()).unwrap();
    assert!(
        !verify_selection(&b, &other).is_empty(),
        "another node's key"
    );
}
