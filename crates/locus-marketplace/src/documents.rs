//! Market records on the fabric. A signed record is larger than one
//! fabric record, so each is a header `key` (`{n, digest}`) and its bytes
//! in chunks `key/0`, `key/1`, …; a reader takes it once every chunk is
//! there and the digest matches.

use std::collections::BTreeMap;

use locus_fabric::udp::FabricHandle;
use serde::{Deserialize, Serialize};

/// Bytes per chunk (a fabric record holds at most 900).
pub(crate) const CHUNK: usize = 800;
/// Most chunks of one document: the largest settlement (48 KiB).
pub(crate) const MAX_CHUNKS: usize = locus_market::settle::MAX_SETTLEMENT_BYTES.div_ceil(CHUNK);

/// Offers and requests: `mkt/e/<id>`.
pub(crate) const ENTRY_PREFIX: &str = "mkt/e/";
/// The last round this node cleared: `mkt/r`.
pub(crate) const ROUND_KEY: &str = "mkt/r";
/// Contracts this node is a party to: `mkt/c/<id>`.
pub(crate) const CONTRACT_PREFIX: &str = "mkt/c/";
/// This node's signed observation that a customer is dead:
/// `mkt/seen/<node>`.
pub(crate) const OBSERVATION_PREFIX: &str = "mkt/seen/";
/// Receipts this node completed (signed second): `mkt/l/<hash>`.
pub(crate) const RECEIPT_PREFIX: &str = "mkt/l/";
/// Settlements this node completed: `mkt/s/<contract>`.
pub(crate) const SETTLEMENT_PREFIX: &str = "mkt/s/";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    n: u32,
    digest: String,
}

/// Publish `bytes` under `key`: the chunks, then the header. Answers the
/// number of chunks, or `None` when the document is too large.
pub(crate) async fn publish(
    fabric: &FabricHandle,
    key: &str,
    bytes: &[u8],
    old_chunks: usize,
) -> Option<usize> {
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    if chunks.len() > MAX_CHUNKS {
        tracing::warn!(
            key,
            bytes = bytes.len(),
            "market record too large to publish"
        );
        return None;
    }
    let n =
        locus_fabric::chunks::publish(fabric, |i| format!("{key}/{i}"), chunks, old_chunks).await;
    let header = Header {
        n: n as u32,
        digest: blake3::hash(bytes).to_hex().to_string(),
    };
    if let Err(e) = fabric.publish_json(key, &header).await {
        tracing::warn!(key, error = %e, "cannot publish a market record");
    }
    Some(n)
}

/// Remove a document: its header first (readers stop taking it), then
/// its chunks.
pub(crate) async fn unpublish(fabric: &FabricHandle, key: &str, chunks: usize) {
    let _ = fabric.publish(key, None).await;
    locus_fabric::chunks::delete(fabric, |i| format!("{key}/{i}"), 0..chunks).await;
}

/// The documents under `prefix` (or the one at `prefix` when it is a whole
/// key) among one owner's records: `(key, bytes)` of each complete one.
pub(crate) fn assemble(
    records: &BTreeMap<String, Vec<u8>>,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (key, value) in records.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        let rest = &key[prefix.len()..];
        if rest.contains('/') {
            continue;
        }
        let Ok(h) = serde_json::from_slice::<Header>(value) else {
            continue;
        };
        if h.n as usize > MAX_CHUNKS {
            continue;
        }
        let get = |k: &str| records.get(k).map(Vec::as_slice);
        if let Some(bytes) = locus_fabric::chunks::collect(get, key, h.n as usize)
            .filter(|b| blake3::hash(b).to_hex().as_str() == h.digest)
        {
            out.push((key.clone(), bytes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(docs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (key, bytes) in docs {
            let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
            for (i, c) in chunks.iter().enumerate() {
                out.insert(format!("{key}/{i}"), c.to_vec());
            }
            let h = Header {
                n: chunks.len() as u32,
                digest: blake3::hash(bytes).to_hex().to_string(),
            };
            out.insert((*key).to_owned(), serde_json::to_vec(&h).unwrap());
        }
        out
    }

    #[test]
    fn documents_assemble_only_when_whole() {
        let big = vec![7u8; 2000];
        let mut r = records(&[
            ("mkt/e/a", &big),
            ("mkt/e/b", b"small"),
            ("mkt/r", b"round"),
        ]);
        let got = assemble(&r, ENTRY_PREFIX);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("mkt/e/a".to_owned(), big.clone()));
        assert_eq!(
            assemble(&r, ROUND_KEY),
            vec![("mkt/r".to_owned(), b"round".to_vec())]
        );
        // A chunk missing, or of another version: not yet.
        r.remove("mkt/e/a/1");
        assert_eq!(assemble(&r, ENTRY_PREFIX).len(), 1);
        r.insert("mkt/e/a/1".into(), vec![8u8; 800]);
        assert_eq!(assemble(&r, ENTRY_PREFIX).len(), 1);
    }
}
