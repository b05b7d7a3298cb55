//! The key rules of the draft: which methods need a key, what a key may
//! be, what a request's fingerprint covers, how much body is read.

use axum::{
    body::{Body, Bytes},
    extract::OriginalUri,
    http::{
        Extensions, HeaderValue, Method, Response, StatusCode, Uri, header::CONTENT_LENGTH,
        request::Parts,
    },
    response::IntoResponse,
};

use crate::idempotency::Fingerprint;

/// Whether a method needs, takes or ignores a key.
pub(super) fn key_rule(method: &Method) -> KeyRule {
    match *method {
        Method::POST | Method::PATCH => KeyRule::Required,
        Method::PUT | Method::DELETE => KeyRule::Optional,
        _ => KeyRule::Ignored,
    }
}

pub(super) enum KeyRule {
    Required,
    Optional,
    Ignored,
}

/// The key of a header value: visible ASCII, bare or the draft's quoted
/// string (`"…"`, whose quotes are not part of the key).
pub(super) fn parse_key(value: &HeaderValue) -> Result<&str, String> {
    let text = value
        .to_str()
        .map_err(|_| "the Idempotency-Key header must be visible ASCII (e.g. a UUID)".to_owned())?;
    let key = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    if key.is_empty() {
        return Err("the Idempotency-Key header is empty; send a unique value, e.g. a UUID".into());
    }
    Ok(key)
}

pub(super) async fn read_request_body(
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    let too_large = |length: Option<u64>| {
        let length = length.map_or_else(|| "more than".to_owned(), |n| format!("{n} bytes,"));
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {length} over the {limit} bytes an idempotent request may \
                 carry; nothing was run"
            ),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(declared));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let over_limit = error
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if over_limit {
            too_large(None)
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                "the request body could not be read".to_owned(),
            )
        }
    })
}

/// The request's target as the client sent it: under `Router::nest` the
/// router strips the prefix from the URI and keeps the original aside.
pub(super) fn target<'a>(extensions: &'a Extensions, uri: &'a Uri) -> &'a str {
    let uri = extensions
        .get::<OriginalUri>()
        .map_or(uri, |original| &original.0);
    uri.path_and_query().map_or("/", |target| target.as_str())
}

/// Method, path with query, and body: the same key with another of them is
/// another request (`422`).
pub(super) fn fingerprint(parts: &Parts, body: &[u8]) -> Fingerprint {
    let target = target(&parts.extensions, &parts.uri);
    let method = parts.method.as_str();
    Fingerprint::of_parts(&[method.as_bytes(), b" ", target.as_bytes(), b"\n", body])
}

/// An answer that refuses the request, as plain text.
pub(super) fn refuse(status: StatusCode, message: String) -> Response<Body> {
    (status, message).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    #[test]
    fn keys_may_be_bare_or_quoted_and_must_be_visible_ascii() {
        let key =
            |text: &'static str| parse_key(&HeaderValue::from_static(text)).map(str::to_owned);
        assert_eq!(key("abc-123").unwrap(), "abc-123");
        assert_eq!(key("\"abc-123\"").unwrap(), "abc-123");
        assert!(key("").is_err());
        assert!(key("\"\"").is_err());
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert!(parse_key(&latin1).is_err());
    }

    #[test]
    fn only_writes_need_keys() {
        assert!(matches!(key_rule(&Method::POST), KeyRule::Required));
        assert!(matches!(key_rule(&Method::PATCH), KeyRule::Required));
        assert!(matches!(key_rule(&Method::PUT), KeyRule::Optional));
        assert!(matches!(key_rule(&Method::DELETE), KeyRule::Optional));
        assert!(matches!(key_rule(&Method::GET), KeyRule::Ignored));
        assert!(matches!(key_rule(&Method::HEAD), KeyRule::Ignored));
    }

    #[test]
    fn fingerprints_differ_by_method_target_and_body() {
        let parts = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let base = fingerprint(&parts(Method::POST, "/pay?x=1"), b"{}");
        assert_eq!(base, fingerprint(&parts(Method::POST, "/pay?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::PATCH, "/pay?x=1"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::POST, "/pay?x=2"), b"{}"));
        assert_ne!(base, fingerprint(&parts(Method::POST, "/pay?x=1"), b"{ }"));
        assert_eq!(
            base,
            Fingerprint::of("POST /pay?x=1\n{}"),
            "the parts hash as their concatenation"
        );
    }
}
