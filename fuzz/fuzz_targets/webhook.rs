//! Fuzz target: the webhook parser (`serve::webhook::verify`) for every forge format.
//!
//! Input: a readable request, so seeds are real payloads and crashes read as such:
//!
//! ```text
//! github s3cret                       <- provider (github, gitlab, gitea, generic), space, secret
//! X-Hub-Signature-256: sha256=$SIG    <- headers, one per line, until an empty line
//! X-GitHub-Event: push
//!
//! {"ref":"refs/heads/main","after":"..."}   <- the body, every byte after the empty line
//! ```
//!
//! `$SIG` in a header value becomes the right signature for this body and secret:
//! the lowercase hex HMAC-SHA256 (GitHub, Gitea, generic), or the secret itself
//! (GitLab's token). Anything else (`$SIG` mutated, a literal stale signature, a
//! missing header) is whatever it is, and the oracle below decides what it is worth.
//! A header line that is not a valid HTTP header is left out, as a server would.
//!
//! Invariants, against an oracle written here from the forges' rules:
//! - `verify` never panics;
//! - a request that is not authentic is always rejected with a 401: no signature
//!   header gives `MissingSignature`, any other signature that is not the HMAC of
//!   the body under the secret (or not the token) gives `BadSignature` (or
//!   `MissingSignature` when the header is not visible ASCII text);
//! - an authentic request is accepted iff the rest parses: the event header routes
//!   it (GitHub `ping`, other events as `Other`, push or no event header: the body),
//!   and a push body is accepted iff it is one JSON object with a string `ref` and
//!   at most one `after`, a string of hex digits; the event then carries exactly
//!   that `ref` and the lowercased `after`.

#![no_main]

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use lxd_gitops_fuzz::webhook::{verify, Provider, PushEvent, WebhookError, WebhookEvent, MAX_BODY_BYTES};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use sha2::Sha256;

struct Request<'a> {
    provider: Provider,
    secret: &'a [u8],
    /// Header lines as written, `$SIG` not yet replaced.
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
}

fn parse(data: &[u8]) -> Option<Request<'_>> {
    let mut rest = data;
    let mut line = || -> Option<&[u8]> {
        let (l, r) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = r;
        Some(l.strip_suffix(b"\r").unwrap_or(l))
    };
    let first = line()?;
    let (name, secret) = match first.iter().position(|b| *b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &first[first.len()..]),
    };
    let provider = Provider::parse(std::str::from_utf8(name).ok()?)?;
    let mut headers = Vec::new();
    loop {
        let l = line()?;
        if l.is_empty() {
            break;
        }
        if let Some(i) = l.iter().position(|b| *b == b':') {
            headers.push((&l[..i], &l[i + 1..]));
        }
    }
    Some(Request { provider, secret, headers, body: rest })
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// The signature header, the event header and what the latter says for a push.
fn names(p: Provider) -> (&'static str, Option<&'static str>, &'static str) {
    match p {
        Provider::GitHub => ("x-hub-signature-256", Some("x-github-event"), "push"),
        Provider::Gitea => ("x-gitea-signature", Some("x-gitea-event"), "push"),
        Provider::GitLab => ("x-gitlab-token", Some("x-gitlab-event"), "Push Hook"),
        Provider::Generic => ("x-signature-256", None, "push"),
    }
}

/// A header's text: visible ASCII, optional whitespace (SP, HTAB) around it removed.
fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim_matches([' ', '\t']))
}

/// Is the request authentic, by the forge's rules? `None`: no signature header.
fn authentic(p: Provider, h: &HeaderMap, secret: &[u8], body: &[u8]) -> Option<bool> {
    let (sig_name, _, _) = names(p);
    h.get(sig_name)?;
    let Some(text) = header(h, sig_name) else { return Some(false) };
    let hex_part = match p {
        Provider::GitLab => return Some(text.as_bytes() == secret),
        Provider::Gitea => text,
        Provider::GitHub | Provider::Generic => match text.strip_prefix("sha256=") {
            Some(rest) => rest,
            None => return Some(false),
        },
    };
    Some(hex::decode(hex_part).is_ok_and(|given| given == mac(secret, body)))
}

/// The push a body announces, by the rules in the header comment.
fn expected_push(body: &[u8]) -> Option<PushEvent> {
    struct Fields {
        refs: Vec<serde_json::Value>,
        afters: Vec<serde_json::Value>,
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Fields;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
            let mut out = Fields { refs: Vec::new(), afters: Vec::new() };
            while let Some(k) = map.next_key::<String>()? {
                match k.as_str() {
                    "ref" => out.refs.push(map.next_value()?),
                    "after" => out.afters.push(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = serde::Deserializer::deserialize_map(&mut de, V).ok()?;
    de.end().ok()?;
    let [serde_json::Value::String(git_ref)] = fields.refs.as_slice() else { return None };
    let after = match fields.afters.as_slice() {
        [] => String::new(),
        [serde_json::Value::String(a)] if a.bytes().all(|b| b.is_ascii_hexdigit()) => a.to_ascii_lowercase(),
        _ => return None,
    };
    Some(PushEvent { git_ref: git_ref.clone(), after })
}

fn missing_name(p: Provider) -> &'static str {
    match p {
        Provider::GitHub => "X-Hub-Signature-256",
        Provider::Gitea => "X-Gitea-Signature",
        Provider::GitLab => "X-Gitlab-Token",
        Provider::Generic => "X-Signature-256",
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse(data) else { return };
    let p = req.provider;
    let right = match p {
        Provider::GitLab => req.secret.to_vec(),
        _ => hex::encode(mac(req.secret, req.body)).into_bytes(),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let value = replace(value, b"$SIG", &right);
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(&value)) {
            headers.append(k, v);
        }
    }

    let got = verify(p, &headers, req.body, req.secret);

    if req.body.len() > MAX_BODY_BYTES {
        assert_eq!(got, Err(WebhookError::TooLarge));
        return;
    }
    match authentic(p, &headers, req.secret, req.body) {
        None => assert_eq!(got, Err(WebhookError::MissingSignature(missing_name(p))), "{p:?}"),
        // A header that is not visible ASCII reads as missing there, so either 401 will do.
        Some(false) => assert!(
            matches!(got, Err(WebhookError::BadSignature | WebhookError::MissingSignature(_))),
            "{p:?}: not authentic, yet {got:?} for {headers:?}"
        ),
        Some(true) => {
            let (_, event_name, push) = names(p);
            let event = event_name.and_then(|e| header(&headers, e));
            let expected = match (p, event) {
                (Provider::GitHub, Some("ping")) => Some(WebhookEvent::Ping),
                (Provider::Generic, _) | (_, None) => expected_push(req.body).map(WebhookEvent::Push),
                (_, Some(e)) if e == push => expected_push(req.body).map(WebhookEvent::Push),
                (_, Some(other)) => Some(WebhookEvent::Other(other.to_string())),
            };
            match (expected, got) {
                (Some(e), Ok(g)) => assert_eq!(e, g, "{p:?}"),
                (None, Err(WebhookError::BadPayload(_))) => {}
                (e, g) => panic!("{p:?}: expected {e:?}, got {g:?}, for body {:?}", String::from_utf8_lossy(req.body)),
            }
        }
    }
});
