//! Compression negotiated once (`[compression]`): an entry is stored in one
//! content coding, the backend's or one cachegate encoded an identity answer
//! to before storing, and each client gets it as it accepts it: the stored
//! bytes as they are when it accepts their coding (no copy), else decoded
//! on the fly (streamed, bounded memory, at most `max_decoded_bytes`).
//!
//! As nginx's gzip/gunzip and Varnish's `http_gzip_support`: a client that
//! accepts neither the stored coding nor `identity` still gets identity
//! (RFC 9110 §12.5.3 allows it; a 406 would only break such clients).
//! A representation cachegate transformed carries a weak `ETag` (§8.8.1).

use crate::config::CompressionConfig;
use crate::proxy::Body;
use crate::rules::{CacheRule, ContentCoding, RuleCompress};
use crate::BoxError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// Input is fed to a decoder this many bytes at a time, so that one step's
/// output stays small whatever the ratio (gzip: at most ~1032 times).
const FEED_SLICE: usize = 256;

/// A decoded chunk is handed on once it is this large.
const OUT_CHUNK: usize = 32 * 1024;

/// The coding of a stored or fetched body: its one `Content-Encoding`
/// value, when cachegate can decode it. `None` for identity, and for
/// anything else (unknown or stacked codings), which is left as it is.
pub(super) fn coding_of(headers: &HeaderMap) -> Option<ContentCoding> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    ContentCoding::parse(value.as_bytes().trim_ascii())
}

/// Whether the request's `Accept-Encoding` accepts `coding` (RFC 9110
/// §12.5.3): listed with a non-zero `q`, or not listed and `*` with a
/// non-zero `q`. Without the field, only identity is taken as accepted (as
/// real proxies do, though the RFC allows any). Parsed in place.
pub(super) fn accepts(request: &HeaderMap, coding: ContentCoding) -> bool {
    let mut named = None;
    let mut star = None;
    for line in request.get_all(header::ACCEPT_ENCODING) {
        for member in line.as_bytes().split(|b| *b == b',') {
            let mut parts = member.split(|b| *b == b';');
            let token = parts.next().unwrap_or_default().trim_ascii();
            let q = parts
                .filter_map(|p| {
                    let p = p.trim_ascii();
                    let (k, v) = p.split_at(p.iter().position(|b| *b == b'=')?);
                    k.trim_ascii()
                        .eq_ignore_ascii_case(b"q")
                        .then(|| qvalue(v[1..].trim_ascii()))
                })
                .next_back()
                .unwrap_or(Some(1000));
            // A malformed q is taken as refusal: identity is always readable.
            let q = q.unwrap_or(0);
            if token == b"*" {
                star = Some(q);
            } else if ContentCoding::parse(token) == Some(coding) {
                named = Some(q);
            }
        }
    }
    named.or(star).is_some_and(|q| q > 0)
}

/// A qvalue (RFC 9110 §12.4.2) in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|b| *b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The coding a response must be decoded from for this client: its
/// stored coding, when the client does not accept it.
pub(super) fn must_decode(request: &HeaderMap, response: &HeaderMap) -> Option<ContentCoding> {
    let coding = coding_of(response)?;
    (!accepts(request, coding)).then_some(coding)
}

/// `W/` before a strong `ETag`: the representation was transformed.
pub(super) fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = Vec::with_capacity(etag.len() + 2);
        weak.extend_from_slice(b"W/");
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

/// After a 304 refreshed a transformed entry: the backend names its own
/// (strong) tag again; the stored representation keeps it weak.
pub(super) fn keep_weak_etag(stored_was_weak: bool, headers: &mut HeaderMap) {
    if stored_was_weak {
        weaken_etag(headers);
    }
}

/// Whether an `ETag` is weak.
pub(super) fn has_weak_etag(headers: &HeaderMap) -> bool {
    headers
        .get(header::ETAG)
        .is_some_and(|e| e.as_bytes().starts_with(b"W/"))
}

/// `Vary: Accept-Encoding` added unless the response already varies on it
/// (or on everything).
pub(super) fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|n| {
            let n = n.trim_ascii();
            n == b"*" || n.eq_ignore_ascii_case(b"accept-encoding")
        });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The head of a decoded representation: no coding, no length (it is
/// streamed chunked), a weak tag, no ranges offered.
pub(super) fn decoded_head(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    weaken_etag(headers);
    vary_on_accept_encoding(headers);
}

/// A response as this client may take it: decoded on the fly when its
/// coding is not one the client accepts (for answers that are not stored:
/// the backend was asked with cachegate's own `Accept-Encoding`); for
/// HEAD, the head alone (no decoder is built for a body never sent).
pub(super) fn for_client(
    request: &HeaderMap,
    resp: http::Response<Body>,
    is_head: bool,
    max_decoded: u64,
) -> http::Response<Body> {
    let coding = must_decode(request, resp.headers());
    if coding.is_none() && !is_head {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if coding.is_some() {
        decoded_head(&mut parts.headers);
    }
    let body = match coding {
        _ if is_head => crate::proxy::empty(),
        Some(coding) => Decoding::new(body, coding, max_decoded).boxed(),
        None => body,
    };
    http::Response::from_parts(parts, body)
}

/// Counts bytes written, keeps them if asked, and fails past `cap`.
struct Sink {
    out: Vec<u8>,
    keep: bool,
    total: u64,
    cap: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > self.cap {
            return Err(io::Error::other(
                "decoded body larger than [compression] max_decoded_bytes",
            ));
        }
        if self.keep {
            self.out.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A push decoder: compressed bytes in, decoded bytes into its [`Sink`].
enum Decoder {
    Gzip(Box<flate2::write::MultiGzDecoder<Sink>>),
    Br(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(Box<ZstdPush>),
}

/// zstd's streaming decoder driven by hand: unlike its `Write` adapter, it
/// tells a frame cut short (the last step's hint is not 0) from a whole one.
struct ZstdPush {
    raw: zstd::stream::raw::Decoder<'static>,
    sink: Sink,
    out: Vec<u8>,
    /// zstd's hint after the last step: 0 once a frame is complete.
    hint: usize,
}

impl ZstdPush {
    fn feed(&mut self, input: &[u8]) -> io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(input);
        loop {
            let mut output = OutBuffer::around(&mut self.out[..]);
            self.hint = self.raw.run(&mut input, &mut output)?;
            let written = output.pos();
            self.sink.write_all(&self.out[..written])?;
            // Done when the input is used up and the output buffer was not
            // filled (nothing more is held back).
            if input.pos() == input.src.len() && written < self.out.len() {
                return Ok(());
            }
        }
    }

    /// Every output was drained by `feed` (it runs until the buffer is not
    /// filled); what is left to know is whether the last frame ended.
    fn finish(&mut self) -> io::Result<()> {
        if self.hint != 0 {
            return Err(io::Error::other("zstd stream cut short"));
        }
        Ok(())
    }
}

impl Decoder {
    fn new(coding: ContentCoding, sink: Sink) -> io::Result<Decoder> {
        Ok(match coding {
            ContentCoding::Gzip => Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
            ContentCoding::Br => Decoder::Br(Box::new(brotli::DecompressorWriter::new(sink, 4096))),
            ContentCoding::Zstd => Decoder::Zstd(Box::new(ZstdPush {
                raw: zstd::stream::raw::Decoder::new()?,
                sink,
                out: vec![0; 16 * 1024],
                // No frame yet: an empty body is not a zstd stream.
                hint: 1,
            })),
        })
    }

    fn feed(&mut self, input: &[u8]) -> io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(input),
            Decoder::Br(d) => d.write_all(input),
            Decoder::Zstd(d) => d.feed(input),
        }
    }

    /// The end of the input: a stream cut short is an error.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Br(d) => d.close().map_err(|_| io::Error::other("brotli stream cut short")),
            Decoder::Zstd(d) => d.finish(),
        }
    }

    fn sink(&mut self) -> &mut Sink {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Br(d) => d.get_mut(),
            Decoder::Zstd(d) => &mut d.sink,
        }
    }
}

/// A body decoded as it streams: each step feeds [`FEED_SLICE`] input
/// bytes, and hands on what came out once it reaches [`OUT_CHUNK`] (or the
/// input waits), so memory stays bounded whatever the body's ratio. A body
/// that does not decode, or decodes to more than the cap, breaks off with
/// an error: never passed on as if complete.
pub(super) struct Decoding {
    inner: Body,
    /// The decoder holds raw pointers (zstd); the lock makes the body
    /// `Sync` as the boxed body type requires. Only this body takes it.
    decoder: Mutex<Decoder>,
    pending: Bytes,
    ended: bool,
    failed: Option<String>,
}

impl Decoding {
    pub(super) fn new(inner: Body, coding: ContentCoding, max_decoded: u64) -> Decoding {
        let sink = Sink {
            out: Vec::new(),
            keep: true,
            total: 0,
            cap: max_decoded,
        };
        let (decoder, failed) = match Decoder::new(coding, sink) {
            Ok(d) => (d, None),
            Err(e) => {
                let sink = Sink {
                    out: Vec::new(),
                    keep: false,
                    total: 0,
                    cap: 0,
                };
                (
                    Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
                    Some(e.to_string()),
                )
            }
        };
        Decoding {
            inner,
            decoder: Mutex::new(decoder),
            pending: Bytes::new(),
            ended: false,
            failed,
        }
    }

    fn take_out(decoder: &mut Decoder) -> Option<Bytes> {
        let out = &mut decoder.sink().out;
        (!out.is_empty()).then(|| Bytes::from(std::mem::take(out)))
    }
}

fn broke(why: impl std::fmt::Display) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Err(format!("decoding the stored body failed: {why}").into())))
}

impl http_body::Body for Decoding {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(why) = this.failed.take() {
            this.ended = true;
            return broke(why);
        }
        let Ok(decoder) = this.decoder.get_mut() else {
            return broke("decoder poisoned");
        };
        loop {
            if !this.pending.is_empty() {
                let slice = this.pending.split_to(this.pending.len().min(FEED_SLICE));
                if let Err(e) = decoder.feed(&slice) {
                    this.pending = Bytes::new();
                    this.ended = true;
                    return broke(e);
                }
                if decoder.sink().out.len() >= OUT_CHUNK {
                    if let Some(out) = Decoding::take_out(decoder) {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                continue;
            }
            if this.ended {
                return Poll::Ready(Decoding::take_out(decoder).map(|out| Ok(Frame::data(out))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    return match Decoding::take_out(decoder) {
                        Some(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        None => Poll::Pending,
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Err(e) = decoder.finish() {
                        return broke(e);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.pending = data;
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Whether `body`, in `coding`, decodes completely to at most `cap` bytes
/// (the decoded bytes are counted, not kept). Blocking: run it off the
/// runtime.
fn decodes_within(coding: ContentCoding, body: &[u8], cap: u64) -> bool {
    let sink = Sink {
        out: Vec::new(),
        keep: false,
        total: 0,
        cap,
    };
    let Ok(mut decoder) = Decoder::new(coding, sink) else {
        return false;
    };
    body.chunks(64 * 1024).all(|c| decoder.feed(c).is_ok()) && decoder.finish().is_ok()
}

/// Whether a body `stored_form` or a streamed fill is about to store
/// decodes completely within `cap` (off the runtime): no entry is stored
/// that a client could not be given decoded.
pub(super) async fn decodes_within_cap(coding: ContentCoding, body: Bytes, cap: u64) -> bool {
    tokio::task::spawn_blocking(move || decodes_within(coding, &body, cap))
        .await
        .unwrap_or(false)
}

/// Whether an answer names a coding cachegate cannot decode (unknown or
/// stacked): such an answer is passed on, never stored, whichever way it
/// is filled.
pub(super) fn undecodable(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_ENCODING) && coding_of(headers).is_none()
}

/// `body` encoded in `coding`. Blocking: run it off the runtime.
fn encode(coding: ContentCoding, level: u32, body: &[u8]) -> io::Result<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 3 + 64);
    match coding {
        ContentCoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            e.write_all(body)?;
            e.finish()
        }
        ContentCoding::Br => {
            let mut e = brotli::CompressorWriter::new(out, 4096, level, 22);
            e.write_all(body)?;
            e.flush()?;
            Ok(e.into_inner())
        }
        ContentCoding::Zstd => zstd::stream::encode_all(body, level as i32),
    }
}

/// What storing makes of a fetched answer's body.
pub(super) enum StoredForm {
    /// Stored as it came (identity, or a coding it was already in).
    AsIs,
    /// Encoded by cachegate: the new body.
    Encoded(Bytes),
    /// Not stored: an encoded body that does not decode, or decodes to more
    /// than `max_decoded_bytes` (a decompression bomb), or a coding
    /// cachegate cannot decode.
    Refused(&'static str),
}

/// The one form a fetched answer is stored in, its head adjusted to it:
/// an encoded answer as it is (checked to decode within the cap, `Vary:
/// Accept-Encoding` added); an identity one encoded when the rule (or
/// `encode`) asks and it qualifies (a compressible type, at least
/// `min_bytes`, no `no-transform`, not a 206/304, and smaller encoded).
pub(super) async fn stored_form(
    config: &CompressionConfig,
    rule: &CacheRule,
    status: StatusCode,
    headers: &mut HeaderMap,
    body: &Bytes,
) -> StoredForm {
    if headers.contains_key(header::CONTENT_ENCODING) {
        let Some(coding) = coding_of(headers) else {
            return StoredForm::Refused("content-encoding");
        };
        if !decodes_within_cap(coding, body.clone(), config.max_decoded_bytes).await {
            return StoredForm::Refused("decoded-too-large");
        }
        vary_on_accept_encoding(headers);
        return StoredForm::AsIs;
    }
    let coding = match rule.compress {
        RuleCompress::Inherit => config.encode,
        RuleCompress::Off => None,
        RuleCompress::Encode(coding) => Some(coding),
    };
    let Some(coding) = coding else {
        return StoredForm::AsIs;
    };
    if !may_encode(config, status, headers, body.len()) {
        return StoredForm::AsIs;
    }
    let (level, input) = (config.level_for(coding), body.clone());
    let encoded = tokio::task::spawn_blocking(move || encode(coding, level, &input)).await;
    let Ok(Ok(encoded)) = encoded else {
        return StoredForm::AsIs;
    };
    if encoded.len() >= body.len() {
        return StoredForm::AsIs;
    }
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(encoded.len()));
    weaken_etag(headers);
    vary_on_accept_encoding(headers);
    StoredForm::Encoded(Bytes::from(encoded))
}

/// Whether an identity answer may be encoded before storing.
fn may_encode(config: &CompressionConfig, status: StatusCode, headers: &HeaderMap, len: usize) -> bool {
    // (Event streams never get here: `storable.rs` refuses them.)
    let no_transform = super::freshness::Directives::parse(headers).no_transform;
    let typed = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| config.compressible(t.as_bytes()));
    !matches!(
        status,
        StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT
    ) && len >= config.min_bytes
        && len > 0
        && !no_transform
        && typed
        && !headers.contains_key(header::CONTENT_RANGE)
}

/// A whole body decoded (for the unit tests and callers that need it all).
#[cfg(test)]
fn decode_all(coding: ContentCoding, body: &[u8], cap: u64) -> io::Result<Vec<u8>> {
    let sink = Sink {
        out: Vec::new(),
        keep: true,
        total: 0,
        cap,
    };
    let mut d = Decoder::new(coding, sink)?;
    d.feed(body)?;
    d.finish()?;
    Ok(std::mem::take(&mut d.sink().out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_headers as h;

    #[test]
    fn accept_encoding_follows_rfc_9110() {
        let acc = |v: &[&str], c| {
            let pairs: Vec<(&str, &str)> = v.iter().map(|v| ("accept-encoding", *v)).collect();
            accepts(&h(&pairs), c)
        };
        use ContentCoding::*;
        assert!(acc(&["gzip, br"], Gzip));
        assert!(acc(&["br;q=1, gzip"], Br));
        assert!(acc(&["GZIP ; Q=0.5"], Gzip));
        assert!(acc(&["x-gzip"], Gzip));
        assert!(acc(&["deflate", "gzip"], Gzip));
        assert!(!acc(&[], Gzip), "no field: identity only");
        assert!(!acc(&["identity"], Gzip));
        assert!(!acc(&["gzip;q=0"], Gzip));
        assert!(!acc(&["gzip;q=0.000, br"], Gzip));
        assert!(acc(&["*"], Zstd));
        assert!(!acc(&["*;q=0"], Zstd));
        assert!(!acc(&["*, zstd;q=0"], Zstd), "a named coding's q wins over *");
        assert!(acc(&["*;q=0, zstd"], Zstd));
        assert!(!acc(&["gzip;q=2"], Gzip), "a malformed q refuses");
        assert!(!acc(&["gzipx"], Gzip));
    }

    #[test]
    fn each_coding_round_trips() {
        let body: Vec<u8> = br#"{"id":1,"title":"a task","done":false}"#.repeat(100);
        for coding in ContentCoding::ALL {
            let encoded = encode(coding, coding.default_level(), &body).unwrap();
            assert!(encoded.len() < body.len() / 5, "{coding:?}");
            assert_eq!(decode_all(coding, &encoded, 1 << 20).unwrap(), body, "{coding:?}");
            assert!(decodes_within(coding, &encoded, body.len() as u64));
            assert!(
                !decodes_within(coding, &encoded, body.len() as u64 - 1),
                "{coding:?} cap"
            );
            assert!(
                !decodes_within(coding, &encoded[..encoded.len() / 2], 1 << 20),
                "{coding:?} cut"
            );
        }
    }

    #[tokio::test]
    async fn a_streamed_decoding_yields_bounded_chunks_and_stops_at_the_cap() {
        let body = vec![b'a'; 4 << 20];
        let gz = encode(ContentCoding::Gzip, 9, &body).unwrap();
        let mut d = Decoding::new(crate::proxy::full(gz.clone()), ContentCoding::Gzip, 8 << 20);
        let mut total = 0;
        while let Some(frame) = d.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= OUT_CHUNK + FEED_SLICE * 1100, "a chunk of {}", data.len());
            total += data.len();
        }
        assert_eq!(total, body.len());
        let capped = Decoding::new(crate::proxy::full(gz), ContentCoding::Gzip, 1 << 20);
        assert!(capped.collect().await.is_err());
    }

    #[test]
    fn etags_weaken_once() {
        let mut m = h(&[("etag", "\"v1\"")]);
        weaken_etag(&mut m);
        weaken_etag(&mut m);
        assert_eq!(m["etag"], "W/\"v1\"");
        let mut v = h(&[("vary", "Origin, accept-encoding")]);
        vary_on_accept_encoding(&mut v);
        assert_eq!(v.get_all("vary").iter().count(), 1);
    }
}
