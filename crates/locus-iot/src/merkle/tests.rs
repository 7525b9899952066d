use super::*;
use proptest::prelude::*;

fn hx(s: &str) -> Hash {
    let mut out = [0u8; 32];
    assert_eq!(s.len(), 64, "{s}");
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

// Test vectors of the certificate-transparency / transparency-dev Merkle
// tree (github.com/transparency-dev/merkle, testonly/constants.go and
// proof/verify_test.go).
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Roots of the trees over the first 0..=8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Hashes of every complete subtree of the 8-leaf tree, by level.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// (leaf index, tree size, audit path).
const INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_log() -> MerkleLog {
    let mut log = MerkleLog::new();
    for l in LEAVES {
        log.append_data(l);
    }
    log
}

fn hashes(v: &[&str]) -> Vec<Hash> {
    v.iter().map(|s| hx(s)).collect()
}

// --- An independent implementation, straight from the RFC 6962 text. ---

fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Sha256::digest([]).into(),
        1 => d[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(ref_mth(&d[..k]));
            h.update(ref_mth(&d[k..]));
            h.finalize().into()
        }
    }
}

fn ref_k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = ref_k(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = ref_k(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn fake_leaves(n: usize, seed: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&[seed, (i >> 8) as u8, i as u8]))
        .collect()
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(EMPTY_ROOT, hx(ROOTS[0]));
    assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
    let log = MerkleLog::new();
    assert_eq!(log.size(), 0);
    assert_eq!(log.root(0), Ok(EMPTY_ROOT));
    assert_eq!(log.current_root(), EMPTY_ROOT);
    assert_eq!(Frontier::new().root(), EMPTY_ROOT);
}

#[test]
fn roots_match_the_ct_vectors() {
    let log = vector_log();
    for (size, want) in ROOTS.iter().enumerate() {
        assert_eq!(log.root(size as u64), Ok(hx(want)), "size {size}");
    }
    assert_eq!(log.current_root(), hx(ROOTS[8]));
    assert_eq!(
        log.root(9),
        Err(MerkleError::SizeBeyondLog { size: 9, len: 8 })
    );
}

#[test]
fn subtree_hashes_match_the_ct_vectors() {
    let log = vector_log();
    for (level, row) in NODES.iter().enumerate() {
        let n = 1u64 << level;
        for (i, want) in row.iter().enumerate() {
            assert_eq!(
                log.range_hash(i as u64 * n, n),
                hx(want),
                "level {level} #{i}"
            );
        }
    }
    for (i, l) in LEAVES.iter().enumerate() {
        assert_eq!(log.leaf(i as u64), Some(leaf_hash(l)));
    }
    assert_eq!(log.leaf(8), None);
}

#[test]
fn inclusion_proofs_match_the_ct_vectors() {
    let log = vector_log();
    for (index, size, path) in INCLUSION {
        let want = hashes(path);
        assert_eq!(log.inclusion_proof(index, size).unwrap(), want);
        let leaf = leaf_hash(LEAVES[index as usize]);
        let root = hx(ROOTS[size as usize]);
        verify_inclusion(&leaf, index, size, &want, &root).unwrap();
        assert_eq!(root_from_inclusion(&leaf, index, size, &want), Ok(root));
    }
    // A single-leaf tree: the empty path, root = leaf.
    let leaf = leaf_hash(LEAVES[0]);
    assert_eq!(log.inclusion_proof(0, 1).unwrap(), Vec::<Hash>::new());
    verify_inclusion(&leaf, 0, 1, &[], &hx(ROOTS[1])).unwrap();
    assert_eq!(
        log.inclusion_proof(8, 8),
        Err(MerkleError::IndexOutOfRange { index: 8, size: 8 })
    );
}

#[test]
fn consistency_proofs_match_the_ct_vectors() {
    let log = vector_log();
    for (old, new, path) in CONSISTENCY {
        let want = hashes(path);
        assert_eq!(
            log.consistency_proof(old, new).unwrap(),
            want,
            "{old}->{new}"
        );
        verify_consistency(
            old,
            new,
            &hx(ROOTS[old as usize]),
            &hx(ROOTS[new as usize]),
            &want,
        )
        .unwrap();
    }
    assert_eq!(
        log.consistency_proof(5, 4),
        Err(MerkleError::OldAfterNew { old: 5, new: 4 })
    );
}

/// The corruptions of the transparency-dev verifier tests: each must fail.
#[test]
fn corrupted_inclusion_proofs_fail() {
    let some = hx("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, path) in INCLUSION {
        let proof = hashes(path);
        let leaf = leaf_hash(LEAVES[index as usize]);
        let root = hx(ROOTS[size as usize]);
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (index.wrapping_sub(1), size, leaf, root, proof.clone()),
            (index + 1, size, leaf, root, proof.clone()),
            (index ^ 2, size, leaf, root, proof.clone()),
            (index, size * 2, leaf, root, proof.clone()),
            (index, size / 2, leaf, root, proof.clone()),
            (index, size, leaf_hash(b"WrongLeaf"), root, proof.clone()),
            (index, size, leaf, EMPTY_ROOT, proof.clone()),
            (index, size, leaf, some, proof.clone()),
            (
                index,
                size,
                leaf,
                root,
                [proof.clone(), vec![root]].concat(),
            ),
            (
                index,
                size,
                leaf,
                root,
                [vec![root], proof.clone()].concat(),
            ),
            (index, size, leaf, root, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i][0] ^= 8;
            probes.push((index, size, leaf, root, p));
        }
        if proof.len() > 1 {
            let mut p = proof.clone();
            p.insert(1, some);
            probes.push((index, size, leaf, root, p));
        }
        for (n, (i, s, l, r, p)) in probes.iter().enumerate() {
            assert!(
                verify_inclusion(l, *i, *s, p, r).is_err(),
                "probe {n} verified for leaf {index} of {size}"
            );
        }
    }
}

#[test]
fn corrupted_consistency_proofs_fail() {
    for (old, new, path) in CONSISTENCY {
        let proof = hashes(path);
        if proof.is_empty() {
            continue;
        }
        let r1 = hx(ROOTS[old as usize]);
        let r2 = hx(ROOTS[new as usize]);
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (old - 1, new, r1, r2, proof.clone()),
            (old + 1, new, r1, r2, proof.clone()),
            (old ^ 2, new, r1, r2, proof.clone()),
            (old, new * 2, r1, r2, proof.clone()),
            (old, new / 2, r1, r2, proof.clone()),
            (old, new, leaf_hash(b"WrongRoot"), r2, proof.clone()),
            (old, new, r1, leaf_hash(b"WrongRoot"), proof.clone()),
            (old, new, r2, r1, proof.clone()),
            (old, new, r1, r2, vec![]),
            (old, new, r1, r2, [proof.clone(), vec![r1]].concat()),
            (old, new, r1, r2, [proof.clone(), vec![r2]].concat()),
            (old, new, r1, r2, [vec![r1], proof.clone()].concat()),
            (old, new, r1, r2, [vec![r2], proof.clone()].concat()),
            (old, new, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (old, new, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i][0] ^= 16;
            probes.push((old, new, r1, r2, p));
        }
        for (n, (o, w, a, b, p)) in probes.iter().enumerate() {
            assert!(
                verify_consistency(*o, *w, a, b, p).is_err(),
                "probe {n} verified for {old}->{new}"
            );
        }
    }
}

#[test]
fn trivial_consistency_cases() {
    let r = hx(ROOTS[3]);
    // Same size: empty proof, same root.
    verify_consistency(3, 3, &r, &r, &[]).unwrap();
    assert!(verify_consistency(3, 3, &r, &EMPTY_ROOT, &[]).is_err());
    assert!(verify_consistency(3, 3, &r, &r, &[r]).is_err());
    // From the empty tree: empty proof, empty root.
    verify_consistency(0, 3, &EMPTY_ROOT, &r, &[]).unwrap();
    verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
    assert!(verify_consistency(0, 3, &r, &r, &[]).is_err());
    assert!(verify_consistency(0, 3, &EMPTY_ROOT, &r, &[r]).is_err());
    // Time travel.
    assert_eq!(
        verify_consistency(4, 3, &r, &r, &[]),
        Err(ProofError::OldAfterNew { old: 4, new: 3 })
    );
    // A real proof needs hashes.
    assert!(verify_consistency(1, 2, &hx(ROOTS[1]), &hx(ROOTS[2]), &[]).is_err());
}

#[test]
fn inclusion_of_nothing_fails() {
    let some = leaf_hash(b"x");
    for (index, size) in [(0, 0), (1, 0), (2, 1)] {
        assert_eq!(
            verify_inclusion(&some, index, size, &[], &EMPTY_ROOT),
            Err(ProofError::IndexOutOfRange { index, size })
        );
    }
    verify_inclusion(&some, 0, 1, &[], &some).unwrap();
    assert!(verify_inclusion(&some, 0, 1, &[], &EMPTY_ROOT).is_err());
}

#[test]
fn frontier_matches_the_ct_compact_trees() {
    // transparency-dev testonly.CompactTrees: the subtree roots of each size.
    let n = |l: usize, i: usize| hx(NODES[l][i]);
    let want: [Vec<Hash>; 9] = [
        vec![],
        vec![n(0, 0)],
        vec![n(1, 0)],
        vec![n(1, 0), n(0, 2)],
        vec![n(2, 0)],
        vec![n(2, 0), n(0, 4)],
        vec![n(2, 0), n(1, 2)],
        vec![n(2, 0), n(1, 2), n(0, 6)],
        vec![n(3, 0)],
    ];
    let mut f = Frontier::new();
    assert_eq!(f.hashes(), &want[0][..]);
    for (i, l) in LEAVES.iter().enumerate() {
        assert_eq!(f.append(leaf_hash(l)), i as u64);
        assert_eq!(f.hashes(), &want[i + 1][..], "size {}", i + 1);
        assert_eq!(f.root(), hx(ROOTS[i + 1]));
    }
    let back = Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap();
    assert_eq!(back, f);
    assert_eq!(Frontier::from_parts(7, vec![n(0, 0)]), None);
}

#[test]
fn roots_match_the_reference_up_to_70_leaves() {
    let leaves = fake_leaves(70, 1);
    let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
    for size in 0..=70usize {
        assert_eq!(log.root(size as u64).unwrap(), ref_mth(&leaves[..size]));
    }
}

// Each case checks every proof of every prefix of one log: about 20,000
// proofs for 200 leaves, so few cases.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn every_inclusion_proof_verifies(n in 1usize..=200, seed in any::<u8>()) {
        let leaves = fake_leaves(n, seed);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        for size in 1..=n as u64 {
            let root = log.root(size).unwrap();
            for index in 0..size {
                let proof = log.inclusion_proof(index, size).unwrap();
                prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &proof, &root).is_ok());
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies(n in 0usize..=200, seed in any::<u8>()) {
        let leaves = fake_leaves(n, seed);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let roots: Vec<Hash> = (0..=n as u64).map(|s| log.root(s).unwrap()).collect();
        for new in 0..=n as u64 {
            for old in 0..=new {
                let proof = log.consistency_proof(old, new).unwrap();
                prop_assert!(
                    verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &proof).is_ok(),
                    "{} -> {}", old, new
                );
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frontier_and_log_agree(n in 0usize..=300, seed in any::<u8>()) {
        let mut log = MerkleLog::new();
        let mut f = Frontier::new();
        for l in fake_leaves(n, seed) {
            prop_assert_eq!(log.append(l), f.append(l));
            prop_assert_eq!(log.current_root(), f.root());
        }
        prop_assert_eq!(log.size(), f.size());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn proofs_match_the_reference(n in 1usize..=100, a in any::<u64>(), b in any::<u64>(), seed in any::<u8>()) {
        let leaves = fake_leaves(n, seed);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let size = 1 + (a % n as u64) as usize;
        let index = (b % size as u64) as usize;
        prop_assert_eq!(log.inclusion_proof(index as u64, size as u64).unwrap(), ref_path(index, &leaves[..size]));
        let old = 1 + index;
        let want = if old == size { vec![] } else { ref_subproof(old, &leaves[..size], true) };
        prop_assert_eq!(log.consistency_proof(old as u64, size as u64).unwrap(), want);
    }

    #[test]
    fn a_flipped_byte_breaks_an_inclusion_proof(
        n in 1usize..=200, a in any::<u64>(), b in any::<u64>(),
        what in 0u8..3, pos in any::<u64>(), bit in 0u8..8,
    ) {
        let leaves = fake_leaves(n, 7);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let size = 1 + a % n as u64;
        let index = b % size;
        let mut leaf = leaves[index as usize];
        let mut proof = log.inclusion_proof(index, size).unwrap();
        let mut root = log.root(size).unwrap();
        let byte = (pos % 32) as usize;
        match (what, proof.is_empty()) {
            (0, _) | (1, true) => leaf[byte] ^= 1 << bit,
            (1, false) => {
                let i = (pos / 32 % proof.len() as u64) as usize;
                proof[i][byte] ^= 1 << bit;
            }
            _ => root[byte] ^= 1 << bit,
        }
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_err());
    }

    #[test]
    fn a_flipped_byte_breaks_a_consistency_proof(
        n in 2usize..=200, a in any::<u64>(), b in any::<u64>(),
        what in 0u8..3, pos in any::<u64>(), bit in 0u8..8,
    ) {
        let leaves = fake_leaves(n, 9);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let new = 2 + a % (n as u64 - 1);
        let old = 1 + b % (new - 1);
        let mut proof = log.consistency_proof(old, new).unwrap();
        let mut old_root = log.root(old).unwrap();
        let mut new_root = log.root(new).unwrap();
        let byte = (pos % 32) as usize;
        match what {
            0 => old_root[byte] ^= 1 << bit,
            1 => new_root[byte] ^= 1 << bit,
            _ => {
                let i = (pos / 32 % proof.len() as u64) as usize;
                proof[i][byte] ^= 1 << bit;
            }
        }
        prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_err());
    }

    #[test]
    fn a_wrong_index_or_size_breaks_an_inclusion_proof(n in 2usize..=120, a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        let leaves = fake_leaves(n, 3);
        let log = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let size = 2 + a % (n as u64 - 1);
        let index = b % size;
        let proof = log.inclusion_proof(index, size).unwrap();
        let root = log.root(size).unwrap();
        let other = c % size;
        if other != index {
            prop_assert!(verify_inclusion(&leaves[index as usize], other, size, &proof, &root).is_err());
            // The leaf moved: a reordered reading does not verify at its old place.
            prop_assert!(verify_inclusion(&leaves[other as usize], index, size, &proof, &root).is_err());
        }
    }
}
