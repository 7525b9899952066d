//! `locus verify` on real bundle files: an honest bundle is clean (exit
//! 0); one altered, dropped or reordered reading is named (exit 1); the
//! wrong key and a file that is not a bundle are refused with the reason.

use ed25519_dalek::SigningKey;
use locus_iot::{Bundle, Reading, SealLog, Value, checkpoint};
use locus_testkit::locus;
use serde_json::Value as Json;

const ORIGIN: &str = "locus.test/node/verify";

/// A log of 40 readings with checkpoints at 16 and 40, its signing key's
/// verifier key, and the bundle of seq 5..35 as JSON.
fn bundle() -> (String, Json) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut log = SealLog::new();
    let mut readings = Vec::new();
    let mut notes = Vec::new();
    for i in 0..40 {
        let r = Reading::new(
            "greenhouse-1",
            "temperature",
            Value::Number(20.0 + i as f64 / 10.0),
            Some("Cel".to_owned()),
            1_795_000_000_000 + i * 1000,
        )
        .unwrap();
        log.append(r.clone());
        readings.push(r);
        if log.size() == 16 || log.size() == 40 {
            notes.push(checkpoint::sign(&log.checkpoint(ORIGIN), ORIGIN, &key).unwrap());
        }
    }
    let b = Bundle::export(&log, &notes, 5..35, &readings[5..35]).unwrap();
    let vkey = checkpoint::verifier_key(ORIGIN, &key.verifying_key()).unwrap();
    (vkey, serde_json::from_str(&b.to_json().unwrap()).unwrap())
}

fn run(json: &Json, key: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    let out = locus(&["verify", path.to_str().unwrap(), "--key", key]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_honest_bundle_is_clean() {
    let (key, b) = bundle();
    let (code, text) = run(&b, &key);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("clean") && text.contains("30 reading(s)"),
        "{text}"
    );
}

#[test]
fn an_altered_reading_is_named() {
    let (key, mut b) = bundle();
    // Position 7 is seq 12: its value changes after the fact.
    b["entries"][7]["reading"]["value"] = serde_json::json!({ "number": 99.9 });
    let (code, text) = run(&b, &key);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("seq 12") && text.contains("altered"),
        "{text}"
    );
    assert!(text.contains("1 problem(s)"), "only that reading: {text}");
}

#[test]
fn a_dropped_reading_is_named() {
    let (key, mut b) = bundle();
    b["entries"].as_array_mut().unwrap().remove(10); // seq 15
    let (code, text) = run(&b, &key);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("15") && text.contains("dropped"), "{text}");
}

#[test]
fn reordered_readings_are_named() {
    let (key, mut b) = bundle();
    b["entries"].as_array_mut().unwrap().swap(3, 20); // seq 8 and seq 25
    let (code, text) = run(&b, &key);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 8") && text.contains("seq 25"), "{text}");
    assert!(text.contains("order"), "{text}");
}

#[test]
fn the_wrong_key_and_a_non_bundle_are_refused() {
    let (_, b) = bundle();
    let other = SigningKey::from_bytes(&[9; 32]);
    let wrong = checkpoint::verifier_key(ORIGIN, &other.verifying_key()).unwrap();
    let (code, text) = run(&b, &wrong);
    assert_eq!(code, 1, "{text}");
    let (key, _) = bundle();
    let (code, text) = run(&serde_json::json!({ "hello": 1 }), &key);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not a valid bundle"), "{text}");
    let out = locus(&["verify", "/nonexistent/bundle.json", "--key", &key]);
    assert_eq!(out.status.code(), Some(2));
}
