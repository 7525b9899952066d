//! User tokens: Biscuit tokens minted by an issuing node, narrowed by their
//! holder offline, and authorized by any node from public data alone.
//!
//! **Minting.** The authority block, signed with the issuing node's key
//! (the Biscuit root key), holds the claims and their expiry:
//!
//! ```text
//! issuer("<node id>");  user("<user>");  org("<org id>");
//! tenant("<org id>", "<tenant>");  role("<role>");
//! check if time($time), $time < <expires_at>;
//! ```
//!
//! The token's `root_key_id` is the first 4 bytes of the issuer's node id
//! (big-endian), a hint for Biscuit tools; the authorizer finds the issuer
//! by the `issuer` fact, looks its key up by node id, and only then checks
//! the signatures, so the fact is read from the token before it is trusted
//! and trusted only once the key it names verified it.
//!
//! **Attenuation.** The holder appends a block of checks ([`Narrowing`]):
//! `check if access("read")`, `check if resource_tenant(<org>, <tenant>) or
//! scope("cluster") or scope("public")`, `check if node(<node id>)`, a
//! `check if operation(<name>)`, a shorter `time` check. It needs no key of the issuer.
//!
//! **Authorization.** The authorizer is built from the [`Request`]:
//! `operation`, `access` (`read`/`write`/`admin`), `scope`, `node`,
//! `node_org`, `time`, `resource_tenant(org, name)`, `granted(org, name)`
//! when the node's org granted that tenant use of the node, and
//! `role_may(role)` for each role [`role_allows`] the operation, and
//! `expected_issuer(node id)`, the node whose key verified the token. Its
//! policies (trusting the authority block and the authorizer only, so an
//! appended block can restrict but never grant), parsed once per process
//! (`POLICY`):
//!
//! ```text
//! check if issuer($i), expected_issuer($i) trusting authority;
//! resource_tenant($o, $t) <- own_tenant(true), tenant($o, $t);
//! hosted($o, $t) <- resource_tenant($o, $t), node_org($o);
//! hosted($o, $t) <- resource_tenant($o, $t), granted($o, $t);
//! allow if scope("public");
//! allow if scope("cluster"), role($r), role_may($r);
//! allow if scope("org"), role($r), role_may($r), org($o), node_org($o);
//! allow if scope("tenant"), role($r), role_may($r), tenant($o, $t),
//!          resource_tenant($o, $t), hosted($o, $t);
//! allow if scope("tenant"), role("org_admin"), role_may("org_admin"),
//!          org($o), resource_tenant($o, $t), hosted($o, $t);
//! deny if true;
//! ```
//!
//! The Datalog decides; when it refuses, [`Denied`] says why in words: the
//! failed check of a block (expired, narrowed) or, when no policy matched,
//! the first rule of the policy the request breaks.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use biscuit_auth::builder::{Term, fact, string};
use biscuit_auth::datalog::SymbolTable;
use biscuit_auth::error::{FailedCheck, Logic, Token as TokenError};
use biscuit_auth::{
    Algorithm, AuthorizerBuilder, AuthorizerLimits, Biscuit, BiscuitBuilder, BlockBuilder, KeyPair,
    PrivateKey, PublicKey, UnverifiedBiscuit,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use locus_core::NodeId;

use crate::operation::{Operation, Scope, role_allows};
use crate::org::OrgId;
use crate::revocation::RevocationSet;
use crate::tenant::{Role, TenantName, TenantRef, UserName};

/// Longest token accepted, in base64 characters.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// Most blocks in a token (the authority block and attenuations).
pub const MAX_TOKEN_BLOCKS: usize = 8;

/// Most facts an authorization may derive.
pub const AUTHORIZER_MAX_FACTS: u64 = 256;

/// Most rule iterations an authorization may run.
pub const AUTHORIZER_MAX_ITERATIONS: u64 = 32;

/// Longest an authorization may run: a backstop behind the bounds on facts
/// and iterations, far above the tens of microseconds one takes. It is
/// wall time, so it must also cover a node too busy to schedule the check
/// at once (a small board under load): at 20 ms, honest tokens were
/// refused on a loaded machine.
pub const AUTHORIZER_MAX_TIME: Duration = Duration::from_millis(250);

fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: AUTHORIZER_MAX_FACTS,
        max_iterations: AUTHORIZER_MAX_ITERATIONS,
        max_time: AUTHORIZER_MAX_TIME,
    }
}

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user: UserName,
    /// The user's tenant (and so its org).
    pub tenant: TenantRef,
    pub role: Role,
    /// Unix seconds, excluded.
    pub expires_at: u64,
}

/// How a holder narrows a token; each `Some`/`true` adds one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Reads only.
    pub read_only: bool,
    /// Records of this tenant only (and cluster-wide reads).
    pub tenant: Option<TenantRef>,
    /// Requests to this node only.
    pub node: Option<NodeId>,
    /// This operation only (a forwarded call).
    pub operation: Option<Operation>,
    /// An earlier expiry (unix seconds, excluded).
    pub expires_at: Option<u64>,
}

/// What the authorizer needs to know of an issuing node: its key and its
/// org, from a certificate with the issuer role the caller verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issuer {
    pub key: [u8; 32],
    pub org: OrgId,
}

/// The request being authorized.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The tenant owning the record, for tenant-scoped operations; `None`
    /// for the token's own tenant (a list, a new record).
    pub resource_tenant: Option<&'a TenantRef>,
    /// The node answering (this node).
    pub target_node: NodeId,
    /// The org of the node answering.
    pub node_org: OrgId,
    /// Tenants of other orgs the node's org granted use of this node.
    pub granted_tenants: &'a BTreeSet<TenantRef>,
    /// Unix seconds.
    pub now: u64,
}

/// Who an authorized token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserName,
    pub tenant: TenantRef,
    pub role: Role,
    pub issuer: NodeId,
    /// The token's revocation ids, one per block, authority first.
    pub revocation_ids: Vec<Vec<u8>>,
}

/// Why a token cannot be minted or attenuated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("not a token: {0}")]
    Malformed(String),
    #[error("a narrowing must restrict something")]
    EmptyNarrowing,
    #[error("token has {0} blocks: at most {MAX_TOKEN_BLOCKS} are allowed")]
    TooManyBlocks(usize),
    #[error("token of {0} characters: at most {MAX_TOKEN_CHARS} are allowed")]
    TooLong(usize),
    #[error("biscuit: {0}")]
    Biscuit(String),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("not a token: {0}")]
    Malformed(String),
    #[error("token issued by node {0}, which is not an issuer known here")]
    UnknownIssuer(NodeId),
    #[error("token signature is not issuer node {0}'s: forged or altered")]
    ForgedSignature(NodeId),
    #[error("token issued by node {issuer} of org {issuer_org} claims org {claimed}")]
    IssuerOfAnotherOrg {
        issuer: NodeId,
        issuer_org: OrgId,
        claimed: OrgId,
    },
    #[error("token expired ({check}) at {now}")]
    Expired { now: u64, check: String },
    #[error("token revoked: {0}")]
    Revoked(String),
    #[error("token of tenant {token} may not {op} in tenant {resource}")]
    WrongTenant {
        token: TenantRef,
        resource: TenantRef,
        op: Operation,
    },
    #[error("role {role} does not allow {op}")]
    RoleDoesNotAllow { role: Role, op: Operation },
    #[error("token narrowed to read-only may not {op}")]
    ReadOnly { op: Operation },
    #[error("token narrowed to another tenant may not {op} here")]
    NarrowedToTenant { op: Operation },
    #[error("token narrowed to another node than {node}")]
    NarrowedToNode { node: NodeId },
    #[error("token narrowed to another operation than {op}")]
    NarrowedToOperation { op: Operation },
    #[error("{op} is a call between nodes: it takes a node signature, not a token")]
    NodeOnly { op: Operation },
    #[error("tenant {tenant} may not use node {node} (org {node_org}): not granted")]
    NotGranted {
        tenant: TenantRef,
        node: NodeId,
        node_org: OrgId,
    },
    #[error("token of org {org} may not {op} on a node of org {node_org}")]
    OtherOrg {
        org: OrgId,
        node_org: OrgId,
        op: Operation,
    },
    #[error("token check failed: {0}")]
    CheckFailed(String),
    #[error("authorization ran past its limits: {0}")]
    Limits(String),
    #[error("no policy allows {op}")]
    NoPolicy { op: Operation },
}

fn node_hint(node: &NodeId) -> u32 {
    let b = node.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn keypair(seed: &[u8; 32]) -> Result<KeyPair, MintError> {
    PrivateKey::from_bytes(seed, Algorithm::Ed25519)
        .map(|k| KeyPair::from(&k))
        .map_err(|e| MintError::Biscuit(e.to_string()))
}

fn biscuit_err(e: TokenError) -> MintError {
    MintError::Biscuit(e.to_string())
}

fn params<const N: usize>(pairs: [(&str, Term); N]) -> HashMap<String, Term> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Mint a token for `claims`, signed by the issuing node's key. `seed` is
/// 32 random bytes for the key the holder attenuates with (Biscuit's
/// next-block key). Answers the token in base64url.
pub fn mint(issuer_key: &SigningKey, claims: &Claims, seed: [u8; 32]) -> Result<String, MintError> {
    let issuer = NodeId::from_public_key(&issuer_key.verifying_key());
    mint_as(&issuer_key.to_bytes(), issuer, None, claims, seed)
}

/// [`mint`] with the issuer's node certificate (hex) in the authority
/// block (`issuer_cert("<hex>")`), so that a node that has not heard of
/// the issuer yet (just restarted, or cut off) can still check, offline,
/// that it is a node of an admitted org.
pub fn mint_with_cert(
    issuer_key: &SigningKey,
    cert_hex: &str,
    claims: &Claims,
    seed: [u8; 32],
) -> Result<String, MintError> {
    let issuer = NodeId::from_public_key(&issuer_key.verifying_key());
    mint_as(&issuer_key.to_bytes(), issuer, Some(cert_hex), claims, seed)
}

/// [`mint`] naming `issuer` whatever key signs (tests forge with it).
fn mint_as(
    root_secret: &[u8; 32],
    issuer: NodeId,
    cert: Option<&str>,
    claims: &Claims,
    seed: [u8; 32],
) -> Result<String, MintError> {
    let root = keypair(root_secret)?;
    let next = keypair(&seed)?;
    let mut builder = BiscuitBuilder::new();
    if let Some(cert) = cert {
        if cert.is_empty() || !cert.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MintError::Malformed(
                "the issuer certificate is not hex".into(),
            ));
        }
        builder = builder
            .fact(fact("issuer_cert", &[string(cert)]))
            .map_err(biscuit_err)?;
    }
    let builder = builder
        .code_with_params(
            r#"
            issuer({issuer});
            user({user});
            org({org});
            tenant({org}, {tenant});
            role({role});
            check if time($time), $time < {expires_at};
            "#,
            params([
                ("issuer", string(&issuer.to_string())),
                ("user", string(claims.user.get())),
                ("org", string(&claims.tenant.org.to_string())),
                ("tenant", string(claims.tenant.name.get())),
                ("role", string(claims.role.as_str())),
                ("expires_at", Term::Date(claims.expires_at)),
            ]),
            HashMap::new(),
        )
        .map_err(biscuit_err)?
        .root_key_id(node_hint(&issuer));
    builder
        .build_with_key_pair(&root, SymbolTable::default(), &next)
        .and_then(|b| b.to_base64())
        .map_err(biscuit_err)
}

fn parse_unverified(token: &str) -> Result<UnverifiedBiscuit, String> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(format!(
            "{} characters, more than the {MAX_TOKEN_CHARS} allowed",
            token.len()
        ));
    }
    let t = UnverifiedBiscuit::from_base64(token.trim()).map_err(|e| e.to_string())?;
    if t.block_count() > MAX_TOKEN_BLOCKS {
        return Err(format!(
            "{} blocks, more than the {MAX_TOKEN_BLOCKS} allowed",
            t.block_count()
        ));
    }
    Ok(t)
}

/// Narrow a token: append a block of checks. Done by the holder, offline,
/// with no key of the issuer; `seed` is 32 random bytes for the key of the
/// next block.
pub fn attenuate(token: &str, narrowing: &Narrowing, seed: [u8; 32]) -> Result<String, MintError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(MintError::TooLong(token.len()));
    }
    let t = parse_unverified(token).map_err(MintError::Malformed)?;
    if t.block_count() >= MAX_TOKEN_BLOCKS {
        return Err(MintError::TooManyBlocks(t.block_count() + 1));
    }
    let mut block = BlockBuilder::new();
    let mut empty = true;
    if narrowing.read_only {
        block = block
            .code(r#"check if access("read");"#)
            .map_err(biscuit_err)?;
        empty = false;
    }
    if let Some(tenant) = &narrowing.tenant {
        block = block
            .code_with_params(
                r#"check if resource_tenant({org}, {tenant}) or scope("cluster") or scope("public");"#,
                params([
                    ("org", string(&tenant.org.to_string())),
                    ("tenant", string(tenant.name.get())),
                ]),
                HashMap::new(),
            )
            .map_err(biscuit_err)?;
        empty = false;
    }
    if let Some(node) = &narrowing.node {
        block = block
            .code_with_params(
                "check if node({node});",
                params([("node", string(&node.to_string()))]),
                HashMap::new(),
            )
            .map_err(biscuit_err)?;
        empty = false;
    }
    if let Some(op) = narrowing.operation {
        block = block
            .code_with_params(
                "check if operation({operation});",
                params([("operation", string(op.name()))]),
                HashMap::new(),
            )
            .map_err(biscuit_err)?;
        empty = false;
    }
    if let Some(at) = narrowing.expires_at {
        block = block
            .code_with_params(
                "check if time($time), $time < {expires_at};",
                params([("expires_at", Term::Date(at))]),
                HashMap::new(),
            )
            .map_err(biscuit_err)?;
        empty = false;
    }
    if empty {
        return Err(MintError::EmptyNarrowing);
    }
    let next = keypair(&seed)?;
    let out = t
        .append_with_keypair(&next, block)
        .and_then(|t| t.to_base64())
        .map_err(biscuit_err)?;
    if out.len() > MAX_TOKEN_CHARS {
        return Err(MintError::TooLong(out.len()));
    }
    Ok(out)
}

/// What a token says, read without checking any signature: for people
/// (`locus token inspect`) and for a holder narrowing its own token, never
/// for a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The node the authority block names as issuer.
    pub issuer: NodeId,
    /// The claims of the authority block (its own expiry).
    pub claims: Claims,
    /// The earliest expiry of any block (unix seconds, excluded).
    pub effective_expires_at: u64,
    /// Each block's Datalog, authority first.
    pub blocks: Vec<String>,
    /// The revocation ids, one per block, authority first.
    pub revocation_ids: Vec<Vec<u8>>,
}

/// The one value of the fact `name(...)` with `arity` terms, all strings.
fn single_fact(block: &BlockBuilder, name: &str, arity: usize) -> Result<Vec<String>, String> {
    let mut found = block
        .facts
        .iter()
        .filter(|f| f.predicate.name == name)
        .map(|f| {
            f.predicate
                .terms
                .iter()
                .map(|t| match t {
                    Term::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>()
                .filter(|v| v.len() == arity)
        });
    match (found.next(), found.next()) {
        (Some(Some(v)), None) => Ok(v),
        (None, _) => Err(format!("the authority block has no {name} fact")),
        _ => Err(format!("the authority block has no single {name} fact")),
    }
}

/// The earliest date a `time` check of `block` compares with.
fn expiry_of(block: &BlockBuilder) -> Option<u64> {
    block
        .checks
        .iter()
        .flat_map(|c| &c.queries)
        .filter(|q| q.body.iter().any(|p| p.name == "time"))
        .flat_map(|q| &q.expressions)
        .flat_map(|e| &e.ops)
        .filter_map(|op| match op {
            biscuit_auth::builder::Op::Value(Term::Date(d)) => Some(*d),
            _ => None,
        })
        .min()
}

/// Read what `token` claims without checking its signatures (see
/// [`Inspection`]).
pub fn inspect(token: &str) -> Result<Inspection, MintError> {
    let t = parse_unverified(token).map_err(MintError::Malformed)?;
    let (issuer, _) = issuer_of(&t).map_err(|e| MintError::Malformed(e.to_string()))?;
    let mut blocks = Vec::with_capacity(t.block_count());
    let mut parsed = Vec::with_capacity(t.block_count());
    for i in 0..t.block_count() {
        let source = t
            .print_block_source(i)
            .map_err(|e| MintError::Malformed(format!("block {i}: {e}")))?;
        let block = BlockBuilder::new()
            .code(&source)
            .map_err(|e| MintError::Malformed(format!("block {i}: {e}")))?;
        blocks.push(source);
        parsed.push(block);
    }
    let authority = parsed
        .first()
        .ok_or_else(|| MintError::Malformed("no authority block".into()))?;
    let bad = |e: String| MintError::Malformed(e);
    let [user] = <[String; 1]>::try_from(single_fact(authority, "user", 1).map_err(bad)?)
        .map_err(|_| bad("bad user fact".into()))?;
    let [org] = <[String; 1]>::try_from(single_fact(authority, "org", 1).map_err(bad)?)
        .map_err(|_| bad("bad org fact".into()))?;
    let [tenant_org, tenant] =
        <[String; 2]>::try_from(single_fact(authority, "tenant", 2).map_err(bad)?)
            .map_err(|_| bad("bad tenant fact".into()))?;
    let [role] = <[String; 1]>::try_from(single_fact(authority, "role", 1).map_err(bad)?)
        .map_err(|_| bad("bad role fact".into()))?;
    if tenant_org != org {
        return Err(bad(format!(
            "the tenant's org {tenant_org} is not the token's org {org}"
        )));
    }
    let org: OrgId = org
        .parse()
        .map_err(|e: crate::org::ParseOrgIdError| bad(format!("claim org: {e}")))?;
    let claims = Claims {
        user: UserName::try_from(user).map_err(|e| bad(format!("claim user: {e}")))?,
        tenant: TenantRef::new(
            org,
            TenantName::try_from(tenant).map_err(|e| bad(format!("claim tenant: {e}")))?,
        ),
        role: Role::parse(&role)
            .ok_or_else(|| bad(format!("claim role: unknown role {role:?}")))?,
        expires_at: expiry_of(authority)
            .ok_or_else(|| bad("the authority block has no expiry".into()))?,
    };
    let effective_expires_at = parsed
        .iter()
        .filter_map(expiry_of)
        .min()
        .unwrap_or(claims.expires_at);
    Ok(Inspection {
        issuer,
        claims,
        effective_expires_at,
        blocks,
        revocation_ids: t.revocation_identifiers(),
    })
}

/// The issuer named by the authority block, read before the signature is
/// checked (to know which key checks it): exactly one `issuer("<id>")`,
/// and the issuer's certificate when the token carries one
/// (`issuer_cert("<hex>")`), itself checked against the org log.
fn issuer_of(t: &UnverifiedBiscuit) -> Result<(NodeId, Option<String>), Denied> {
    let source = t
        .print_block_source(0)
        .map_err(|e| Denied::Malformed(e.to_string()))?;
    let quoted = |name: &str| -> Vec<Option<String>> {
        source
            .match_indices(&format!("{name}(\""))
            .map(|(i, m)| {
                source
                    .get(i + m.len()..)
                    .and_then(|rest| rest.split_once("\")"))
                    .map(|(v, _)| v.to_owned())
            })
            .collect()
    };
    let issuer = match quoted("issuer").as_slice() {
        [Some(id)] => id.parse::<NodeId>().ok(),
        _ => None,
    }
    .ok_or_else(|| Denied::Malformed("the authority block names no single issuer".into()))?;
    if t.root_key_id() != Some(node_hint(&issuer)) {
        return Err(Denied::Malformed(format!(
            "the root key id does not match issuer {issuer}"
        )));
    }
    let cert = match quoted("issuer_cert").as_slice() {
        [] => None,
        [Some(c)] => Some(c.clone()),
        _ => {
            return Err(Denied::Malformed(
                "the authority block holds more than one issuer certificate".into(),
            ));
        }
    };
    Ok((issuer, cert))
}

fn claims_of(a: &mut biscuit_auth::Authorizer) -> Result<(UserName, TenantRef, Role), Denied> {
    let rows: Vec<(String, String, String, String)> = a
        .query_with_limits(
            "claims($u, $o, $t, $r) <- user($u), org($o), tenant($o, $t), role($r) trusting authority",
            limits(),
        )
        .map_err(|e| Denied::Malformed(format!("reading the claims: {e}")))?;
    let [(u, o, t, r)] = <[_; 1]>::try_from(rows)
        .map_err(|rows| Denied::Malformed(format!("{} sets of claims, not one", rows.len())))?;
    let bad = |what: &str, e: String| Denied::Malformed(format!("claim {what}: {e}"));
    let user = UserName::try_from(u).map_err(|e| bad("user", e))?;
    let org: OrgId = o
        .parse()
        .map_err(|e: crate::org::ParseOrgIdError| bad("org", e.to_string()))?;
    let name = TenantName::try_from(t).map_err(|e| bad("tenant", e))?;
    let role = Role::parse(&r).ok_or_else(|| bad("role", format!("unknown role {r:?}")))?;
    Ok((user, TenantRef::new(org, name), role))
}

/// The rules and policies of every authorization, parsed once: parsing
/// Datalog text costs far more than running it.
const POLICY: &str = r#"
    check if issuer($i), expected_issuer($i) trusting authority;

    resource_tenant($o, $t) <- own_tenant(true), tenant($o, $t);
    hosted($o, $t) <- resource_tenant($o, $t), node_org($o);
    hosted($o, $t) <- resource_tenant($o, $t), granted($o, $t);

    allow if scope("public");
    allow if scope("cluster"), role($r), role_may($r);
    allow if scope("org"), role($r), role_may($r), org($o), node_org($o);
    allow if scope("tenant"), role($r), role_may($r), tenant($o, $t),
             resource_tenant($o, $t), hosted($o, $t);
    allow if scope("tenant"), role("org_admin"), role_may("org_admin"),
             org($o), resource_tenant($o, $t), hosted($o, $t);
    deny if true;
"#;

fn policy() -> Result<AuthorizerBuilder, TokenError> {
    static PARSED: std::sync::OnceLock<Result<AuthorizerBuilder, TokenError>> =
        std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| {
            AuthorizerBuilder::new()
                .code(POLICY)
                .map(|b| b.set_limits(limits()))
        })
        .clone()
}

fn authorizer_for(issuer: &NodeId, req: &Request<'_>) -> Result<AuthorizerBuilder, TokenError> {
    let op = req.operation;
    let mut b = policy()?
        .fact(fact("operation", &[string(op.name())]))?
        .fact(fact("access", &[string(op.access().as_str())]))?
        .fact(fact("scope", &[string(op.scope().as_str())]))?
        .fact(fact("node", &[string(&req.target_node.to_string())]))?
        .fact(fact("node_org", &[string(&req.node_org.to_string())]))?
        .fact(fact("time", &[Term::Date(req.now)]))?
        .fact(fact("expected_issuer", &[string(&issuer.to_string())]))?;
    match req.resource_tenant {
        Some(t) => {
            let terms = [string(&t.org.to_string()), string(t.name.get())];
            b = b.fact(fact("resource_tenant", &terms))?;
        }
        None => b = b.fact(fact("own_tenant", &[Term::Bool(true)]))?,
    }
    for t in req.granted_tenants {
        let terms = [string(&t.org.to_string()), string(t.name.get())];
        b = b.fact(fact("granted", &terms))?;
    }
    for role in Role::ALL {
        if role_allows(role, op) {
            b = b.fact(fact("role_may", &[string(role.as_str())]))?;
        }
    }
    Ok(b)
}

/// Why the policy refuses `req` for a token of `tenant` and `role`, or
/// `None` when it allows it: the policy of the module docs, in words.
pub fn explain(tenant: &TenantRef, role: Role, req: &Request<'_>) -> Option<Denied> {
    let op = req.operation;
    match op.scope() {
        Scope::Public => return None,
        Scope::NodeToNode => return Some(Denied::NodeOnly { op }),
        _ => {}
    }
    if !role_allows(role, op) {
        return Some(Denied::RoleDoesNotAllow { role, op });
    }
    match op.scope() {
        Scope::Org if tenant.org != req.node_org => Some(Denied::OtherOrg {
            org: tenant.org,
            node_org: req.node_org,
            op,
        }),
        Scope::Tenant => {
            let resource = req.resource_tenant.unwrap_or(tenant);
            let reaches = if role == Role::OrgAdmin {
                resource.org == tenant.org
            } else {
                resource == tenant
            };
            if !reaches {
                return Some(Denied::WrongTenant {
                    token: tenant.clone(),
                    resource: resource.clone(),
                    op,
                });
            }
            if resource.org != req.node_org && !req.granted_tenants.contains(resource) {
                return Some(Denied::NotGranted {
                    tenant: resource.clone(),
                    node: req.target_node,
                    node_org: req.node_org,
                });
            }
            None
        }
        _ => None,
    }
}

/// The reason a failed check of the token gives.
fn failed_check(checks: &[FailedCheck], req: &Request<'_>) -> Denied {
    let rules: Vec<&str> = checks
        .iter()
        .map(|c| match c {
            FailedCheck::Block(b) => b.rule.as_str(),
            FailedCheck::Authorizer(a) => a.rule.as_str(),
        })
        .collect();
    let op = req.operation;
    let find = |needle: &str| rules.iter().find(|r| r.contains(needle));
    if let Some(rule) = find("time(") {
        return Denied::Expired {
            now: req.now,
            check: (*rule).to_owned(),
        };
    }
    if let Some(rule) = find("issuer(") {
        return Denied::Malformed(format!("the authority block fails {rule}"));
    }
    if find("access(").is_some() {
        return Denied::ReadOnly { op };
    }
    if find("resource_tenant(").is_some() {
        return Denied::NarrowedToTenant { op };
    }
    if find("operation(").is_some() {
        return Denied::NarrowedToOperation { op };
    }
    if find("node(").is_some() {
        return Denied::NarrowedToNode {
            node: req.target_node,
        };
    }
    Denied::CheckFailed(rules.join("; "))
}

/// Authorize `req` with `token`: find the issuer (`issuer_of_node`
/// answers its key and org from its verified certificate — the one the
/// fabric carries, or the one in the token — or `None`), check every
/// signature, the revocations, then run the policy built from the request
/// within [`AUTHORIZER_MAX_FACTS`], [`AUTHORIZER_MAX_ITERATIONS`] and
/// [`AUTHORIZER_MAX_TIME`].
pub fn authorize(
    token: &str,
    issuer_of_node: impl FnOnce(&NodeId, Option<&str>) -> Option<Issuer>,
    req: &Request<'_>,
    revoked: &RevocationSet,
) -> Result<Principal, Denied> {
    let unverified = parse_unverified(token).map_err(Denied::Malformed)?;
    let (issuer, cert) = issuer_of(&unverified)?;
    let known = issuer_of_node(&issuer, cert.as_deref()).ok_or(Denied::UnknownIssuer(issuer))?;
    let key = VerifyingKey::from_bytes(&known.key).map_err(|_| Denied::UnknownIssuer(issuer))?;
    if NodeId::from_public_key(&key) != issuer {
        return Err(Denied::UnknownIssuer(issuer));
    }
    let root = PublicKey::from_bytes(&known.key, Algorithm::Ed25519)
        .map_err(|_| Denied::UnknownIssuer(issuer))?;
    let biscuit: Biscuit = unverified.verify(root).map_err(|e| match e {
        biscuit_auth::error::Format::Signature(_)
        | biscuit_auth::error::Format::SealedSignature => Denied::ForgedSignature(issuer),
        other => Denied::Malformed(other.to_string()),
    })?;
    let revocation_ids = biscuit.revocation_identifiers();
    if revoked.is_token_revoked(&revocation_ids) {
        return Err(Denied::Revoked(
            "this token, or one it was narrowed from".into(),
        ));
    }
    let mut authorizer = authorizer_for(&issuer, req)
        .and_then(|b| b.build(&biscuit))
        .map_err(|e| Denied::Malformed(e.to_string()))?;
    let (user, tenant, role) = claims_of(&mut authorizer)?;
    if tenant.org != known.org {
        return Err(Denied::IssuerOfAnotherOrg {
            issuer,
            issuer_org: known.org,
            claimed: tenant.org,
        });
    }
    if revoked.is_user_revoked(&tenant, &user) {
        return Err(Denied::Revoked(format!("user {user} of tenant {tenant}")));
    }
    match authorizer.authorize() {
        Ok(_) => Ok(Principal {
            user,
            tenant,
            role,
            issuer,
            revocation_ids,
        }),
        Err(TokenError::FailedLogic(
            Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks },
        )) => Err(if checks.is_empty() {
            explain(&tenant, role, req).unwrap_or(Denied::NoPolicy { op: req.operation })
        } else {
            failed_check(&checks, req)
        }),
        Err(TokenError::RunLimit(limit)) => Err(Denied::Limits(limit.to_string())),
        Err(e) => Err(Denied::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
