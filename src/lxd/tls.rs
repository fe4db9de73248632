//! TLS for talking to LXD over HTTPS: certificate pinning and client identity.
//!
//! Owns: the rustls `ClientConfig` (ring provider chosen explicitly, TLS 1.2/1.3),
//! the verifier that trusts a server only if the lowercase hex SHA-256 of its
//! end-entity certificate's DER equals the pinned fingerprint, the client
//! certificate and key loaded from PEM, and fingerprint computation.
//! Must not: look at host names (LXD cluster certificates only name the host name,
//! 127.0.0.1 and ::1), trust any CA, read files, or put key material in errors/logs.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use super::error::{LxdError, Result};

/// Lowercase hex SHA-256 of a certificate's DER: LXD's fingerprint formula, for
/// servers and clients alike.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Fingerprint of the first certificate in a PEM text.
pub fn fingerprint_of_pem(pem: &str) -> Result<String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| LxdError::Credentials {
        what: "certificate".into(),
        message: format!("not a PEM certificate ({e})"),
    })?;
    Ok(fingerprint_of_der(der.as_ref()))
}

/// Normalises a pinned fingerprint: lowercase, `:` separators (as `openssl x509
/// -fingerprint` prints them) removed, exactly 64 hex digits. Prefixes are not
/// accepted: a pin must name one certificate.
pub fn normalize_fingerprint(fp: &str) -> Result<String> {
    let s: String = fp.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LxdError::Invalid {
            what: "pinned fingerprint".into(),
            message: format!("{fp:?} is not a full SHA-256 fingerprint (64 hex digits)"),
        });
    }
    Ok(s)
}

/// The client certificate and key, as PEM. `Debug` never shows the key.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = fingerprint_of_pem(&self.cert_pem).unwrap_or_else(|_| "<unparsable>".into());
        f.debug_struct("ClientIdentity").field("cert_fingerprint", &fp).field("key_pem", &"<redacted>").finish()
    }
}

/// What the pinning verifier saw: the fingerprint of the last certificate a
/// server presented, so that a rejected handshake can say what it got.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeenFingerprint(Arc<Mutex<Option<String>>>);

impl SeenFingerprint {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, fp: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
    }
}

/// A built TLS configuration plus the verifier's record of what it saw.
pub(crate) struct PinnedTls {
    pub(crate) config: ClientConfig,
    pub(crate) seen: SeenFingerprint,
    pub(crate) expected: String,
}

impl PinnedTls {
    /// The fingerprint the server presented, if it was not the pinned one.
    #[cfg(test)]
    pub(crate) fn mismatch(&self) -> Option<String> {
        self.seen.get().filter(|got| *got != self.expected)
    }
}

/// Builds the client configuration: ring provider, TLS 1.3 and 1.2, the pinning
/// verifier and, if given, the client certificate.
pub(crate) fn pinned_config(fingerprint: &str, identity: Option<&ClientIdentity>) -> Result<PinnedTls> {
    let expected = normalize_fingerprint(fingerprint)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = SeenFingerprint::default();
    let verifier = PinnedVerifier {
        expected: expected.clone(),
        seen: seen.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| LxdError::Invalid { what: "TLS configuration".into(), message: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (certs, key) = load_identity(id, &provider)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| LxdError::Credentials {
                what: "client key".into(),
                message: format!("unusable with the client certificate ({e})"),
            })?
        }
    };
    Ok(PinnedTls { config, seen, expected })
}

/// Parses the PEM identity and checks what LXD would otherwise reject with a
/// misleading "not authorized": an expired certificate or a key rustls can't use.
fn load_identity(
    id: &ClientIdentity,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(id.cert_pem.as_bytes()).collect::<std::result::Result<_, _>>().map_err(|e| {
            LxdError::Credentials { what: "client certificate".into(), message: format!("not a PEM certificate ({e})") }
        })?;
    let first = certs.first().ok_or_else(|| LxdError::Credentials {
        what: "client certificate".into(),
        message: "the PEM text holds no CERTIFICATE block".into(),
    })?;
    check_validity(first.as_ref())?;
    // The pki-types PEM error never echoes the text it failed on; still only its
    // kind is reported, never the key.
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|_| LxdError::Credentials {
        what: "client key".into(),
        message: "no usable PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block in the PEM text".into(),
    })?;
    provider.key_provider.load_private_key(key.clone_key()).map_err(|e| LxdError::Credentials {
        what: "client key".into(),
        message: format!("unsupported key ({e}); use RSA (2048 bit or more) or ECDSA P-256/P-384"),
    })?;
    Ok((certs, key))
}

fn check_validity(der: &[u8]) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| LxdError::Credentials {
        what: "client certificate".into(),
        message: format!("cannot parse X.509 ({e})"),
    })?;
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(LxdError::Credentials {
            what: "client certificate".into(),
            message: format!(
                "not valid now (valid from {} to {}); LXD refuses such certificates",
                validity.not_before, validity.not_after
            ),
        });
    }
    Ok(())
}

/// Trusts exactly one certificate, by fingerprint. Handshake signatures are still
/// verified with the certificate's key, so a server must hold the pinned key.
#[derive(Debug)]
struct PinnedVerifier {
    expected: String,
    seen: SeenFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The verifier's rejection; its text is what rustls carries in the handshake
/// error (rustls prints it with `Debug`, hence the hand-written one).
struct Mismatch {
    got: String,
    expected: String,
}

impl std::fmt::Debug for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server certificate fingerprint {} does not match the pinned {}", self.got, self.expected)
    }
}

impl std::error::Error for Mismatch {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of_der(end_entity.as_ref());
        self.seen.set(got.clone());
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            let why = Mismatch { got, expected: self.expected.clone() };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(why)))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["lxd-gitops-test".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let (pem, _, der) = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        let want = hex::encode(Sha256::digest(&der));
        assert_eq!(fingerprint_of_der(&der), want);
        assert_eq!(fingerprint_of_pem(&pem).unwrap(), want);
        assert_eq!(want.len(), 64);
        assert!(want.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }

    #[test]
    fn fingerprint_of_garbage_is_an_error() {
        assert!(fingerprint_of_pem("hello").is_err());
    }

    #[test]
    fn pins_are_normalised_and_must_be_complete() {
        let fp = "C4:2F:".to_string() + &"AB:".repeat(29) + "AB";
        assert_eq!(normalize_fingerprint(&fp).unwrap(), "c42f".to_string() + &"ab".repeat(30));
        assert!(normalize_fingerprint("c42fab98").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn builds_with_ecdsa_and_rsa_identities() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let (cert_pem, key_pem, _) = self_signed(alg);
            let id = ClientIdentity { cert_pem, key_pem };
            pinned_config(&"ab".repeat(32), Some(&id)).unwrap();
        }
        pinned_config(&"ab".repeat(32), None).unwrap();
    }

    #[test]
    fn bad_keys_are_reported_without_their_text() {
        let (cert_pem, _, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key_pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let id = ClientIdentity { cert_pem, key_pem: key_pem.into() };
        let err = pinned_config(&"ab".repeat(32), Some(&id)).err().expect("must fail");
        let s = err.to_string();
        assert!(s.starts_with("client key"), "{s}");
        assert!(!s.contains("c2VjcmV0"), "{s}");
        assert!(!format!("{id:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn verifier_accepts_only_the_pin_and_records_what_it_saw() {
        let (_, _, der) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, _, other) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let tls = pinned_config(&fingerprint_of_der(&der), None).unwrap();
        let v = PinnedVerifier {
            expected: tls.expected.clone(),
            seen: tls.seen.clone(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let now = UnixTime::now();
        assert!(v.verify_server_cert(&CertificateDer::from(der.clone()), &[], &name, &[], now).is_ok());
        assert_eq!(tls.mismatch(), None);
        let err = v.verify_server_cert(&CertificateDer::from(other.clone()), &[], &name, &[], now).unwrap_err();
        assert!(err.to_string().contains("does not match the pinned"), "{err}");
        assert_eq!(tls.mismatch(), Some(fingerprint_of_der(&other)));
    }
}
