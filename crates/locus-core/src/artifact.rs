//! Artifacts: content-addressed blobs named by their CID.
//!
//! An [`ArtifactId`] is a CIDv1 with the `raw` codec (0x55) and a BLAKE3
//! multihash (0x1e, 32 bytes), written in multibase base32 (lower case,
//! prefix `b`), e.g. `bafkr4i…`. Why these choices:
//! - CIDv1 + multibase is what IPFS and Filecoin tools print and parse, so
//!   an artifact's name means the same thing outside locus.
//! - `raw`: the bytes are the artifact itself, with no IPLD wrapping; a
//!   file's CID is a function of its bytes alone.
//! - BLAKE3: its tree hash is what lets a node verify a download chunk by
//!   chunk as it streams (the `bao` encoding), and it is fast enough to
//!   hash at disk speed.
//!
//! In workload specs an artifact is named `cid:<cid>`.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use multihash::Multihash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Multicodec of raw bytes.
pub const RAW_CODEC: u64 = 0x55;
/// Multicodec of a 32-byte BLAKE3 digest.
pub const BLAKE3_CODE: u64 = 0x1e;
/// The prefix that marks an artifact in a workload's `source`.
pub const SOURCE_PREFIX: &str = "cid:";

/// The name of an artifact: the BLAKE3 digest of its bytes, as a CID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactId([u8; 32]);

/// Why a string is not an artifact id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactIdError {
    #[error("{0:?} is not a CID: {1}")]
    NotACid(String, String),
    #[error("{0:?} is a CIDv0; artifacts are CIDv1 (base32, starting with 'b')")]
    Version0(String),
    #[error("{cid:?} has codec 0x{codec:x}; artifacts use raw (0x55)")]
    Codec { cid: String, codec: u64 },
    #[error("{cid:?} is hashed with multihash 0x{code:x}; artifacts use blake3 (0x1e, 32 bytes)")]
    Hash { cid: String, code: u64 },
}

impl ArtifactId {
    /// The id of content whose BLAKE3 digest is `digest`.
    pub fn from_digest(digest: [u8; 32]) -> ArtifactId {
        ArtifactId(digest)
    }

    /// Hash `bytes` (for small content; large content is hashed as it streams).
    pub fn of(bytes: &[u8]) -> ArtifactId {
        ArtifactId(*blake3::hash(bytes).as_bytes())
    }

    /// The BLAKE3 digest of the content.
    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The CID.
    pub fn to_cid(&self) -> Cid {
        // A 32-byte digest always fits a 64-byte multihash.
        let mh = Multihash::<64>::wrap(BLAKE3_CODE, &self.0).expect("32 bytes fit in 64");
        Cid::new_v1(RAW_CODEC, mh)
    }

    /// The artifact a workload `source` names, if it names one
    /// (`cid:<cid>`); `None` for a path or image reference.
    pub fn from_source(source: &str) -> Option<Result<ArtifactId, ArtifactIdError>> {
        source.strip_prefix(SOURCE_PREFIX).map(str::parse)
    }
}

impl FromStr for ArtifactId {
    type Err = ArtifactIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let cid =
            Cid::try_from(s).map_err(|e| ArtifactIdError::NotACid(s.to_owned(), e.to_string()))?;
        if cid.version() == cid::Version::V0 {
            return Err(ArtifactIdError::Version0(s.to_owned()));
        }
        if cid.codec() != RAW_CODEC {
            return Err(ArtifactIdError::Codec {
                cid: s.to_owned(),
                codec: cid.codec(),
            });
        }
        let mh = cid.hash();
        let digest: [u8; 32] = match (mh.code(), <[u8; 32]>::try_from(mh.digest())) {
            (BLAKE3_CODE, Ok(d)) => d,
            (code, _) => {
                return Err(ArtifactIdError::Hash {
                    cid: s.to_owned(),
                    code,
                });
            }
        };
        Ok(ArtifactId(digest))
    }
}

impl fmt::Display for ArtifactId {
    /// Multibase base32 (lower case), the CIDv1 default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_cid())
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactId({self})")
    }
}

impl Serialize for ArtifactId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArtifactId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for ArtifactId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "CIDv1, raw codec, BLAKE3 multihash, base32 (e.g. bafkr4i…)",
            ))
            .pattern(Some(CID_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for ArtifactId {}

/// What every artifact id looks like as text: `b` + base32 of
/// `01 55 1e 20` + 32 digest bytes (36 bytes → 58 characters). The prefix
/// fixes the first 6 characters and 2 bits of the 7th; the last one
/// carries 3 bits and 2 zero bits of padding.
pub const CID_PATTERN: &str = "^bafkr4i[a-h][a-z2-7]{50}[aeimquy4]$";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_empty_artifact_has_a_known_cid() {
        let id = ArtifactId::of(b"");
        let text = id.to_string();
        assert!(text.starts_with("bafkr4i"), "{text}");
        assert_eq!(text.len(), 59);
        assert_eq!(text.parse::<ArtifactId>().unwrap(), id);
    }

    #[test]
    fn other_cids_are_refused_with_the_reason() {
        // A CIDv0 (sha2-256, dag-pb).
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        assert!(matches!(
            v0.parse::<ArtifactId>(),
            Err(ArtifactIdError::Version0(_))
        ));
        // A CIDv1 raw sha2-256.
        let sha = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
        assert!(matches!(
            sha.parse::<ArtifactId>(),
            Err(ArtifactIdError::Hash { code: 0x12, .. })
        ));
        // dag-pb codec with a blake3 hash.
        let mh = Multihash::<64>::wrap(BLAKE3_CODE, &[7; 32]).unwrap();
        let pb = Cid::new_v1(0x70, mh).to_string();
        assert!(matches!(
            pb.parse::<ArtifactId>(),
            Err(ArtifactIdError::Codec { codec: 0x70, .. })
        ));
        assert!(matches!(
            "hello".parse::<ArtifactId>(),
            Err(ArtifactIdError::NotACid(..))
        ));
    }

    #[test]
    fn sources_name_artifacts_with_a_prefix() {
        let id = ArtifactId::of(b"module");
        let s = format!("cid:{id}");
        assert_eq!(ArtifactId::from_source(&s), Some(Ok(id)));
        assert_eq!(ArtifactId::from_source("/opt/app.wasm"), None);
        assert!(matches!(ArtifactId::from_source("cid:nope"), Some(Err(_))));
    }

    proptest! {
        #[test]
        fn every_digest_round_trips_and_matches_the_pattern(d in any::<[u8; 32]>()) {
            let id = ArtifactId::from_digest(d);
            let text = id.to_string();
            prop_assert_eq!(text.parse::<ArtifactId>().unwrap(), id);
            let b32 = |c: char| c.is_ascii_lowercase() || ('2'..='7').contains(&c);
            let re_ok = text.len() == 59
                && text.starts_with("bafkr4i")
                && ('a'..='h').contains(&text.as_bytes()[7].into())
                && text[8..58].chars().all(b32)
                && "aeimquy4".contains(&text[58..]);
            prop_assert!(re_ok, "{}", text);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ArtifactId>(&json).unwrap(), id);
        }
    }
}
