//! Signed checkpoints: a tree size and root in the C2SP `tlog-checkpoint`
//! text format, inside a C2SP `signed-note`, signed with ed25519.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root, base64>
//!
//! — <key name> <base64(key id || ed25519 signature)>
//! ```
//!
//! The key id is the first four bytes of
//! `SHA-256(key name || "\n" || 0x01 || public key)`; a verifier key is
//! written `<name>+<hex key id>+<base64(0x01 || public key)>`. The note
//! layer ([`sign_note`], [`open_note`]) works on any text; [`sign`] and
//! [`open`] add the checkpoint body.
//!
//! Opening follows the note spec: signatures by other keys are ignored; a
//! signature that names this key (name and id) but does not verify rejects
//! the whole note; a note with no signature by this key is rejected.
//! Checkpoints with extension lines are refused: locus writes none, and
//! does not vouch for signed lines it cannot interpret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// The signature type byte of ed25519 in the note spec.
pub const ED25519: u8 = 0x01;
/// The largest note [`open_note`] reads, in bytes.
pub const MAX_NOTE: usize = 1 << 20;
/// The most signature lines [`open_note`] reads (the spec asks for at
/// least 16).
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// A log's state at one size: what a node signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `locus.example/node/<id>`.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root over those leaves.
    pub root: Hash,
}

/// What is wrong with a checkpoint, a note or a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("key name {name:?} is not valid: {why}")]
    KeyName { name: String, why: &'static str },
    #[error("origin {origin:?} is not valid: {why}")]
    Origin { origin: String, why: &'static str },
    #[error("note text is not valid: {why}")]
    Text { why: &'static str },
    #[error("the note is {len} bytes, at most {max} are read")]
    TooLarge { len: usize, max: usize },
    #[error("byte {at} is a control character ({value:#04x}); only newline is allowed")]
    Control { at: usize, value: u8 },
    #[error("malformed note, line {line}: {why}")]
    Malformed { line: usize, why: String },
    #[error("the note has {count} signatures, at most {max} are read")]
    TooManySignatures { count: usize, max: usize },
    #[error("no signature by key {name}+{key_id} (signatures found: {found})")]
    UnknownKey {
        name: String,
        key_id: String,
        found: String,
    },
    #[error("the signature by {name} on line {line} does not verify")]
    BadSignature { name: String, line: usize },
    #[error("malformed checkpoint, line {line}: {why}")]
    Body { line: usize, why: String },
    #[error("verifier key is not valid: {why}")]
    VerifierKey { why: String },
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a key name: non-empty, no Unicode space, no `+`, no control
/// character.
pub fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    let bad = |why| {
        Err(CheckpointError::KeyName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.chars().any(char::is_whitespace) {
        return bad("it contains a space");
    }
    if name.contains('+') {
        return bad("it contains '+'");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

/// The note key id of an ed25519 key:
/// `SHA-256(name || "\n" || 0x01 || public key)[..4]`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The verifier key string `<name>+<hex key id>+<base64(0x01 || key)>`.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> Result<String, CheckpointError> {
    check_key_name(name)?;
    let mut typed = Vec::with_capacity(33);
    typed.push(ED25519);
    typed.extend_from_slice(key.as_bytes());
    Ok(format!(
        "{name}+{}+{}",
        hex(&key_id(name, key)),
        STANDARD.encode(typed)
    ))
}

/// Parse a verifier key string into its name and ed25519 key; the key id
/// must match the name and key.
pub fn parse_verifier_key(s: &str) -> Result<(String, VerifyingKey), CheckpointError> {
    let bad = |why: &str| CheckpointError::VerifierKey {
        why: why.to_owned(),
    };
    // The name holds no '+', the id is hex; the base64 may hold '+'.
    let (name, rest) = s
        .split_once('+')
        .ok_or_else(|| bad("no '+' after the name"))?;
    let (id_hex, b64) = rest
        .split_once('+')
        .ok_or_else(|| bad("no '+' after the key id"))?;
    check_key_name(name).map_err(|e| bad(&e.to_string()))?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the key id is not 8 hex digits"));
    }
    let typed = STANDARD
        .decode(b64)
        .map_err(|e| bad(&format!("the key is not base64: {e}")))?;
    let Some((&ty, key)) = typed.split_first() else {
        return Err(bad("the key is empty"));
    };
    if ty != ED25519 {
        return Err(bad(&format!(
            "signature type {ty:#04x} is not ed25519 (0x01)"
        )));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad(&format!("an ed25519 key is 32 bytes, not {}", key.len())))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an ed25519 public key"))?;
    if !id_hex.eq_ignore_ascii_case(&hex(&key_id(name, &key))) {
        return Err(bad("the key id does not match the name and key"));
    }
    Ok((name.to_owned(), key))
}

fn check_text(text: &str) -> Result<(), CheckpointError> {
    if text.len() > MAX_NOTE {
        return Err(CheckpointError::TooLarge {
            len: text.len(),
            max: MAX_NOTE,
        });
    }
    match text
        .bytes()
        .enumerate()
        .find(|(_, b)| *b < 0x20 && *b != b'\n')
    {
        Some((at, value)) => Err(CheckpointError::Control { at, value }),
        None => Ok(()),
    }
}

/// Sign `text` (which must end with a newline) as a note by `key_name`.
pub fn sign_note(text: &str, key_name: &str, key: &SigningKey) -> Result<String, CheckpointError> {
    check_key_name(key_name)?;
    check_text(text)?;
    if !text.ends_with('\n') {
        return Err(CheckpointError::Text {
            why: "it must end with a newline",
        });
    }
    let sig = key.sign(text.as_bytes());
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key_id(key_name, &key.verifying_key()));
    blob.extend_from_slice(&sig.to_bytes());
    Ok(format!(
        "{text}\n{SIG_PREFIX}{key_name} {}\n",
        STANDARD.encode(blob)
    ))
}

/// One parsed signature line.
struct SigLine<'a> {
    line: usize,
    name: &'a str,
    id: [u8; 4],
    sig: Vec<u8>,
}

/// Open a signed note: returns its text (with the final newline) if it
/// carries a valid signature by `key_name` with `key`.
pub fn open_note<'a>(
    note: &'a str,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<&'a str, CheckpointError> {
    check_key_name(key_name)?;
    check_text(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| CheckpointError::Malformed {
            line: note.split('\n').count(),
            why: "no blank line before the signatures".into(),
        })?;
    let text = &note[..split + 1];
    let sigs = &note[split + 2..];
    // Line numbers within the whole note, from 1: the text, the blank line,
    // then the signatures.
    let first = text.matches('\n').count() + 2;
    if sigs.is_empty() {
        return Err(CheckpointError::Malformed {
            line: first,
            why: "no signature lines".into(),
        });
    }
    let Some(body) = sigs.strip_suffix('\n') else {
        return Err(CheckpointError::Malformed {
            line: first + sigs.matches('\n').count(),
            why: "the last signature line does not end with a newline".into(),
        });
    };
    let count = body.split('\n').count();
    if count > MAX_SIGNATURES {
        return Err(CheckpointError::TooManySignatures {
            count,
            max: MAX_SIGNATURES,
        });
    }
    let mut lines = Vec::with_capacity(count);
    for (i, l) in body.split('\n').enumerate() {
        lines.push(parse_sig_line(first + i, l)?);
    }
    let id = key_id(key_name, key);
    let mut verified = false;
    for s in lines.iter().filter(|s| s.name == key_name && s.id == id) {
        let bad = || CheckpointError::BadSignature {
            name: key_name.to_owned(),
            line: s.line,
        };
        let sig = Signature::from_slice(&s.sig).map_err(|_| bad())?;
        key.verify_strict(text.as_bytes(), &sig)
            .map_err(|_| bad())?;
        verified = true;
    }
    if !verified {
        let found: Vec<String> = lines
            .iter()
            .map(|s| format!("{}+{}", s.name, hex(&s.id)))
            .collect();
        return Err(CheckpointError::UnknownKey {
            name: key_name.to_owned(),
            key_id: hex(&id),
            found: found.join(", "),
        });
    }
    Ok(text)
}

fn parse_sig_line(line: usize, l: &str) -> Result<SigLine<'_>, CheckpointError> {
    let bad = |why: String| CheckpointError::Malformed { line, why };
    let rest = l
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| bad("a signature line starts with an em dash and a space".into()))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between the key name and the signature".into()))?;
    check_key_name(name).map_err(|e| bad(e.to_string()))?;
    let blob = STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("the signature is not base64: {e}")))?;
    if blob.len() < 5 {
        return Err(bad(format!(
            "a signature is a 4-byte key id and at least one byte, not {} bytes",
            blob.len()
        )));
    }
    Ok(SigLine {
        line,
        name,
        id: [blob[0], blob[1], blob[2], blob[3]],
        sig: blob[4..].to_vec(),
    })
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn body(&self) -> Result<String, CheckpointError> {
        let bad = |why| {
            Err(CheckpointError::Origin {
                origin: self.origin.clone(),
                why,
            })
        };
        if self.origin.is_empty() {
            return bad("it is empty");
        }
        if self.origin.chars().any(char::is_control) {
            return bad("it contains a control character or a newline");
        }
        Ok(format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        ))
    }

    /// Parse a checkpoint note text (without signatures).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = |line: usize, why: String| CheckpointError::Body { line, why };
        let Some(text) = text.strip_suffix('\n') else {
            return Err(bad(
                text.split('\n').count(),
                "the text does not end with a newline".into(),
            ));
        };
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(
                lines.len(),
                format!(
                    "a checkpoint has an origin, a size and a root: {} lines found",
                    lines.len()
                ),
            ));
        }
        if lines.len() > 3 {
            return Err(bad(4, "extension lines are not supported".into()));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(bad(1, "the origin is empty".into()));
        }
        let size = lines[1];
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                2,
                format!("tree size {size:?} is not a decimal number"),
            ));
        }
        if size.len() > 1 && size.starts_with('0') {
            return Err(bad(2, format!("tree size {size:?} has a leading zero")));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad(2, format!("tree size {size:?} is too large")))?;
        let root = STANDARD
            .decode(lines[2])
            .map_err(|e| bad(3, format!("the root is not base64: {e}")))?;
        let root: Hash = root
            .as_slice()
            .try_into()
            .map_err(|_| bad(3, format!("the root is {} bytes, not 32", root.len())))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Sign a checkpoint as a note by `key_name`.
pub fn sign(cp: &Checkpoint, key_name: &str, key: &SigningKey) -> Result<String, CheckpointError> {
    sign_note(&cp.body()?, key_name, key)
}

/// Open a signed checkpoint: verify the signature by `key_name` with `key`,
/// then parse the body.
pub fn open(text: &str, key_name: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::parse_body(open_note(text, key_name, key)?)
}

#[cfg(test)]
mod tests;
