//! The framing guard: reads a client connection's bytes before hyper does
//! and marks the requests whose framing is ambiguous, so that they are
//! answered 400 and the connection closed, never forwarded.
//!
//! hyper follows RFC 9112 to the letter and accepts two shapes that
//! request-smuggling attacks are made of: Content-Length together with
//! Transfer-Encoding (it reads the body as chunked, §6.3) and a bare LF as
//! a line end (§2.2). An intermediary another server sits behind must not
//! guess (nginx, Varnish and Envoy refuse both), and neither a duplicate
//! Content-Length nor a duplicate Transfer-Encoding, which hyper merges.
//!
//! The guard wraps the socket. It follows the request stream as hyper
//! will read it (heads, then `Content-Length` bytes or chunks, then the
//! next head) and numbers the heads; a head it refuses is recorded in the
//! connection's [`Verdicts`] before hyper sees a byte of it, and the
//! service asks for the verdict of each request it is handed, in order.
//! Anything the guard cannot follow (a chunk line hyper would refuse, a
//! head line longer than hyper's buffer) refuses every later request on
//! the connection rather than risk losing count.

use super::interim::InterimRelay;
use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request's framing was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// A line of the head ends in LF without CR.
    BareLf = 1,
    /// Both Content-Length and Transfer-Encoding.
    LengthAndChunked = 2,
    /// Content-Length more than once.
    DuplicateLength = 3,
    /// Transfer-Encoding more than once.
    DuplicateTransferEncoding = 4,
    /// The guard lost the request boundaries (a malformed body before).
    Unframed = 5,
}

impl Refusal {
    fn from_u8(v: u8) -> Refusal {
        match v {
            1 => Refusal::BareLf,
            2 => Refusal::LengthAndChunked,
            3 => Refusal::DuplicateLength,
            4 => Refusal::DuplicateTransferEncoding,
            _ => Refusal::Unframed,
        }
    }

    /// The message of the 400 answer.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BareLf => "a line of the request head ends in LF without CR",
            Refusal::LengthAndChunked => "the request has both Content-Length and Transfer-Encoding",
            Refusal::DuplicateLength => "the request has more than one Content-Length",
            Refusal::DuplicateTransferEncoding => "the request has more than one Transfer-Encoding",
            Refusal::Unframed => "the request follows a message whose framing could not be read",
        }
    }
}

/// The answer to a refused request: a JSON 400 that closes the connection.
pub fn refusal_response(why: Refusal) -> http::Response<super::Body> {
    let mut resp = super::json_error(http::StatusCode::BAD_REQUEST, "bad_framing", why.message());
    resp.headers_mut()
        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}

/// One connection's verdicts, shared by the guard (which writes them) and
/// the service (which reads one per request, in order).
#[derive(Debug)]
pub struct Verdicts {
    /// Requests from this number on are refused (`u64::MAX`: none).
    refuse_from: AtomicU64,
    reason: AtomicU8,
    /// How many requests the service has been handed.
    handed: AtomicU64,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            refuse_from: AtomicU64::new(u64::MAX),
            reason: AtomicU8::new(0),
            handed: AtomicU64::new(0),
        }
    }
}

impl Verdicts {
    /// The verdict on the next request hyper hands over: `Some` to refuse.
    pub fn next_request(&self) -> Option<Refusal> {
        let n = self.handed.fetch_add(1, Ordering::AcqRel);
        (n >= self.refuse_from.load(Ordering::Acquire)).then(|| Refusal::from_u8(self.reason.load(Ordering::Acquire)))
    }

    fn refuse_from(&self, request: u64, why: Refusal) {
        if request < self.refuse_from.load(Ordering::Acquire) {
            self.reason.store(why as u8, Ordering::Release);
            self.refuse_from.store(request, Ordering::Release);
        }
    }
}

/// Where in the request stream the guard is.
#[derive(Debug)]
enum State {
    /// In a request head.
    Head(HeadScan),
    /// In a body of known length: bytes left.
    Fixed(u64),
    /// In a chunked body, at a chunk-size line.
    ChunkSize,
    /// In a chunk's data: bytes left.
    ChunkData(u64),
    /// After a chunk's data: how many of its CRLF were seen.
    ChunkEnd(u8),
    /// In the trailer section after the last chunk.
    Trailer,
    /// Nothing more to check: every later request is refused already.
    Done,
}

/// What one head has shown so far.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    /// Whether the request line was seen (empty lines before it are skipped).
    started: bool,
    lengths: u32,
    length: Option<u64>,
    encodings: u32,
    chunked: bool,
    /// A Content-Length hyper will refuse: it answers 400 itself.
    malformed: bool,
}

/// The line-following half of the guard, apart from IO for testing.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The start of a line split across reads.
    carry: Vec<u8>,
    /// The longest line followed; longer refuses the rest of the connection
    /// (hyper's head buffer is no larger, so it would refuse it anyway).
    max_line: usize,
    /// The number of the request whose head or body is being read.
    request: u64,
    verdicts: Arc<Verdicts>,
}

impl Scanner {
    pub fn new(max_line: usize, verdicts: Arc<Verdicts>) -> Scanner {
        Scanner {
            state: State::Head(HeadScan::default()),
            carry: Vec::new(),
            max_line,
            request: 0,
            verdicts,
        }
    }

    /// Follows `data`, the next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Fixed(left) | State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        let fixed = matches!(self.state, State::Fixed(_));
                        self.state = if fixed { self.next_head() } else { State::ChunkEnd(0) };
                    }
                }
                State::ChunkEnd(seen) => {
                    let expected = if *seen == 0 { b'\r' } else { b'\n' };
                    if data[0] != expected {
                        // hyper refuses the body; nothing after it is safe.
                        self.lose_count();
                        return;
                    }
                    data = &data[1..];
                    if *seen == 0 {
                        *seen = 1;
                    } else {
                        self.state = State::ChunkSize;
                    }
                }
                State::Head(_) | State::ChunkSize | State::Trailer => {
                    let Some(end) = memchr::memchr(b'\n', data) else {
                        if self.carry.len() + data.len() > self.max_line {
                            match self.state {
                                State::Head(_) => self.refuse(Refusal::Unframed),
                                _ => self.lose_count(),
                            }
                            return;
                        }
                        self.carry.extend_from_slice(data);
                        return;
                    };
                    let (line, rest) = data.split_at(end);
                    data = &rest[1..];
                    if self.carry.is_empty() {
                        self.line(line);
                    } else {
                        let mut whole = std::mem::take(&mut self.carry);
                        whole.extend_from_slice(line);
                        self.line(&whole);
                        whole.clear();
                        self.carry = whole;
                    }
                }
            }
        }
    }

    /// One line, without its LF.
    fn line(&mut self, line: &[u8]) {
        let Some(line) = line.strip_suffix(b"\r") else {
            match self.state {
                State::Head(_) => self.refuse(Refusal::BareLf),
                _ => self.lose_count(),
            }
            return;
        };
        match &mut self.state {
            State::Head(head) => {
                if !head.started {
                    // Empty lines before a request line are skipped (§2.2).
                    head.started = !line.is_empty();
                    return;
                }
                if line.is_empty() {
                    self.end_of_head();
                } else {
                    head.header(line);
                }
            }
            State::ChunkSize => match chunk_size(line) {
                Some(0) => self.state = State::Trailer,
                Some(n) => self.state = State::ChunkData(n),
                None => self.lose_count(),
            },
            State::Trailer if line.is_empty() => self.state = self.next_head(),
            _ => {}
        }
    }

    fn end_of_head(&mut self) {
        let State::Head(head) = &self.state else {
            return;
        };
        let HeadScan {
            lengths,
            length,
            encodings,
            chunked,
            malformed,
            ..
        } = *head;
        let refusal = if lengths > 0 && encodings > 0 {
            Some(Refusal::LengthAndChunked)
        } else if lengths > 1 {
            Some(Refusal::DuplicateLength)
        } else if encodings > 1 {
            Some(Refusal::DuplicateTransferEncoding)
        } else {
            None
        };
        if let Some(why) = refusal {
            return self.refuse(why);
        }
        self.state = if malformed || (encodings == 1 && !chunked) {
            // hyper answers 400 and closes; it hands over nothing more.
            self.verdicts.refuse_from(self.request + 1, Refusal::Unframed);
            State::Done
        } else if encodings == 1 {
            State::ChunkSize
        } else {
            match length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => self.next_head(),
            }
        };
    }

    /// The message is over: the next bytes start the next request.
    fn next_head(&mut self) -> State {
        self.request += 1;
        State::Head(HeadScan::default())
    }

    /// Refuses the request being read, and so every later one: the
    /// connection closes after its 400.
    fn refuse(&mut self, why: Refusal) {
        self.verdicts.refuse_from(self.request, why);
        self.state = State::Done;
        self.carry = Vec::new();
    }

    /// The boundaries are lost inside the current request's body: the
    /// requests after it are refused.
    fn lose_count(&mut self) {
        self.verdicts.refuse_from(self.request + 1, Refusal::Unframed);
        self.state = State::Done;
        self.carry = Vec::new();
    }
}

impl HeadScan {
    fn header(&mut self, line: &[u8]) {
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths += 1;
            match std::str::from_utf8(value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(v) => match v.parse() {
                    Ok(n) => self.length = Some(n),
                    Err(_) => self.malformed = true,
                },
                None => self.malformed = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.encodings += 1;
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            self.chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }
}

/// A chunk-size line's size (`1a;ext=1`), as hyper reads it.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    match line[digits..].first() {
        None | Some(b' ' | b'\t' | b';') => {}
        Some(_) => return None,
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A client connection with the guard reading along, and interim answers
/// written at response boundaries (`interim.rs`).
pub struct Guarded<S> {
    inner: S,
    scanner: Scanner,
    relay: Option<InterimRelay>,
    /// Whether everything hyper wrote so far is on the socket: hyper
    /// flushes the socket only once its own buffer is empty.
    clean: bool,
    /// Interim bytes being written; they go out before any more of hyper's.
    interim: Bytes,
}

impl<S> Guarded<S> {
    /// Wraps `inner`; `max_line` is hyper's head buffer size.
    pub fn new(inner: S, max_line: usize) -> (Guarded<S>, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        let scanner = Scanner::new(max_line, verdicts.clone());
        let guarded = Guarded {
            inner,
            scanner,
            relay: None,
            clean: true,
            interim: Bytes::new(),
        };
        (guarded, verdicts)
    }

    /// Writes the interim answers `relay` queues, at response boundaries.
    pub fn relay_interim(&mut self, relay: InterimRelay) {
        self.relay = Some(relay);
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Before hyper's bytes: queued interim answers if at a boundary (or
    /// already begun); queued ones whose call ended are dropped when hyper
    /// writes off a boundary, since its bytes may hold that final answer.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.clean && self.interim.is_empty() {
            if let Some(relay) = &self.relay {
                relay.discard_if_closed();
            }
        }
        self.poll_queued(cx)
    }

    /// Writes queued interim answers, if at a boundary (or already begun).
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.interim.is_empty() {
                let queued = match &self.relay {
                    Some(relay) if self.clean => relay.take(),
                    _ => None,
                };
                match queued {
                    Some(bytes) => self.interim = bytes,
                    None => return Poll::Ready(Ok(())),
                }
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.interim))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.interim.advance(n);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_interim(cx))?;
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.clean &= written == 0;
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_interim(cx))?;
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.clean &= written == 0;
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes the socket only with its own buffer empty: all it
        // wrote is ours, so a queued interim answer may go now.
        this.clean = true;
        std::task::ready!(this.poll_interim(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` bytes; the verdicts of `n` requests.
    fn verdicts(bytes: &[u8], step: usize, n: usize) -> Vec<Option<Refusal>> {
        let v = Arc::new(Verdicts::default());
        let mut s = Scanner::new(1 << 16, v.clone());
        for piece in bytes.chunks(step) {
            s.feed(piece);
        }
        (0..n).map(|_| v.next_request()).collect()
    }

    fn all_steps(bytes: &[u8], n: usize) -> Vec<Option<Refusal>> {
        let whole = verdicts(bytes, bytes.len().max(1), n);
        for step in 1..bytes.len().min(40) {
            assert_eq!(verdicts(bytes, step, n), whole, "split every {step} bytes");
        }
        whole
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn plain_pipelined_requests_pass() {
        let bytes = [GET, GET, GET].concat();
        assert_eq!(all_steps(&bytes, 3), vec![None, None, None]);
    }

    #[test]
    fn a_length_body_that_looks_like_a_bad_request_is_skipped() {
        let body = b"GET /x HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n";
        let first = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let bytes = [first.as_bytes(), body, GET].concat();
        assert_eq!(all_steps(&bytes, 2), vec![None, None]);
    }

    #[test]
    fn a_chunked_body_with_extensions_and_trailers_is_followed() {
        let body = b"5;name=v\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        let first = b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let bytes = [first.as_slice(), body, GET].concat();
        assert_eq!(all_steps(&bytes, 2), vec![None, None]);
    }

    #[test]
    fn ambiguous_heads_are_refused_with_everything_after_them() {
        let cases: [(&[u8], Refusal); 6] = [
            (
                b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::LengthAndChunked,
            ),
            (
                b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 3\r\n\r\n",
                Refusal::LengthAndChunked,
            ),
            (
                b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                Refusal::DuplicateLength,
            ),
            (
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::DuplicateTransferEncoding,
            ),
            (b"POST /a HTTP/1.1\nHost: x\r\n\r\n", Refusal::BareLf),
            (b"GET /a HTTP/1.1\r\nX-A: 1\nContent-Length: 3\r\n\r\n", Refusal::BareLf),
        ];
        for (head, why) in cases {
            let bytes = [GET, head, b"abc", GET].concat();
            assert_eq!(
                all_steps(&bytes, 3),
                vec![None, Some(why), Some(why)],
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn a_chunk_line_hyper_refuses_refuses_what_follows() {
        for body in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
        ] {
            let bytes = [
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(),
                body,
                GET,
            ]
            .concat();
            assert_eq!(all_steps(&bytes, 2), vec![None, Some(Refusal::Unframed)]);
        }
    }

    #[test]
    fn leading_empty_lines_and_split_reads_keep_the_count() {
        let bytes = [b"\r\n".as_slice(), GET, b"\r\n", GET].concat();
        assert_eq!(all_steps(&bytes, 2), vec![None, None]);
    }

    #[test]
    fn a_line_longer_than_the_buffer_stops_the_connection() {
        let v = Arc::new(Verdicts::default());
        let mut s = Scanner::new(64, v.clone());
        s.feed(GET);
        s.feed(&[b'a'; 100]);
        assert_eq!(v.next_request(), None);
        assert_eq!(v.next_request(), Some(Refusal::Unframed));
    }
}
