//! Documents too large for one fabric record (a workload's spec, a thing),
//! published as numbered chunks next to a small record that names how many
//! there are and how to check them.

use std::ops::Range;

use crate::udp::FabricHandle;

/// Publish `chunks` under `key(0)`, `key(1)`, … and delete the chunks
/// `n..old` that an older, longer version left; returns `n`. A chunk the
/// fabric refuses is logged: readers find the document incomplete (its
/// digest does not match) and wait for the next version.
pub async fn publish(
    fabric: &FabricHandle,
    key: impl Fn(usize) -> String,
    chunks: impl IntoIterator<Item = Vec<u8>>,
    old: usize,
) -> usize {
    let mut n = 0;
    for c in chunks {
        if let Err(e) = fabric.publish(&key(n), Some(c)).await {
            tracing::warn!(key = %key(n), error = %e, "cannot publish a chunk");
        }
        n += 1;
    }
    delete(fabric, key, n..old).await;
    n
}

/// Delete the chunks `range`.
pub async fn delete(fabric: &FabricHandle, key: impl Fn(usize) -> String, range: Range<usize>) {
    for i in range {
        let _ = fabric.publish(&key(i), None).await;
    }
}

/// The bytes of the chunks `key/0` … `key/{n-1}` that `get` finds, in
/// order; `None` while one is missing (still on its way). The caller
/// checks them against the digest its header names.
pub fn collect<'a>(get: impl Fn(&str) -> Option<&'a [u8]>, key: &str, n: usize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend_from_slice(get(&format!("{key}/{i}"))?);
    }
    Some(bytes)
}
