//! The node's access credentials in the data dir, and how a node gets
//! them: by founding an org on its first start, or by enrolling with a
//! join token.
//!
//! Files (all written whole through a temp file and a rename, so a crash
//! leaves the old file or the new one; secrets mode 0600):
//! - `org.key`: the org's ed25519 key (PKCS#8 PEM), on the node that
//!   founded the org only. Whoever holds it enrolls nodes and signs the
//!   org's records.
//! - `node.cert`: this node's certificate, signed by the org key (hex).
//! - `org.log`: the org log this node holds, one entry per line (hex).
//! - `admin.token`: the local admin credential, an org-admin token minted
//!   by this node, on the founding node only; `locus` on the same machine
//!   finds it by itself.
//! - `cluster.key`: the cluster key a join token carried.
//! - `seeds`: the gossip address a join token named, one per line.
//! - `join-uses`: how many machines each join grant enrolled.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use locus_access::cert::{NodeCertificate, NodeRole, SignedNodeCertificate};
use locus_access::join::{EnrollRequest, JoinGrant, JoinToken};
use locus_access::tenant::{Role, TenantName, TenantRef, UserName};
use locus_access::token::Claims;
use locus_access::trust::{cert_from_hex, cert_to_hex, entry_from_hex, entry_to_hex};
use locus_access::{OrgId, OrgLog, SignedOrgEntry};
use serde::{Deserialize, Serialize};

use crate::identity::{self, IdentityError};

pub const ORG_KEY_FILE: &str = "org.key";
pub const CERT_FILE: &str = "node.cert";
pub const ORG_LOG_FILE: &str = "org.log";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
pub const SEEDS_FILE: &str = "seeds";
const JOIN_USES_FILE: &str = "join-uses";

/// How long the local admin credential lives; it is minted again at a
/// start when less than [`ADMIN_TOKEN_RENEW_SECS`] is left.
pub const ADMIN_TOKEN_SECS: u64 = 30 * 24 * 3600;
/// When the local admin credential is renewed.
pub const ADMIN_TOKEN_RENEW_SECS: u64 = 7 * 24 * 3600;
/// How long a node certificate is valid.
pub const CERT_SECS: u64 = 365 * 24 * 3600;
/// How far back a certificate is valid from, for clocks slightly behind.
const CERT_BACKDATE_SECS: u64 = 300;
/// The user named in the local admin credential.
pub const LOCAL_ADMIN: &str = "admin";
/// The tenant every org starts with.
pub const DEFAULT_TENANT: &str = "default";
/// How long an enrollment call may take.
const ENROLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Why the credentials cannot be loaded, made or obtained.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason}; it was left untouched")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] IdentityError),
    #[error("the join token: {0}")]
    Join(String),
    #[error("enrollment at {api} failed: {reason}")]
    Enroll { api: String, reason: String },
    #[error("cannot mint the local admin credential: {0}")]
    Mint(String),
    #[error("no randomness available: {0}")]
    Entropy(String),
}

/// What a node holds after its credentials are settled.
#[derive(Debug)]
pub struct Credentials {
    pub cert: SignedNodeCertificate,
    pub log: OrgLog,
    /// The org key, on the founding node.
    pub org_key: Option<SigningKey>,
    /// Whether this start founded the org or enrolled.
    pub origin: CredentialsOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsOrigin {
    Loaded,
    Founded,
    Enrolled,
}

/// What the enrolling node answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// The new node's certificate (hex).
    pub certificate: String,
    /// The org log (hex entries, genesis first).
    pub org_log: Vec<String>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random<const N: usize>() -> Result<[u8; N], CredentialsError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| CredentialsError::Entropy(e.to_string()))?;
    Ok(b)
}

/// Write `bytes` to `path` whole: temp file, fsync, rename, fsync of the
/// dir. `private` files are mode 0600.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), CredentialsError> {
    let err = |source| CredentialsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    let result = write();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn read_text(path: &Path) -> Result<Option<String>, CredentialsError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn corrupt(path: &Path, reason: impl ToString) -> CredentialsError {
    CredentialsError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Keep the org log in the data dir.
pub fn save_log(data_dir: &Path, log: &OrgLog) -> Result<(), CredentialsError> {
    let text: String = log
        .entries()
        .iter()
        .map(|e| entry_to_hex(e) + "\n")
        .collect();
    write_file(&data_dir.join(ORG_LOG_FILE), text.as_bytes(), false)
}

fn load_log(data_dir: &Path) -> Result<Option<OrgLog>, CredentialsError> {
    let path = data_dir.join(ORG_LOG_FILE);
    let Some(text) = read_text(&path)? else {
        return Ok(None);
    };
    let entries = parse_log(&text).map_err(|e| corrupt(&path, e))?;
    OrgLog::from_entries(entries)
        .map(Some)
        .map_err(|e| corrupt(&path, e))
}

/// Entries from their text form, one hex entry per line.
pub fn parse_log(text: &str) -> Result<Vec<SignedOrgEntry>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| entry_from_hex(l.trim()).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Settle this node's credentials: load them, else enroll with `join`,
/// else found a new org named `org_name`.
pub async fn settle(
    data_dir: &Path,
    node_key: &SigningKey,
    join: Option<&str>,
    org_name: &str,
) -> Result<Credentials, CredentialsError> {
    let cert_path = data_dir.join(CERT_FILE);
    let org_key = identity::load_at(&data_dir.join(ORG_KEY_FILE))?;
    if let Some(text) = read_text(&cert_path)? {
        let cert = cert_from_hex(text.trim()).map_err(|e| corrupt(&cert_path, e))?;
        let log = load_log(data_dir)?.ok_or_else(|| {
            corrupt(
                &data_dir.join(ORG_LOG_FILE),
                "missing, although node.cert exists",
            )
        })?;
        if join.is_some() {
            tracing::info!(
                "already enrolled in org {}; the join token is not used",
                cert.cert.org
            );
        }
        return Ok(Credentials {
            cert,
            log,
            org_key,
            origin: CredentialsOrigin::Loaded,
        });
    }
    if let Some(token) = join {
        return enroll(data_dir, node_key, token).await;
    }
    found(data_dir, node_key, org_key, org_name)
}

/// Found an org: its key (unless one was put in the data dir), the
/// genesis of its log, this node's certificate with every role.
fn found(
    data_dir: &Path,
    node_key: &SigningKey,
    org_key: Option<SigningKey>,
    org_name: &str,
) -> Result<Credentials, CredentialsError> {
    let org_key = match org_key {
        Some(k) => k,
        None => identity::load_or_create_at(&data_dir.join(ORG_KEY_FILE))?.0,
    };
    let log = match load_log(data_dir)? {
        Some(log) => log,
        None => {
            let log = OrgLog::genesis(&org_key, org_name)
                .map_err(|e| CredentialsError::Join(format!("org name {org_name:?}: {e}")))?;
            save_log(data_dir, &log)?;
            log
        }
    };
    let cert = sign_cert(&org_key, node_key, NodeRole::ALL.into_iter().collect())?;
    write_file(
        &data_dir.join(CERT_FILE),
        cert_to_hex(&cert).as_bytes(),
        false,
    )?;
    tracing::info!(org = %cert.cert.org, "founded a new org; its key is in the data dir");
    Ok(Credentials {
        cert,
        log,
        org_key: Some(org_key),
        origin: CredentialsOrigin::Founded,
    })
}

fn sign_cert(
    org_key: &SigningKey,
    node_key: &SigningKey,
    roles: std::collections::BTreeSet<NodeRole>,
) -> Result<SignedNodeCertificate, CredentialsError> {
    sign_cert_for(org_key, &node_key.verifying_key(), roles)
}

fn sign_cert_for(
    org_key: &SigningKey,
    node_key: &ed25519_dalek::VerifyingKey,
    roles: std::collections::BTreeSet<NodeRole>,
) -> Result<SignedNodeCertificate, CredentialsError> {
    let now = now();
    Ok(NodeCertificate::new(
        node_key,
        OrgId::from_public_key(&org_key.verifying_key()),
        roles,
        u64::from_le_bytes(random()?),
        now.saturating_sub(CERT_BACKDATE_SECS),
        now + CERT_SECS,
    )
    .sign(org_key))
}

/// Enroll with a join token: send the node key and its proof to the
/// enrolling node, check what it answers, keep it, the cluster key and
/// the seed.
async fn enroll(
    data_dir: &Path,
    node_key: &SigningKey,
    text: &str,
) -> Result<Credentials, CredentialsError> {
    let token = JoinToken::parse(text).map_err(|e| CredentialsError::Join(e.to_string()))?;
    let grant = &token.grant;
    let api = grant.enroll_api.clone();
    let fail = |reason: String| CredentialsError::Enroll {
        api: api.clone(),
        reason,
    };
    let request = locus_access::join::enroll_request(text.trim(), &grant.id, node_key);
    let client = reqwest::Client::builder()
        .timeout(ENROLL_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .post(format!("http://{api}/api/v1/org/enroll"))
        .json(&request)
        .send()
        .await
        .map_err(|e| fail(format!("no answer: {e}")))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(fail(format!("{status}: {message}")));
    }
    let answer: Enrollment =
        serde_json::from_slice(&body).map_err(|e| fail(format!("unexpected answer: {e}")))?;
    let entries = answer
        .org_log
        .iter()
        .map(|e| entry_from_hex(e).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("org log: {e}")))?;
    let log = OrgLog::from_entries(entries).map_err(|e| fail(format!("org log: {e}")))?;
    let cert = cert_from_hex(&answer.certificate).map_err(|e| fail(e.to_string()))?;
    let org_key = log
        .orgs()
        .key(&grant.org)
        .ok_or_else(|| fail(format!("the org log does not hold org {}", grant.org)))?;
    let key = cert
        .verify(org_key, now())
        .map_err(|e| fail(format!("certificate: {e}")))?;
    if key != node_key.verifying_key() {
        return Err(fail("the certificate is for another node".into()));
    }
    if let Some(k) = grant.cluster_key {
        let hex = locus_fabric::ClusterKey::from_bytes(k).to_hex() + "\n";
        write_file(&data_dir.join(CLUSTER_KEY_FILE), hex.as_bytes(), true)?;
    }
    write_file(
        &data_dir.join(SEEDS_FILE),
        format!("{}\n", grant.seed).as_bytes(),
        false,
    )?;
    save_log(data_dir, &log)?;
    // The certificate last: its presence means enrolled.
    write_file(
        &data_dir.join(CERT_FILE),
        cert_to_hex(&cert).as_bytes(),
        false,
    )?;
    tracing::info!(org = %grant.org, enrolled_by = %api, "enrolled with a join token");
    Ok(Credentials {
        cert,
        log,
        org_key: None,
        origin: CredentialsOrigin::Enrolled,
    })
}

/// The seeds a join token left in the data dir.
pub fn stored_seeds(data_dir: &Path) -> Vec<String> {
    read_text(&data_dir.join(SEEDS_FILE))
        .ok()
        .flatten()
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster key a join token left in the data dir, if any.
pub fn stored_cluster_key(data_dir: &Path) -> Option<PathBuf> {
    let path = data_dir.join(CLUSTER_KEY_FILE);
    path.exists().then_some(path)
}

/// Make sure the founding node's local admin credential exists and has
/// at least [`ADMIN_TOKEN_RENEW_SECS`] left; mint it with this node's
/// key otherwise.
pub fn ensure_admin_token(
    data_dir: &Path,
    node_key: &SigningKey,
    cert: &SignedNodeCertificate,
) -> Result<PathBuf, CredentialsError> {
    let org = cert.cert.org;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let now = now();
    if let Some(text) = read_text(&path)?
        && let Ok(found) = locus_access::inspect(text.trim())
        && found.claims.tenant.org == org
        && found.issuer == locus_core::NodeId::from_public_key(&node_key.verifying_key())
        && found.effective_expires_at > now + ADMIN_TOKEN_RENEW_SECS
    {
        return Ok(path);
    }
    let claims = Claims {
        user: UserName::try_from(LOCAL_ADMIN.to_owned()).map_err(CredentialsError::Mint)?,
        tenant: TenantRef::new(org, default_tenant()),
        role: Role::OrgAdmin,
        expires_at: now + ADMIN_TOKEN_SECS,
    };
    let token =
        locus_access::token::mint_with_cert(node_key, &cert_to_hex(cert), &claims, random()?)
            .map_err(|e| CredentialsError::Mint(e.to_string()))?;
    write_file(&path, format!("{token}\n").as_bytes(), true)?;
    Ok(path)
}

/// The tenant every org starts with.
pub fn default_tenant() -> TenantName {
    // A constant that satisfies the name rule.
    TenantName::try_from(DEFAULT_TENANT.to_owned()).unwrap_or_else(|_| unreachable!())
}

/// The enrolling side: join grants made by this node and the uses of
/// each, kept in `join-uses` so that a single-use token stays used across
/// restarts.
pub struct Enroller {
    org_key: SigningKey,
    path: PathBuf,
    uses: Mutex<BTreeMap<String, u32>>,
}

/// Why an enrollment or a join grant is refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Refused(#[from] locus_access::JoinError),
    #[error(transparent)]
    Store(#[from] CredentialsError),
}

impl Enroller {
    /// The enroller of the node holding `org_key`.
    pub fn open(data_dir: &Path, org_key: SigningKey) -> Result<Enroller, CredentialsError> {
        let path = data_dir.join(JOIN_USES_FILE);
        let uses = match read_text(&path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(&path, e))?,
            None => BTreeMap::new(),
        };
        Ok(Enroller {
            org_key,
            path,
            uses: Mutex::new(uses),
        })
    }

    /// The org.
    pub fn org(&self) -> OrgId {
        OrgId::from_public_key(&self.org_key.verifying_key())
    }

    /// The org key (to sign the org's records).
    pub fn org_key(&self) -> &SigningKey {
        &self.org_key
    }

    /// A join token for `uses` machines, valid `ttl_secs`.
    pub fn grant(
        &self,
        uses: u32,
        ttl_secs: u64,
        roles: std::collections::BTreeSet<NodeRole>,
        enroll_api: String,
        seed: String,
        cluster_key: Option<[u8; 32]>,
    ) -> Result<(String, JoinGrant), EnrollError> {
        let grant = JoinGrant {
            id: random()?,
            org: self.org(),
            roles,
            not_after: now().saturating_add(ttl_secs),
            uses,
            enroll_api,
            seed,
            cluster_key,
        };
        let token = grant.clone().sign(&self.org_key)?;
        Ok((token.encode(), grant))
    }

    /// Enroll a node: check the request, count the use durably, then
    /// sign its certificate.
    pub fn enroll(&self, request: &EnrollRequest, log: &OrgLog) -> Result<Enrollment, EnrollError> {
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let admission =
            locus_access::check_enrollment(request, &self.org_key.verifying_key(), now(), |id| {
                uses.get(&locus_core::hex(id)).copied().unwrap_or(0)
            })?;
        let id = locus_core::hex(&admission.grant.id);
        let count = uses.get(&id).copied().unwrap_or(0) + 1;
        uses.insert(id.clone(), count);
        let text = serde_json::to_string(&*uses).unwrap_or_default();
        if let Err(e) = write_file(&self.path, text.as_bytes(), true) {
            uses.insert(id, count - 1);
            return Err(e.into());
        }
        drop(uses);
        let cert = sign_cert_for(&self.org_key, &admission.node_key, admission.grant.roles)?;
        Ok(Enrollment {
            certificate: cert_to_hex(&cert),
            org_log: log.entries().iter().map(entry_to_hex).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_start_founds_an_org_and_later_starts_load_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        let first = settle(dir.path(), &key, None, "lab").await.unwrap();
        assert_eq!(first.origin, CredentialsOrigin::Founded);
        assert!(first.org_key.is_some());
        let again = settle(dir.path(), &key, None, "lab").await.unwrap();
        assert_eq!(again.origin, CredentialsOrigin::Loaded);
        assert_eq!(again.cert, first.cert);
        assert_eq!(again.log, first.log);
        let path = ensure_admin_token(dir.path(), &key, &first.cert).unwrap();
        let token = fs::read_to_string(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Not renewed while fresh.
        ensure_admin_token(dir.path(), &key, &first.cert).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), token);
        let claims = locus_access::inspect(token.trim()).unwrap().claims;
        assert_eq!(claims.role, Role::OrgAdmin);
    }

    #[tokio::test]
    async fn a_corrupt_certificate_stops_the_start_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[1; 32]);
        settle(dir.path(), &key, None, "lab").await.unwrap();
        fs::write(dir.path().join(CERT_FILE), "zz").unwrap();
        let err = settle(dir.path(), &key, None, "lab").await.unwrap_err();
        assert!(err.to_string().contains("node.cert is corrupt"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            "zz"
        );
    }

    #[test]
    fn a_single_use_grant_enrolls_one_node_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let org_key = SigningKey::from_bytes(&[2; 32]);
        let log = OrgLog::genesis(&org_key, "lab").unwrap();
        let enroller = Enroller::open(dir.path(), org_key.clone()).unwrap();
        let (token, grant) = enroller
            .grant(
                1,
                60,
                [NodeRole::Worker].into(),
                "a:1".into(),
                "a:2".into(),
                None,
            )
            .unwrap();
        let node = SigningKey::from_bytes(&[3; 32]);
        let req = locus_access::join::enroll_request(&token, &grant.id, &node);
        let answer = enroller.enroll(&req, &log).unwrap();
        let cert = cert_from_hex(&answer.certificate).unwrap();
        assert_eq!(
            cert.verify(&org_key.verifying_key(), now()).unwrap(),
            node.verifying_key()
        );
        let reopened = Enroller::open(dir.path(), org_key).unwrap();
        let err = reopened.enroll(&req, &log).unwrap_err();
        assert!(
            err.to_string().contains("already used 1 times of 1"),
            "{err}"
        );
    }
}
