//! `reqwest::Error`, classified by what failed.

use std::error::Error as _;

use ::reqwest::Error;

use super::{Classify, classify_source_chain};
use crate::Code;

/// Classified by what failed, in this order:
///
/// | the error | code |
/// |---|---|
/// | timed out (`is_timeout`, also while connecting) | `DeadlineExceeded` |
/// | could not connect (`is_connect`) | `Unavailable` |
/// | from `error_for_status` (`is_status`) | the status's code (503 `Unavailable`, 404 `NotFound`, …) |
/// | sending the request or reading the body failed (`is_request`, `is_body`) | the first error steadfast knows in the source chain (an `io::Error`, …), else `Unavailable` |
/// | the body could not be decoded (`is_decode`) | `Internal`; but when reading it failed (`bytes` and `text` report a connection lost mid-body as a decode error caused by an `io::Error`), the code of that error |
/// | the request could not be built (`is_builder`) | `InvalidArgument` |
/// | too many redirects (`is_redirect`) | `FailedPrecondition` |
/// | anything else | `Unknown` |
///
/// A `reqwest::Error` has no `retry_after`: it does not keep the response's
/// headers. Use [`HttpError::check`](crate::http::HttpError::check) to keep
/// `Retry-After`.
impl Classify for Error {
    fn code(&self) -> Option<Code> {
        Some(if self.is_timeout() {
            Code::DeadlineExceeded
        } else if self.is_connect() {
            Code::Unavailable
        } else if let Some(status) = self.status() {
            return status.code();
        } else if self.is_request() || self.is_body() {
            self.source()
                .and_then(classify_source_chain)
                .and_then(|found| found.code())
                .filter(|code| *code != Code::Unknown)
                .unwrap_or(Code::Unavailable)
        } else if self.is_decode() {
            // `bytes`, `text` and `chunk` report a body that failed while it
            // was read (an `io::Error` under hyper's) as a decode error: a
            // broken connection, not a bad body.
            self.source()
                .and_then(classify_source_chain)
                .and_then(|found| found.code())
                .unwrap_or(Code::Internal)
        } else if self.is_builder() {
            Code::InvalidArgument
        } else if self.is_redirect() {
            Code::FailedPrecondition
        } else {
            Code::Unknown
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, net::SocketAddr, time::Duration};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::{RetryAfter, http::HttpError};

    /// A one-connection HTTP server on 127.0.0.1 that reads a request and
    /// answers with `response`, as raw bytes, then closes the connection,
    /// or holds it open without another byte (a peer gone silent).
    async fn answer_once(response: &'static str, hold_open: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = socket.read(&mut buffer).await.unwrap();
                if read == 0 {
                    return;
                }
                request.extend_from_slice(&buffer[..read]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            if hold_open {
                // Dropped with the test's runtime.
                std::future::pending::<()>().await;
            }
            socket.shutdown().await.unwrap();
        });
        address
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn refused_connections_are_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = block_on(
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/"))
                .send(),
        )
        .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert_eq!(error.code(), Some(Code::Unavailable));
        assert_eq!(error.retry_after(), None);
    }

    #[test]
    fn a_request_that_cannot_be_built_is_an_invalid_argument() {
        let error = block_on(reqwest::Client::new().get("not a url").send()).unwrap_err();
        assert!(error.is_builder(), "{error:?}");
        assert_eq!(error.code(), Some(Code::InvalidArgument));
    }

    #[test]
    fn timeouts_are_deadline_exceeded() {
        let error = block_on(async {
            let address = answer_once("", true).await;
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(50))
                .build()
                .unwrap();
            client
                .get(format!("http://{address}/"))
                .send()
                .await
                .unwrap_err()
        });
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(error.code(), Some(Code::DeadlineExceeded));
    }

    #[test]
    fn a_connection_closed_before_the_answer_is_unavailable() {
        let error = block_on(async {
            let address = answer_once("", false).await;
            reqwest::Client::new()
                .get(format!("http://{address}/"))
                .send()
                .await
                .unwrap_err()
        });
        assert!(error.is_request(), "{error:?}");
        assert_eq!(error.code(), Some(Code::Unavailable));
    }

    #[test]
    fn error_for_status_is_classified_by_its_status() {
        let error = block_on(async {
            let address =
                answer_once("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", false).await;
            let response = reqwest::get(format!("http://{address}/")).await.unwrap();
            response.error_for_status().unwrap_err()
        });
        assert!(error.is_status(), "{error:?}");
        assert_eq!(error.code(), Some(Code::NotFound));
    }

    #[test]
    fn a_body_cut_short_is_unavailable() {
        let error = block_on(async {
            let address =
                answer_once("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", false).await;
            let response = reqwest::get(format!("http://{address}/")).await.unwrap();
            response.text().await.unwrap_err()
        });
        assert!(error.is_decode(), "{error:?}");
        assert_eq!(error.code(), Some(Code::Unavailable));
    }

    #[test]
    fn a_body_that_times_out_is_deadline_exceeded() {
        let error = block_on(async {
            // A promised 100 bytes, four sent.
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nslow";
            let address = answer_once(head, true).await;
            let client = reqwest::Client::builder()
                .read_timeout(Duration::from_millis(50))
                .build()
                .unwrap();
            let response = client
                .get(format!("http://{address}/"))
                .send()
                .await
                .unwrap();
            response.bytes().await.unwrap_err()
        });
        assert!(error.is_timeout(), "{error:?}");
        assert_eq!(error.code(), Some(Code::DeadlineExceeded));
    }

    #[test]
    fn check_keeps_the_status_and_retry_after() {
        let error = block_on(async {
            let address = answer_once(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n",
                false,
            )
            .await;
            let response = reqwest::get(format!("http://{address}/ledger"))
                .await
                .unwrap();
            HttpError::check(response).unwrap_err()
        });
        assert_eq!(
            error.status(),
            Some(::http::StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(error.code(), Some(Code::Unavailable));
        assert_eq!(
            Classify::retry_after(&error),
            Some(RetryAfter::Delay(Duration::from_secs(2)))
        );
        assert!(
            error
                .to_string()
                .starts_with("HTTP status 503 Service Unavailable from http://127.0.0.1:")
        );
        assert!(error.to_string().ends_with("/ledger"));
    }

    #[test]
    fn check_returns_successful_responses() {
        let body = block_on(async {
            let address =
                answer_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfunds", false).await;
            let response = reqwest::get(format!("http://{address}/")).await.unwrap();
            HttpError::check(response).unwrap().text().await.unwrap()
        });
        assert_eq!(body, "funds");
    }

    #[test]
    fn reqwest_errors_convert_into_http_errors() {
        let error: HttpError = block_on(reqwest::Client::new().get("not a url").send())
            .unwrap_err()
            .into();
        assert_eq!(error.status(), None);
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        assert!(error.source().unwrap().is::<reqwest::Error>());

        let error: HttpError = block_on(async {
            let address = answer_once(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n",
                false,
            )
            .await;
            let response = reqwest::get(format!("http://{address}/")).await.unwrap();
            response.error_for_status().unwrap_err()
        })
        .into();
        assert_eq!(error.status(), Some(::http::StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(error.code(), Some(Code::ResourceExhausted));
    }
}
