//! The node's TLS identity: a certificate self-signed by the node key
//! that carries the node's locus certificate (extension
//! `locus_access::pin::NODE_CERT_OID`), so a client pins the node key or
//! the org key instead of trusting a certificate authority.

use std::sync::Arc;

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
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process's default provider (HTTP clients built without a
/// TLS configuration of their own use it). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default((*provider()).clone());
}

/// DER OCTET STRING of `bytes`.
fn octet_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = bytes.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let len = n.to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(bytes);
    out
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
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            locus_access::pin::NODE_CERT_OID,
            octet_string(cert_hex.as_bytes()),
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
    fn octet_strings_have_der_lengths() {
        assert_eq!(octet_string(b"ab"), [0x04, 2, b'a', b'b']);
        let long = octet_string(&[0u8; 300]);
        assert_eq!(&long[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

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
