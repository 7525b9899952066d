//! The directory of tenants and users: each a record signed by the key of
//! the org it belongs to, so any node checks it offline and a node of
//! another org cannot forge it.
//!
//! A record is a [`DirectoryEntry`]: a tenant (its quota and grant) or a
//! user (its role in a tenant), when it was written and whether it is
//! removed. The newest entry of a name wins; at the same second a removal
//! wins (then the greater hash), so two nodes holding the org key converge whatever order the
//! fabric brings their records in. A removed entry stays as a tombstone so
//! an older copy arriving late cannot bring it back.

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::encoding::{self, decode, encode};
use crate::org::{self, OrgId};
use crate::tenant::{Tenant, TenantRef, User, UserName};

/// Domain of the org key's signature over a directory entry.
pub const DIRECTORY_DOMAIN: &[u8] = b"locus/directory/v1\0";
/// Largest directory record accepted, in bytes.
pub const MAX_DIRECTORY_RECORD_BYTES: usize = 2048;
/// Most tenants (tombstones included) a node keeps.
pub const MAX_TENANTS: usize = 4096;
/// Most users (tombstones included) a node keeps.
pub const MAX_USERS: usize = 16384;

/// What a directory entry names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Tenant(Tenant),
    User(User),
}

impl Subject {
    /// The org whose key must sign it.
    pub fn org(&self) -> OrgId {
        match self {
            Subject::Tenant(t) => t.org,
            Subject::User(u) => u.tenant.org,
        }
    }
}

/// One version of a tenant or a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub subject: Subject,
    /// When it was written (unix seconds).
    pub at: u64,
    /// A tombstone: the tenant or user no longer exists.
    pub removed: bool,
}

/// An entry with its org's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDirectoryEntry {
    pub entry: DirectoryEntry,
    #[serde(with = "encoding::bytes")]
    pub signature: [u8; 64],
}

/// Why a directory record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("not a directory record: {0}")]
    Malformed(String),
    #[error("directory record of org {0}: the signature is not its key's")]
    BadSignature(OrgId),
    #[error("directory record of org {0}, which is not admitted")]
    UnknownOrg(OrgId),
    #[error("the directory is full ({0} entries)")]
    Full(usize),
}

impl DirectoryEntry {
    /// Sign with the key of the org it belongs to.
    pub fn sign(self, org_key: &SigningKey) -> SignedDirectoryEntry {
        let signature = org::sign(org_key, DIRECTORY_DOMAIN, &encode(&self));
        SignedDirectoryEntry {
            entry: self,
            signature,
        }
    }

    /// The name the fabric record is kept under: the same for every
    /// version of one tenant or user, different for any other.
    pub fn record_name(&self) -> String {
        let what = match &self.subject {
            Subject::Tenant(t) => format!("tenant\0{}\0{}", t.org, t.name.get()),
            Subject::User(u) => format!(
                "user\0{}\0{}\0{}",
                u.tenant.org,
                u.tenant.name.get(),
                u.name
            ),
        };
        locus_core::hex(&blake3::hash(what.as_bytes()).as_bytes()[..12])
    }

    /// The tenant it names, unless it is a removal.
    fn live_tenant(&self) -> Option<&Tenant> {
        match (&self.subject, self.removed) {
            (Subject::Tenant(t), false) => Some(t),
            _ => None,
        }
    }

    /// The user it names, unless it is a removal.
    fn live_user(&self) -> Option<&User> {
        match (&self.subject, self.removed) {
            (Subject::User(u), false) => Some(u),
            _ => None,
        }
    }

    /// Whether this version replaces `other` of the same name: the later
    /// one, a removal at the same second, and between two versions signed
    /// in the same second the greater hash, so every node ends with the
    /// same version whatever order they arrive in.
    fn supersedes(&self, other: &DirectoryEntry) -> bool {
        let rank = |e: &DirectoryEntry| (e.at, e.removed, *blake3::hash(&encode(e)).as_bytes());
        rank(self) > rank(other)
    }
}

impl SignedDirectoryEntry {
    /// The wire form: postcard of the signed entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode the wire form (at most [`MAX_DIRECTORY_RECORD_BYTES`]); not
    /// checked yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DirectoryError> {
        decode(bytes, MAX_DIRECTORY_RECORD_BYTES).map_err(DirectoryError::Malformed)
    }

    /// Check against the key of the org it names.
    pub fn verify(&self, org_key: &VerifyingKey) -> Result<&DirectoryEntry, DirectoryError> {
        let org = self.entry.subject.org();
        if OrgId::from_public_key(org_key) != org
            || !org::verify(
                org_key,
                DIRECTORY_DOMAIN,
                &encode(&self.entry),
                &self.signature,
            )
        {
            return Err(DirectoryError::BadSignature(org));
        }
        Ok(&self.entry)
    }
}

/// The tenants and users a node knows, newest version of each.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    tenants: BTreeMap<TenantRef, DirectoryEntry>,
    users: BTreeMap<(TenantRef, UserName), DirectoryEntry>,
}

impl Directory {
    /// Take a signed entry checked with `org_key` (the key the org log
    /// holds for its org; `None` when the org is not admitted). Answers
    /// whether it changed what the directory says.
    pub fn take(
        &mut self,
        signed: &SignedDirectoryEntry,
        org_key: Option<&VerifyingKey>,
    ) -> Result<bool, DirectoryError> {
        let org = signed.entry.subject.org();
        let key = org_key.ok_or(DirectoryError::UnknownOrg(org))?;
        let entry = signed.verify(key)?.clone();
        match &entry.subject {
            Subject::Tenant(t) => Self::put(&mut self.tenants, t.reference(), entry, MAX_TENANTS),
            Subject::User(u) => Self::put(
                &mut self.users,
                (u.tenant.clone(), u.name.clone()),
                entry,
                MAX_USERS,
            ),
        }
    }

    fn put<K: Ord>(
        map: &mut BTreeMap<K, DirectoryEntry>,
        key: K,
        entry: DirectoryEntry,
        max: usize,
    ) -> Result<bool, DirectoryError> {
        match map.get(&key) {
            Some(old) if !entry.supersedes(old) => Ok(false),
            Some(_) => {
                map.insert(key, entry);
                Ok(true)
            }
            None if map.len() >= max => Err(DirectoryError::Full(max)),
            None => {
                map.insert(key, entry);
                Ok(true)
            }
        }
    }

    /// When the newest version of `subject`'s name was written, removed
    /// or not: a new version must be later to replace it.
    pub fn newest_at(&self, subject: &Subject) -> Option<u64> {
        match subject {
            Subject::Tenant(t) => self.tenants.get(&t.reference()),
            Subject::User(u) => self.users.get(&(u.tenant.clone(), u.name.clone())),
        }
        .map(|e| e.at)
    }

    /// The tenant as its newest record says, unless removed.
    pub fn tenant(&self, tenant: &TenantRef) -> Option<&Tenant> {
        self.tenants
            .get(tenant)
            .and_then(DirectoryEntry::live_tenant)
    }

    /// Every tenant not removed, by org then name.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants
            .values()
            .filter_map(DirectoryEntry::live_tenant)
    }

    /// Every user not removed, by tenant then name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values().filter_map(DirectoryEntry::live_user)
    }

    /// The user as its newest record says, unless removed.
    pub fn user(&self, tenant: &TenantRef, name: &UserName) -> Option<&User> {
        self.users
            .get(&(tenant.clone(), name.clone()))
            .and_then(DirectoryEntry::live_user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Quota, Role, TenantName};
    use proptest::prelude::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn org(n: u8) -> OrgId {
        OrgId::from_public_key(&key(n).verifying_key())
    }

    fn tenant(n: u8, name: &str, workloads: u64) -> Tenant {
        Tenant {
            name: TenantName::try_from(name.to_owned()).unwrap(),
            org: org(n),
            quota: Quota {
                workloads,
                ..Quota::default()
            },
            grant: Default::default(),
        }
    }

    fn entry(subject: Subject, at: u64, removed: bool) -> DirectoryEntry {
        DirectoryEntry {
            subject,
            at,
            removed,
        }
    }

    #[test]
    fn an_entry_verifies_only_with_its_org_key_and_unaltered() {
        let signed = entry(Subject::Tenant(tenant(1, "acme", 3)), 10, false).sign(&key(1));
        let back = SignedDirectoryEntry::from_bytes(&signed.to_bytes()).unwrap();
        assert!(back.verify(&key(1).verifying_key()).is_ok());
        assert_eq!(
            back.verify(&key(2).verifying_key()),
            Err(DirectoryError::BadSignature(org(1)))
        );
        let mut altered = back.clone();
        if let Subject::Tenant(t) = &mut altered.entry.subject {
            t.quota.workloads = 1_000_000;
        }
        assert!(altered.verify(&key(1).verifying_key()).is_err());
        // Signed by another org's key for this org: refused.
        let forged = entry(Subject::Tenant(tenant(1, "acme", 3)), 10, false).sign(&key(2));
        assert!(forged.verify(&key(1).verifying_key()).is_err());
        assert!(matches!(
            SignedDirectoryEntry::from_bytes(&[0xff; 3000]),
            Err(DirectoryError::Malformed(_))
        ));
        assert!(matches!(
            SignedDirectoryEntry::from_bytes(&[1, 2, 3]),
            Err(DirectoryError::Malformed(_))
        ));
    }

    #[test]
    fn the_newest_version_wins_and_a_removal_stays() {
        let k = key(1).verifying_key();
        let mut d = Directory::default();
        let t = tenant(1, "acme", 3);
        let v1 = entry(Subject::Tenant(t.clone()), 10, false).sign(&key(1));
        let v2 = entry(Subject::Tenant(tenant(1, "acme", 5)), 20, false).sign(&key(1));
        let gone = entry(Subject::Tenant(t.clone()), 30, false);
        let gone = DirectoryEntry {
            removed: true,
            ..gone
        }
        .sign(&key(1));
        assert_eq!(d.take(&v2, Some(&k)), Ok(true));
        assert_eq!(d.take(&v1, Some(&k)), Ok(false), "older");
        assert_eq!(d.tenant(&t.reference()).unwrap().quota.workloads, 5);
        assert_eq!(d.take(&gone, Some(&k)), Ok(true));
        assert_eq!(d.tenant(&t.reference()), None);
        assert_eq!(d.take(&v2, Some(&k)), Ok(false), "late copy stays dead");
        assert_eq!(d.tenants().count(), 0);
        assert_eq!(d.take(&v1, None), Err(DirectoryError::UnknownOrg(org(1))));
    }

    #[test]
    fn users_are_kept_per_tenant() {
        let k = key(1).verifying_key();
        let mut d = Directory::default();
        let acme = tenant(1, "acme", 3).reference();
        let lab = tenant(1, "lab", 3).reference();
        let alice = UserName::try_from("alice".to_owned()).unwrap();
        for (t, role) in [(&acme, Role::Operator), (&lab, Role::Viewer)] {
            let u = User {
                name: alice.clone(),
                tenant: t.clone(),
                role,
            };
            assert_eq!(
                d.take(&entry(Subject::User(u), 1, false).sign(&key(1)), Some(&k)),
                Ok(true)
            );
        }
        assert_eq!(d.users().count(), 2);
        assert_eq!(d.user(&acme, &alice).unwrap().role, Role::Operator);
        assert_eq!(d.user(&lab, &alice).unwrap().role, Role::Viewer);
    }

    proptest! {
        /// Whatever order the versions arrive in, the directory ends with
        /// the same answer: the greatest (at, removed).
        #[test]
        fn any_arrival_order_converges(
            versions in proptest::collection::vec((0u64..5, any::<bool>(), 1u64..50), 1..8),
            seed in any::<u64>(),
        ) {
            let k = key(1).verifying_key();
            let signed: Vec<_> = versions
                .iter()
                .map(|&(at, removed, w)| entry(Subject::Tenant(tenant(1, "acme", w)), at, removed).sign(&key(1)))
                .collect();
            let mut forward = Directory::default();
            for s in &signed {
                forward.take(s, Some(&k)).unwrap();
            }
            let mut shuffled = signed.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut other = Directory::default();
            for s in &shuffled {
                other.take(s, Some(&k)).unwrap();
            }
            let r = tenant(1, "acme", 0).reference();
            let best = versions.iter().map(|&(at, removed, _)| (at, removed)).max().unwrap();
            prop_assert_eq!(forward.tenant(&r).is_none(), best.1);
            prop_assert_eq!(forward.tenant(&r).is_none(), other.tenant(&r).is_none());
            prop_assert_eq!(forward.tenant(&r), other.tenant(&r));
        }
    }
}
