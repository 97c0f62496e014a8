//! Deciding whether a backend response may be stored, and collecting its body.

use crate::proxy::Body;
use crate::BoxError;
use bytes::Bytes;
use http::{header, HeaderMap};
use http_body::Frame;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why a response is not stored beyond its cache directives (which
/// `freshness::lifetime` reads), as `Cache-Status` `detail=` names it;
/// `None` means storable as far as headers go.
pub fn unstorable_reason(headers: &HeaderMap) -> Option<&'static str> {
    // Stricter than RFC 9111 on purpose: a cookie is one user's.
    if headers.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    // An event stream (SSE) is unbounded and live: each client must get
    // its own, as it happens, whatever lifetime the backend gave it.
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
    {
        return Some("event-stream");
    }
    if headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|p| p.trim() == "*"))
            .unwrap_or(true)
    }) {
        return Some("vary");
    }
    None
}

/// The declared Content-Length, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads a whole body into memory; on failure returns what arrived and the error.
pub async fn collect(mut body: Body, limit: usize) -> Result<Vec<Bytes>, (Vec<Bytes>, BoxError)> {
    let mut chunks = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    chunks.push(data);
                    if total > limit {
                        return Err((chunks, "body larger than declared".into()));
                    }
                }
            }
            Err(e) => return Err((chunks, e)),
        }
    }
    Ok(chunks)
}

/// Joins chunks without copying when there is only one.
pub fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut v = Vec::with_capacity(many.iter().map(|c| c.len()).sum());
            for c in many {
                v.extend_from_slice(c);
            }
            Bytes::from(v)
        }
    }
}

/// Streams a body of unknown length to the client while keeping a copy of
/// up to `limit` bytes; when the body ends complete and within the limit,
/// `on_complete` gets the copy. A body that fails or is dropped early is
/// never handed over, so nothing partial is stored.
pub struct TeeBody {
    inner: Body,
    kept: Vec<Bytes>,
    kept_len: usize,
    limit: usize,
    on_complete: Option<Box<dyn FnOnce(Vec<Bytes>) + Send + Sync>>,
}

impl TeeBody {
    pub fn new(inner: Body, limit: usize, on_complete: impl FnOnce(Vec<Bytes>) + Send + Sync + 'static) -> TeeBody {
        TeeBody {
            inner,
            kept: Vec::new(),
            kept_len: 0,
            limit,
            on_complete: Some(Box::new(on_complete)),
        }
    }
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.on_complete.is_some() {
                    if let Some(data) = frame.data_ref() {
                        this.kept_len += data.len();
                        if this.kept_len > this.limit {
                            // Too large to store: stop keeping a copy.
                            this.on_complete = None;
                            this.kept = Vec::new();
                        } else {
                            this.kept.push(data.clone());
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.on_complete = None;
                this.kept = Vec::new();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(done) = this.on_complete.take() {
                    done(std::mem::take(&mut this.kept));
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // While a copy is pending, insist on one more poll so the end of
        // the stream is seen here and the copy handed over.
        self.on_complete.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
