//! Webhook verification: is this request really from the forge, and what does it say?
//!
//! Owns: checking the signature (or token) of a webhook request for GitHub, GitLab,
//! Gitea and a generic HMAC-SHA256 form, in constant time, and reading just enough
//! of a push payload (`ref`, `after`) to know which branch moved to which commit.
//! Must not: do IO, log, or put the secret or the received signature into an error
//! or a `Debug` output. Signatures are checked before the body is parsed, so an
//! unauthenticated sender learns nothing about the parser.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bodies larger than this are refused before anything else is done.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    /// `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>` and a `{ref, after}` body.
    Generic,
}

impl Provider {
    pub const ALL: [Provider; 4] = [Provider::GitHub, Provider::GitLab, Provider::Gitea, Provider::Generic];

    /// The path segment and config key: `github`, `gitlab`, `gitea`, `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A push, as far as the reconciler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// `refs/heads/main`.
    pub git_ref: String,
    /// The new head commit (all zeros when the branch was deleted).
    pub after: String,
}

impl PushEvent {
    /// The branch name, for pushes to a branch (not a tag).
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    pub fn is_deletion(&self) -> bool {
        !self.after.is_empty() && self.after.bytes().all(|b| b == b'0')
    }
}

/// What a verified request announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    Push(PushEvent),
    /// GitHub's and Gitea's "is this hook set up right" call.
    Ping,
    /// Any other event (issues, tags, merge requests): verified, and ignored.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingSignature(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("not a push payload: {0}")]
    BadPayload(String),
}

impl WebhookError {
    /// The HTTP status to answer with: 401 for anything about authenticity.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::MissingSignature(_) | WebhookError::BadSignature => 401,
            WebhookError::TooLarge => 413,
            WebhookError::BadPayload(_) => 400,
        }
    }
}

/// Verifies a webhook request and reads its event.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::TooLarge);
    }
    match provider {
        Provider::GitHub => {
            let sig =
                header(headers, "x-hub-signature-256").ok_or(WebhookError::MissingSignature("X-Hub-Signature-256"))?;
            check_hmac(secret, body, sig.strip_prefix("sha256="))?;
            match header(headers, "x-github-event") {
                Some("ping") => Ok(WebhookEvent::Ping),
                Some("push") | None => parse_push(body).map(WebhookEvent::Push),
                Some(other) => Ok(WebhookEvent::Other(other.to_string())),
            }
        }
        Provider::Gitea => {
            let sig =
                header(headers, "x-gitea-signature").ok_or(WebhookError::MissingSignature("X-Gitea-Signature"))?;
            check_hmac(secret, body, Some(sig))?;
            match header(headers, "x-gitea-event") {
                Some("push") | None => parse_push(body).map(WebhookEvent::Push),
                Some(other) => Ok(WebhookEvent::Other(other.to_string())),
            }
        }
        Provider::GitLab => {
            let token = header(headers, "x-gitlab-token").ok_or(WebhookError::MissingSignature("X-Gitlab-Token"))?;
            // Hashing both sides first makes the comparison independent of length too.
            let given = Sha256::digest(token.as_bytes());
            let wanted = Sha256::digest(secret);
            if !bool::from(given.ct_eq(&wanted)) {
                return Err(WebhookError::BadSignature);
            }
            match header(headers, "x-gitlab-event") {
                Some("Push Hook") | None => parse_push(body).map(WebhookEvent::Push),
                Some(other) => Ok(WebhookEvent::Other(other.to_string())),
            }
        }
        Provider::Generic => {
            let sig = header(headers, "x-signature-256").ok_or(WebhookError::MissingSignature("X-Signature-256"))?;
            check_hmac(secret, body, sig.strip_prefix("sha256="))?;
            parse_push(body).map(WebhookEvent::Push)
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `hex_sig` is the hex HMAC-SHA256 the sender computed; `verify_slice` compares in
/// constant time.
fn check_hmac(secret: &[u8], body: &[u8], hex_sig: Option<&str>) -> Result<(), WebhookError> {
    let hex_sig = hex_sig.ok_or(WebhookError::BadSignature)?;
    let given = hex::decode(hex_sig).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| WebhookError::BadSignature)
}

fn parse_push(body: &[u8]) -> Result<PushEvent, WebhookError> {
    #[derive(serde::Deserialize)]
    struct Push {
        #[serde(rename = "ref")]
        git_ref: String,
        #[serde(default)]
        after: String,
    }
    // serde also reads a struct from a JSON array (`["refs/heads/main", "<sha>"]`),
    // which no forge sends: a push payload is an object.
    if body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        return Err(WebhookError::BadPayload("not a JSON object".into()));
    }
    let p: Push = serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    if !p.after.is_empty() && !p.after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WebhookError::BadPayload("`after` is not a commit id".into()));
    }
    Ok(PushEvent { git_ref: p.git_ref, after: p.after.to_ascii_lowercase() })
}

/// HMAC-SHA256 of `body` under `secret`, as lowercase hex (for tests and clients).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PUSH: &[u8] = br#"{"ref":"refs/heads/main","before":"0000","after":"4B825DC642CB6EB9A060E54BF8D69288FBEE4904","repository":{"name":"fleet"}}"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn github_documented_vector() {
        // From GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let h = headers(&[
            ("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            ("x-github-event", "ping"),
        ]);
        assert_eq!(
            verify(Provider::GitHub, &h, b"Hello, World!", b"It's a Secret to Everybody"),
            Ok(WebhookEvent::Ping)
        );
    }

    #[test]
    fn github_push_with_a_computed_signature() {
        let secret = b"s3cret";
        let sig = format!("sha256={}", sign(secret, PUSH));
        let h = headers(&[("x-hub-signature-256", &sig), ("x-github-event", "push")]);
        let ev = verify(Provider::GitHub, &h, PUSH, secret).unwrap();
        let WebhookEvent::Push(p) = ev else { panic!("{ev:?}") };
        assert_eq!(p.branch(), Some("main"));
        assert_eq!(p.after, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert!(!p.is_deletion());
    }

    #[test]
    fn github_bad_and_missing_signatures_are_401() {
        let secret = b"s3cret";
        let wrong = format!("sha256={}", sign(b"other", PUSH));
        for h in [
            headers(&[("x-hub-signature-256", &wrong)]),
            headers(&[("x-hub-signature-256", "sha256=zz")]),
            headers(&[("x-hub-signature-256", "sha1=abcd")]),
            headers(&[("x-github-event", "push")]),
        ] {
            let err = verify(Provider::GitHub, &h, PUSH, secret).unwrap_err();
            assert_eq!(err.status(), 401, "{err}");
        }
        // A body changed after signing fails too.
        let sig = format!("sha256={}", sign(secret, PUSH));
        let h = headers(&[("x-hub-signature-256", &sig)]);
        let mut tampered = PUSH.to_vec();
        tampered[10] ^= 1;
        assert_eq!(verify(Provider::GitHub, &h, &tampered, secret), Err(WebhookError::BadSignature));
    }

    #[test]
    fn gitea_signature_is_bare_hex() {
        let secret = b"gitea-secret";
        let h = headers(&[("x-gitea-signature", &sign(secret, PUSH)), ("x-gitea-event", "push")]);
        assert!(matches!(verify(Provider::Gitea, &h, PUSH, secret), Ok(WebhookEvent::Push(_))));
        let h = headers(&[("x-gitea-signature", &format!("sha256={}", sign(secret, PUSH)))]);
        assert_eq!(verify(Provider::Gitea, &h, PUSH, secret), Err(WebhookError::BadSignature));
    }

    #[test]
    fn gitlab_token_is_compared_whole() {
        let secret = b"gitlab-token";
        let ok = headers(&[("x-gitlab-token", "gitlab-token"), ("x-gitlab-event", "Push Hook")]);
        assert!(matches!(verify(Provider::GitLab, &ok, PUSH, secret), Ok(WebhookEvent::Push(_))));
        for bad in ["gitlab-toke", "gitlab-token2", "", "GITLAB-TOKEN"] {
            let h = headers(&[("x-gitlab-token", bad)]);
            assert_eq!(verify(Provider::GitLab, &h, PUSH, secret), Err(WebhookError::BadSignature), "{bad}");
        }
        let tag = headers(&[("x-gitlab-token", "gitlab-token"), ("x-gitlab-event", "Tag Push Hook")]);
        assert_eq!(verify(Provider::GitLab, &tag, PUSH, secret), Ok(WebhookEvent::Other("Tag Push Hook".into())));
    }

    #[test]
    fn generic_form() {
        let secret = b"generic";
        let body = br#"{"ref":"refs/heads/ops","after":"abc123"}"#;
        let h = headers(&[("x-signature-256", &format!("sha256={}", sign(secret, body)))]);
        assert_eq!(
            verify(Provider::Generic, &h, body, secret),
            Ok(WebhookEvent::Push(PushEvent { git_ref: "refs/heads/ops".into(), after: "abc123".into() }))
        );
        assert_eq!(
            verify(Provider::Generic, &HeaderMap::new(), body, secret),
            Err(WebhookError::MissingSignature("X-Signature-256"))
        );
    }

    #[test]
    fn payload_problems_come_after_authentication() {
        let secret = b"k";
        let body = b"not json";
        let h = headers(&[("x-signature-256", &format!("sha256={}", sign(secret, body)))]);
        assert_eq!(verify(Provider::Generic, &h, body, secret).unwrap_err().status(), 400);
        // Unauthenticated garbage is a 401, not a parse error.
        let h = headers(&[("x-signature-256", "sha256=00")]);
        assert_eq!(verify(Provider::Generic, &h, body, secret).unwrap_err().status(), 401);
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(verify(Provider::Generic, &h, &big, secret), Err(WebhookError::TooLarge));
    }

    #[test]
    fn a_push_payload_is_an_object() {
        // Found with fuzz/webhook's oracle: serde reads `Push` from an array too.
        let secret = b"k";
        for body in [&br#"["refs/heads/main","abc123"]"#[..], br#" ["refs/heads/main"]"#, b"\"refs/heads/main\""] {
            let h = headers(&[("x-signature-256", &format!("sha256={}", sign(secret, body)))]);
            let err = verify(Provider::Generic, &h, body, secret).unwrap_err();
            assert_eq!(err.status(), 400, "{err}");
        }
        let body = b" \r\n\t{\"ref\":\"refs/heads/main\"}";
        let h = headers(&[("x-signature-256", &format!("sha256={}", sign(secret, body)))]);
        assert!(matches!(verify(Provider::Generic, &h, body, secret), Ok(WebhookEvent::Push(_))));
    }

    #[test]
    fn deletions_and_tags() {
        let p = PushEvent { git_ref: "refs/tags/v1".into(), after: "0000000000000000000000000000000000000000".into() };
        assert_eq!(p.branch(), None);
        assert!(p.is_deletion());
    }
}
