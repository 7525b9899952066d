//! A long seal log on a real agent: 100,000 readings sealed straight into
//! a data dir (the generator `locus bench seal` uses), served after a
//! start that loads block roots, not leaves; its proofs and a bundle
//! verify, and come back byte for byte after a SIGKILL and restart and
//! after an older store (leaves without block roots) is upgraded at start
//! to the same roots. A block root that does not match its leaves stops
//! the start, naming the block.

use std::path::Path;
use std::time::Duration;

use locus_iot::merkle::{self, BLOCK_LEAVES, Hash};
use locus_iot::seal::{self, Bundle, Sealed};
use locus_iot::{Reading, checkpoint};
use locus_readings::bulk;
use locus_store::Store;
use locus_testkit::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const N: u64 = 100_000;
/// A checkpoint is signed here too (not at a block's end).
const MID: u64 = 50_037;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A data dir holding `N` sealed readings, as its node would have written
/// them, with checkpoints at `MID` and `N`.
fn generate(data: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .unwrap();
    let (key, _) = locus_trust::identity::load_or_create(data).unwrap();
    let node = locus_core::NodeId::from_public_key(&key.verifying_key());
    runtime().block_on(async {
        let store = Store::open(data).unwrap();
        store.bind_node(node).await.unwrap();
        let notes = bulk::seal_synthetic(store.clone(), &key, N, &[MID], 20_000)
            .await
            .unwrap();
        assert_eq!(notes.len(), 2);
        store.close().await.unwrap();
    });
}

/// Run `sql` on the store of `data` (no agent on it) and return the block
/// roots it then holds.
fn block_roots_after(data: &Path, sql: &'static str) -> Vec<Vec<u8>> {
    runtime().block_on(async {
        let store = Store::open(data).unwrap();
        let roots = store
            .call(move |c| {
                c.execute_batch(sql)?;
                let mut stmt = c.prepare("SELECT root FROM seal_blocks ORDER BY block")?;
                let roots = stmt
                    .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(roots)
            })
            .await
            .unwrap();
        store.close().await.unwrap();
        roots
    })
}

fn unhex(v: &Value) -> Hash {
    let s = v.as_str().unwrap();
    let b: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

fn unhex_all(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(unhex).collect()
}

fn body(agent: &Agent, path: &str) -> String {
    let r = http().get(agent.url(path)).send().unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.text().unwrap()
}

/// Proofs across blocks and a bundle, each verified here against the
/// signed checkpoints; returns the answers as served.
fn proofs(agent: &Agent) -> Vec<String> {
    let cp = get_json(agent, "/api/v1/readings/checkpoint");
    assert_eq!(cp["log_size"], N);
    assert_eq!(cp["size"], N);
    let vkey = cp["verifier_key"].as_str().unwrap().to_owned();
    let (name, key) = checkpoint::parse_verifier_key(&vkey).unwrap();
    let open = |note: &Value| checkpoint::open(note.as_str().unwrap(), &name, &key).unwrap();
    let mut bodies = Vec::new();
    for (seq, size) in [(0, N), (12_345, N), (N - 1, N), (7, MID), (MID - 1, MID)] {
        let text = body(agent, &format!("/api/v1/readings/{seq}/proof?size={size}"));
        let p: Value = serde_json::from_str(&text).unwrap();
        let tree = open(&p["checkpoint"]);
        assert_eq!(tree.size, size);
        let reading: Reading = serde_json::from_value(p["reading"].clone()).unwrap();
        assert_eq!(reading, bulk::synthetic_reading(seq).unwrap());
        let leaf = Sealed { seq, reading }.leaf_hash();
        assert_eq!(unhex(&p["leaf_hash"]), leaf);
        merkle::verify_inclusion(&leaf, seq, size, &unhex_all(&p["proof"]), &tree.root).unwrap();
        bodies.push(text);
    }
    for (from, to) in [(MID, N), (1000, 99_000), (BLOCK_LEAVES * 7, N)] {
        let text = body(
            agent,
            &format!("/api/v1/readings/consistency?from={from}&to={to}"),
        );
        let c: Value = serde_json::from_str(&text).unwrap();
        merkle::verify_consistency(
            from,
            to,
            &unhex(&c["from_root"]),
            &unhex(&c["to_root"]),
            &unhex_all(&c["proof"]),
        )
        .unwrap();
        if from == MID {
            let (old, new) = (open(&c["from_checkpoint"]), open(&c["to_checkpoint"]));
            assert_eq!(
                (old.root, new.root),
                (unhex(&c["from_root"]), unhex(&c["to_root"]))
            );
        }
        bodies.push(text);
    }
    let text = body(agent, "/api/v1/readings/bundle?start=49900&count=300");
    let bundle = Bundle::from_json(&text).unwrap();
    assert_eq!(bundle.checkpoints.len(), 2);
    let report = seal::verify(&bundle, &vkey);
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 300);
    bodies.push(text);
    bodies
}

#[test]
fn a_long_log_is_served_from_block_roots_and_an_older_store_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    generate(&data);
    let roots = block_roots_after(&data, "");
    assert_eq!(roots.len() as u64, N / BLOCK_LEAVES);

    let mut agent = Agent::start(&data, &[]);
    let first = proofs(&agent);
    let addr = agent.addr;

    // Killed and started again: the same answers, byte for byte.
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    let mut agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    assert_eq!(proofs(&agent), first);
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));

    // A store from before block roots were kept: upgraded at start, to the
    // same roots, with the same answers.
    assert!(block_roots_after(&data, "DELETE FROM seal_blocks").is_empty());
    let mut agent = Agent::spawn(&data, addr, &[]);
    agent.wait_healthy();
    assert_eq!(proofs(&agent), first);
    let logs = agent.logs();
    assert!(
        logs.contains("seal leaves without block roots"),
        "the upgrade is not logged:\n{logs}"
    );
    assert!(logs.contains("percent=100"), "{logs}");
    agent.signal(Signal::SIGKILL);
    agent.wait_exit(Duration::from_secs(10));
    assert_eq!(block_roots_after(&data, ""), roots);

    // The last block's root no longer matches its leaves: no start.
    block_roots_after(
        &data,
        "UPDATE seal_blocks SET root = zeroblob(32) WHERE block = 389",
    );
    let (code, stderr) = agent_fails(&data, &["--listen", &free_addr().to_string()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("root of seal block 389 does not match its leaves (seqs 99584..99840)"),
        "{stderr}"
    );
}
