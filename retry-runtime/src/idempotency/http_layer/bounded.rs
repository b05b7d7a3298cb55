//! A response body read up to a bound: whole if it fits, else the part read
//! and the rest, unread, so that a body that never ends cannot grow the
//! layer's memory nor hold its claim forever.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::{Body, Bytes, HttpBody};
use http_body_util::BodyExt;

/// A response body after [`read_bounded`].
pub(super) enum Bounded {
    /// The whole body: at most the bound.
    Whole(Bytes),
    /// Over the bound: the first caller gets it as a stream (the part read
    /// first, then the rest as the handler yields it); nothing is kept.
    Over(Body),
}

/// Reads `body` until it ends or more than `limit` bytes have been read,
/// whichever is first. The chunks read are held as the handler yielded
/// them (not copied) and joined only when the body fits; trailers are
/// dropped from a whole body, as [`axum::body::to_bytes`] drops them.
pub(super) async fn read_bounded(mut body: Body, limit: usize) -> Result<Bounded, axum::Error> {
    let mut chunks = Vec::new();
    let mut length = 0_usize;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame?.into_data() else {
            continue;
        };
        length = length.saturating_add(chunk.len());
        chunks.push(chunk);
        if length > limit {
            return Ok(Bounded::Over(Body::new(Prefixed {
                read: chunks.into_iter(),
                rest: body,
            })));
        }
    }
    Ok(Bounded::Whole(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    }))
}

/// The chunks already read, then the rest of the body.
struct Prefixed {
    read: std::vec::IntoIter<Bytes>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Some(chunk) = self.read.next() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.len() == 0 && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let read: usize = self.read.as_slice().iter().map(Bytes::len).sum();
        let read = read as u64;
        let rest = self.rest.size_hint();
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint.set_lower(rest.lower().saturating_add(read));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body yielding `chunks` one frame each, as a streaming handler does.
    struct Chunks(std::vec::IntoIter<&'static [u8]>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            let chunk = self.0.next().map(Bytes::from_static);
            Poll::Ready(chunk.map(|chunk| Ok(http_body::Frame::data(chunk))))
        }
    }

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        Body::new(Chunks(chunks.into_iter()))
    }

    #[tokio::test]
    async fn a_body_within_the_bound_is_whole_and_one_over_it_streams_on() {
        let whole = read_bounded(chunked(vec![b"ab", b"cd"]), 4).await.unwrap();
        assert!(matches!(whole, Bounded::Whole(ref body) if body == "abcd"));
        let empty = read_bounded(chunked(vec![]), 4).await.unwrap();
        assert!(matches!(empty, Bounded::Whole(ref body) if body.is_empty()));
        let Bounded::Over(body) = read_bounded(chunked(vec![b"ab", b"cd", b"e", b"fg"]), 4)
            .await
            .unwrap()
        else {
            panic!("5 bytes are over a bound of 4");
        };
        let all = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(all, "abcdefg", "the first caller gets every byte");
    }
}
