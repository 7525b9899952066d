//! The node's key pair on disk.
//!
//! `node.key` in the data dir holds the ed25519 secret key as PKCS#8 PEM
//! (readable by `openssl pkey`), mode 0600. It is created once, atomically,
//! and never overwritten: a key file that cannot be read or parsed stops the
//! agent, because replacing it would silently turn the node into another one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

/// Name of the key file inside the data dir.
pub const KEY_FILE: &str = "node.key";

/// Why the node's identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the key {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the key {path} is corrupt ({reason}); it was left untouched: \
         restore it from a backup, or move it away to make a new one"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot create the key {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness available to create a node key: {0}")]
    Entropy(String),
}

/// Whether the key was found or made on this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Created,
}

/// Load the node key from `data_dir`, or create it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<(SigningKey, KeyOrigin), IdentityError> {
    load_or_create_at(&data_dir.join(KEY_FILE))
}

/// Load the ed25519 key at `path` (PKCS#8 PEM), or create it (mode 0600).
pub fn load_or_create_at(path: &Path) -> Result<(SigningKey, KeyOrigin), IdentityError> {
    let path = path.to_owned();
    match fs::read(&path) {
        Ok(bytes) => load(&path, &bytes).map(|k| (k, KeyOrigin::Loaded)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(&path).map(|k| (k, KeyOrigin::Created))
        }
        Err(source) => Err(IdentityError::Unreadable { path, source }),
    }
}

/// Load the ed25519 key at `path`, if there is one.
pub fn load_at(path: &Path) -> Result<Option<SigningKey>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => load(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Unreadable {
            path: path.to_owned(),
            source,
        }),
    }
}

fn load(path: &Path, bytes: &[u8]) -> Result<SigningKey, IdentityError> {
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let pem = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    let key = SigningKey::from_pkcs8_pem(pem)
        .map_err(|e| corrupt(format!("not an ed25519 PKCS#8 PEM key: {e}")))?;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "node key is readable by others; chmod 600 it");
        }
    }
    Ok(key)
}

fn create(path: &Path) -> Result<SigningKey, IdentityError> {
    let create_err = |source| IdentityError::Create {
        path: path.to_owned(),
        source,
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Entropy(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| create_err(std::io::Error::other(e.to_string())))?;

    // Write a temp file, then hard-link it into place: the link fails if a
    // key appeared meanwhile, so an existing key is never replaced, and a
    // crash leaves either no key or a whole one.
    let tmp = path.with_extension(format!("key.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    let result = write();
    let _ = fs::remove_file(&tmp);
    result.map_err(create_err)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_a_private_key_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, origin) = load_or_create(dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, origin) = load_or_create(dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(a.to_bytes(), b.to_bytes());
        let text = fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn a_corrupt_key_is_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for garbage in [
            &b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"[..],
            b"\xff\xfe",
            b"",
        ] {
            fs::write(&path, garbage).unwrap();
            let err = load_or_create(dir.path()).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("is corrupt"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), garbage);
        }
    }

    #[test]
    fn an_unreadable_key_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the key should be cannot be read as a file.
        fs::create_dir(dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Unreadable { .. }), "{err}");
    }
}
