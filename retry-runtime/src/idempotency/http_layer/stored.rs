//! A response as the store keeps it: status, the allow-listed headers and
//! the body, in a compact binary form (a JSON array of body bytes would be
//! four times larger).

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header::CONTENT_TYPE},
};

use super::IDEMPOTENCY_REPLAYED;
use crate::idempotency::ResultCodec;

/// The header that names the first response's status when its body was too
/// large to keep and the replay is a `413`.
pub(super) const ORIGINAL_STATUS: HeaderName =
    HeaderName::from_static("idempotency-original-status");

/// The stored part of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredResponse {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl StoredResponse {
    /// `status`, the headers of `headers` named in `keep`, and `body`.
    pub(super) fn keep(
        status: StatusCode,
        headers: &HeaderMap,
        keep: &[HeaderName],
        body: Bytes,
    ) -> StoredResponse {
        let headers = keep
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|value| (name.clone(), value.clone()))
            })
            .collect();
        StoredResponse {
            status,
            headers,
            body,
        }
    }

    /// What a duplicate gets when the first response's body was larger than
    /// `limit` (its length is not known: it is read only past the bound): a
    /// `413` that says the request ran once and that its response cannot be
    /// replayed.
    pub(super) fn too_large(status: StatusCode, limit: usize) -> StoredResponse {
        StoredResponse::unreplayable(
            status,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request with this Idempotency-Key ran once and answered {status}, but its \
                 response body is larger than the {limit} bytes kept for replays; it cannot be \
                 replayed. Raise IdempotencyLayer::max_body or return a smaller body."
            ),
        )
    }

    /// A response that stands for one that cannot be replayed: `replay`
    /// with `message`, naming the first response's status in
    /// `Idempotency-Original-Status`.
    pub(super) fn unreplayable(
        original: StatusCode,
        replay: StatusCode,
        message: String,
    ) -> StoredResponse {
        StoredResponse {
            status: replay,
            headers: vec![
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (ORIGINAL_STATUS, HeaderValue::from(original.as_u16())),
            ],
            body: Bytes::from(message),
        }
    }

    /// The response itself, unmarked (for the first caller).
    pub(super) fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }

    /// The replay: the stored status, headers and body, marked
    /// `Idempotency-Replayed: true`.
    pub(super) fn into_replay(self) -> Response<Body> {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(IDEMPOTENCY_REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

/// [`StoredResponse`] as bytes: status (u16), header count (u16), each header
/// as name length (u16), name, value length (u32), value; then the body.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ResponseCodec;

impl ResultCodec<StoredResponse> for ResponseCodec {
    fn name(&self) -> &'static str {
        "http-response"
    }

    fn encode(&self, value: &StoredResponse) -> Result<Vec<u8>, String> {
        let count = u16::try_from(value.headers.len())
            .map_err(|_| format!("{} headers are too many to store", value.headers.len()))?;
        let mut bytes = Vec::with_capacity(4 + value.body.len() + 64 * value.headers.len());
        bytes.extend_from_slice(&value.status.as_u16().to_be_bytes());
        bytes.extend_from_slice(&count.to_be_bytes());
        for (name, header) in &value.headers {
            let name = name.as_str().as_bytes();
            let value = header.as_bytes();
            let value_length = u32::try_from(value.len())
                .map_err(|_| "a header value is too long to store".to_owned())?;
            // Header names are short: the http crate refuses names over 64 KiB.
            bytes.extend_from_slice(&(name.len() as u16).to_be_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&value_length.to_be_bytes());
            bytes.extend_from_slice(value);
        }
        bytes.extend_from_slice(&value.body);
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<StoredResponse, String> {
        let mut reader = Reader(bytes);
        let status = StatusCode::from_u16(reader.u16()?)
            .map_err(|error| format!("a stored response has an invalid status: {error}"))?;
        let count = reader.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name_length = usize::from(reader.u16()?);
            let name = HeaderName::from_bytes(reader.take(name_length)?)
                .map_err(|error| format!("a stored header name is invalid: {error}"))?;
            let value_length = reader.u32()? as usize;
            let value = HeaderValue::from_bytes(reader.take(value_length)?)
                .map_err(|error| format!("a stored header value is invalid: {error}"))?;
            headers.push((name, value));
        }
        Ok(StoredResponse {
            status,
            headers,
            body: Bytes::copy_from_slice(reader.0),
        })
    }
}

/// Reads big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        if self.0.len() < length {
            return Err("a stored response is truncated".to_owned());
        }
        let (head, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header::{LOCATION, SET_COOKIE};

    use super::*;

    fn response_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(LOCATION, HeaderValue::from_static("/payments/7"));
        headers.append(SET_COOKIE, HeaderValue::from_static("session=secret"));
        headers
    }

    #[test]
    fn keeps_only_the_allow_listed_headers() {
        let stored = StoredResponse::keep(
            StatusCode::CREATED,
            &response_headers(),
            &[CONTENT_TYPE, LOCATION],
            Bytes::from_static(b"{}"),
        );
        let names: Vec<&str> = stored
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["content-type", "location"]);
    }

    #[test]
    fn round_trips_status_headers_and_binary_body() {
        let mut headers = response_headers();
        headers.append(LOCATION, HeaderValue::from_static("/payments/7/receipt"));
        let stored = StoredResponse::keep(
            StatusCode::CREATED,
            &headers,
            &[CONTENT_TYPE, LOCATION],
            Bytes::from_static(&[0, 159, 146, 150, 255]),
        );
        let bytes = ResponseCodec.encode(&stored).unwrap();
        assert_eq!(ResponseCodec.decode(&bytes).unwrap(), stored);
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_wrong_response() {
        let stored = StoredResponse::keep(
            StatusCode::OK,
            &response_headers(),
            &[CONTENT_TYPE],
            Bytes::new(),
        );
        let bytes = ResponseCodec.encode(&stored).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                ResponseCodec.decode(&bytes[..cut]).is_err(),
                "{cut} of {} bytes decoded",
                bytes.len()
            );
        }
    }

    #[test]
    fn a_replay_is_marked_and_a_too_large_one_names_the_first_status() {
        let replay = StoredResponse::too_large(StatusCode::CREATED, 1024).into_replay();
        assert_eq!(replay.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(replay.headers()[IDEMPOTENCY_REPLAYED], "true");
        assert_eq!(replay.headers()[ORIGINAL_STATUS], "201");
    }
}
