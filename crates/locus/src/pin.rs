//! The CLI's trust in an HTTPS API: no certificate authority, a pin.
//! `--pin node:<hex>` takes the node whose key it names;
//! `--pin org:<hex>` any node the org key certified
//! (`locus_access::pin`). The handshake signature is checked against the
//! certificate's key, so a server that merely copies a certificate fails.

use std::sync::Arc;

use locus_access::pin::{NODE_CERT_OID, Pin, check_pin};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use x509_cert::der::Decode;
use x509_cert::der::oid::ObjectIdentifier;

#[derive(Debug)]
struct Pinned {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The ed25519 key and the node certificate text of a DER certificate.
fn read_certificate(der: &[u8]) -> Result<([u8; 32], Option<String>), String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let ed25519 = ObjectIdentifier::new_unwrap("1.3.101.112");
    if tbs.subject_public_key_info.algorithm.oid != ed25519 {
        return Err("its key is not ed25519, so not a locus node's".to_owned());
    }
    let key: [u8; 32] = tbs
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .try_into()
        .map_err(|_| "its ed25519 key is not 32 bytes".to_owned())?;
    let oid_text = NODE_CERT_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let oid = ObjectIdentifier::new(&oid_text).map_err(|e| e.to_string())?;
    let node_cert = tbs
        .extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == oid)
        .and_then(|e| {
            // An OCTET STRING holding the hex text.
            x509_cert::der::asn1::OctetString::from_der(e.extn_value.as_bytes())
                .ok()
                .and_then(|o| String::from_utf8(o.as_bytes().to_vec()).ok())
        });
    Ok((key, node_cert))
}

fn refuse(why: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        PinRefused(why),
    ))))
}

#[derive(Debug)]
struct PinRefused(String);

impl std::fmt::Display for PinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinRefused {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (key, node_cert) = read_certificate(end_entity).map_err(refuse)?;
        check_pin(&self.pin, &key, node_cert.as_deref(), now.as_secs())
            .map_err(|e| refuse(format!("{e} (pinned {})", self.pin)))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A TLS client configuration that trusts exactly what `pin` names.
pub fn client_config(pin: Pin) -> anyhow::Result<rustls::ClientConfig> {
    let provider = locus_trust::tls::provider();
    let verifier = Arc::new(Pinned {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_reads_back_its_key_and_extension() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let (der, _) =
            locus_trust::tls::certificate(&key, "abc123", &["localhost".to_owned()]).unwrap();
        let (k, ext) = read_certificate(&der).unwrap();
        assert_eq!(k, key.verifying_key().to_bytes());
        assert_eq!(ext.as_deref(), Some("abc123"));
        assert!(read_certificate(b"not a certificate").is_err());
    }
}
