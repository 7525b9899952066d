//! The node's TLS identity: a certificate self-signed by the node key
//! that carries the node's locus certificate (extension
//! `locus_access::pin::NODE_CERT_OID`), so a client pins the node key or
//! the org key instead of trusting a certificate authority.

use std::sync::Arc;

use der::Encode;
use der::asn1::OctetStringRef;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS identity cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot encode the node key for TLS: {0}")]
    Key(String),
    #[error("cannot make the TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS use of this process shares: ring.
#[allow(deprecated)] // ring has no post-quantum key exchange; it builds everywhere.
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// [`ring`], shared.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring())
}

/// Make ring the process's default provider (HTTP clients built without a
/// TLS configuration of their own use it). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default(ring());
}

/// The certificate (DER) of `key`, for the names and addresses `names`,
/// carrying the node certificate `cert_hex`.
pub fn certificate(
    key: &SigningKey,
    cert_hex: &str,
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), TlsError> {
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "locus node {}",
            locus_core::NodeId::from_public_key(&key.verifying_key())
        ),
    );
    let content = OctetStringRef::new(cert_hex.as_bytes())
        .and_then(|o| o.to_der())
        .map_err(|e| {
            TlsError::Key(format!(
                "the node certificate does not fit an extension: {e}"
            ))
        })?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            locus_access::pin::NODE_CERT_OID,
            content,
        ));
    let cert = params.self_signed(&pair)?;
    Ok((cert.der().clone(), pkcs8))
}

/// A TLS server configuration with the node's certificate.
pub fn server_config(
    key: &SigningKey,
    cert_hex: &str,
    names: &[String],
) -> Result<rustls::ServerConfig, TlsError> {
    let (cert, pkcs8) = certificate(key, cert_hex, names)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(pkcs8))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_the_node_key_and_loads_into_rustls() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let config = server_config(&key, "c0ffee", &["localhost".into(), "127.0.0.1".into()]);
        assert!(config.is_ok(), "{:?}", config.err());
        let (der, _) = certificate(&key, "c0ffee", &["localhost".into()]).unwrap();
        let prefix = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        let mut spki = prefix.to_vec();
        spki.extend_from_slice(key.verifying_key().as_bytes());
        assert!(
            der.windows(spki.len()).any(|w| w == spki),
            "the SPKI is the node key"
        );
    }
}
