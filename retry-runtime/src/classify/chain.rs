//! Finding a classifiable error in a chain of `source()`s.

use std::error::Error;

use super::{Classify, Elapsed};

/// The first error in `error`'s source chain (itself included) whose type
/// steadfast knows: `std::io::Error`, [`Elapsed`], `tokio::time::error::Elapsed`
/// and, behind their features, `tonic::Status`, `reqwest::Error`,
/// `sqlx::Error` and [`HttpError`](crate::http::HttpError).
///
/// ```
/// use steadfast::{classify_source_chain, Code};
/// let error = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(classify_source_chain(&error).and_then(|found| found.code()), Some(Code::Unavailable));
/// ```
pub fn classify_source_chain<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a dyn Classify> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = known(error) {
            return Some(found);
        }
        current = error.source();
    }
    None
}

fn known<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a dyn Classify> {
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return Some(io);
    }
    if let Some(elapsed) = error.downcast_ref::<Elapsed>() {
        return Some(elapsed);
    }
    if error
        .downcast_ref::<tokio::time::error::Elapsed>()
        .is_some()
    {
        return Some(&crate::Code::DeadlineExceeded);
    }
    #[cfg(feature = "tonic")]
    if let Some(status) = error.downcast_ref::<::tonic::Status>() {
        return Some(status);
    }
    #[cfg(feature = "http")]
    if let Some(http) = error.downcast_ref::<super::http::HttpError>() {
        return Some(http);
    }
    #[cfg(feature = "reqwest")]
    if let Some(reqwest) = error.downcast_ref::<::reqwest::Error>() {
        return Some(reqwest);
    }
    #[cfg(feature = "sqlx")]
    if let Some(sqlx) = error.downcast_ref::<::sqlx::Error>() {
        return Some(sqlx);
    }
    None
}
