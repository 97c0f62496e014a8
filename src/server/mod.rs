//! The listeners: TLS when configured, then HTTP/1.1 or HTTP/2 with hyper
//! (`accept.rs`); route the admin paths to `crate::admin` and every other
//! request to the [`Gateway`]; shut down gracefully.

pub mod accept;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Route;
use crate::proxy::listener_tls::{ListenerTls, ListenersTls};
use crate::proxy::{self, framing, Body, ClientInfo};
use crate::reload::Live;
use crate::BoxError;
use http_body_util::BodyExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy: its address, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener's address, when `[admin] listen` is set.
    pub admin_addr: Option<SocketAddr>,
    live: Arc<Live>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// The current config generation (it changes on reload).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.gateway()
    }

    /// The live generation's holder: reloads go through it.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Stops accepting, lets in-flight requests finish, then applies the
    /// purges still pending (all within `grace`; what is left stays in the
    /// purge journal for the next start); whether all of it finished.
    pub fn shutdown(self, grace: Duration) -> crate::BoxFuture<'static, bool> {
        // Boxed for the reason `start` is.
        Box::pin(async move {
            let deadline = std::time::Instant::now() + grace;
            let gateway = self.live.gateway();
            let _ = self.stop.send(true);
            let finished = tokio::time::timeout(grace, self.task).await.is_ok();
            gateway.flush_pending_purges(deadline).await && finished
        })
    }

    /// Resolves if the server stops without being asked to.
    pub async fn stopped(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that stops the server when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// What a listener serves.
#[derive(Clone, Copy)]
enum Role {
    /// The proxy (and the admin routes, unless they have their own listener).
    Main,
    /// Only the admin routes, `/metrics` and health.
    Admin,
}

/// Binds the configured addresses and starts serving.
// Boxed here so that the lib compiles this future's code; polled only from
// the binary, it would otherwise be compiled again there (38 s of a release build).
pub fn start(config: Config) -> crate::BoxFuture<'static, Result<Running, BoxError>> {
    Box::pin(bind_and_start(config))
}

async fn bind_and_start(config: Config) -> Result<Running, BoxError> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    start_on(config, listener).await
}

/// Starts serving on an already bound listener (tests bind port 0); the
/// admin listener, if configured, is bound here.
pub async fn start_on(config: Config, listener: TcpListener) -> Result<Running, BoxError> {
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    let config = Arc::new(config);
    let gateway = Arc::new(Gateway::new(config.clone()).await?);
    let addr = listener.local_addr()?;
    let admin_addr = match &admin_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    // Certificates are read again on each reload (crate::reload); one that
    // rustls refuses (a key that does not match) fails the start, not each
    // handshake.
    let listeners_tls = ListenersTls::serving(proxy::listener_tls::build(&config)?);
    let connections = Connections::new(&config.server, listeners_tls.main.clone());
    let admin_connections = Connections::new(&config.server, listeners_tls.admin.clone());
    let live = Live::new(gateway.clone(), listeners_tls);
    let (stop, stopped) = watch::channel(false);
    // [warm]: in the background; readiness may wait for it.
    crate::warm::spawn_at_start(live.clone(), stopped.clone());
    let weak_live = Arc::downgrade(&live);
    crate::gateway::spawn_backend_probe(move || weak_live.upgrade().map(|l| l.gateway()));
    // Connection settings come from the first config: a reload keeps them
    // (crate::reload lists them as restart-only).
    let main = tokio::spawn(listen(
        listener,
        live.clone(),
        stopped.clone(),
        (Role::Main, Arc::new(connections)),
    ));
    let admin = admin_listener.map(|l| {
        tokio::spawn(listen(
            l,
            live.clone(),
            stopped,
            (Role::Admin, Arc::new(admin_connections)),
        ))
    });
    let task = tokio::spawn(async move {
        let _ = main.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    });
    tracing::info!(
        %addr,
        ?admin_addr,
        store = gateway.store().kind(),
        edition = config.edition.as_str(),
        effective = %config.effective_summary(),
        "cachegate listening"
    );
    Ok(Running {
        addr,
        admin_addr,
        live,
        stop,
        task,
    })
}

async fn listen(
    listener: TcpListener,
    live: Arc<Live>,
    stopped: watch::Receiver<bool>,
    (role, settings): (Role, Arc<Connections>),
) {
    accept::accept_loop(listener, stopped, move |stream, peer, stop| {
        let (live, settings) = (live.clone(), settings.clone());
        let served = Served { live, role, stop };
        async move {
            match &settings.tls {
                Some(tls) => {
                    // The certificate current now; a reload swaps it for
                    // the handshakes after, never under this connection.
                    let acceptor = tls.acceptor();
                    // A handshake is bounded like a request head.
                    let accepted = tokio::time::timeout(settings.head_timeout, acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let from = ClientInfo { addr: peer, tls: true };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(&settings, stream, from, served).await
                    } else {
                        serve_h1(&settings, stream, from, served).await
                    }
                }
                None => {
                    let from = ClientInfo { addr: peer, tls: false };
                    if settings.h2c && h2_preface(&stream, settings.head_timeout).await {
                        serve_h2(&settings, stream, from, served).await
                    } else {
                        serve_h1(&settings, stream, from, served).await
                    }
                }
            }
        }
    })
    .await
}

/// How a listener's connections are served: hyper's HTTP/1.1 and HTTP/2
/// settings, TLS, and whether cleartext HTTP/2 is looked for.
struct Connections {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// The framing guard's longest line.
    head_buffer: usize,
    head_timeout: Duration,
    /// This listener's certificate (`[server.tls]` or `[admin.tls]`).
    tls: Option<Arc<ListenerTls>>,
    h2c: bool,
}

impl Connections {
    fn new(server: &crate::config::ServerConfig, tls: Option<Arc<ListenerTls>>) -> Connections {
        let head_buffer = server.max_header_bytes + server.max_uri_bytes.max(65_534) + 4096;
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(true)
            // hyper's own hard limits, above ours so that ours answer with a
            // JSON body first: the head buffer must hold any URI up to hyper's
            // own URI cap (65,534 bytes) for `admit` to see it and answer 414.
            .max_buf_size(head_buffer)
            .max_headers(server.max_headers + 1);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(server.h2_max_concurrent_streams)
            // Above ours, so that `admit` answers 431 with a JSON body.
            .max_header_list_size((server.max_header_bytes + server.max_uri_bytes + 4096) as u32)
            // Rapid reset (CVE-2023-44487): a client that opens and resets
            // streams faster than they are served loses its connection.
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024);
        Connections {
            h1,
            h2,
            head_buffer,
            head_timeout: server.header_read_timeout,
            tls,
            h2c: server.h2c && server.http2,
        }
    }
}

/// What a connection's requests are served with.
#[derive(Clone)]
struct Served {
    live: Arc<Live>,
    role: Role,
    stop: watch::Receiver<bool>,
}

/// HTTP/1.1: behind the framing guard, with the backend's 1xx relayed.
async fn serve_h1<S>(settings: &Connections, stream: S, from: ClientInfo, served: Served)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Ambiguous framing is refused before hyper reads it (see
    // proxy/framing.rs); the verdicts come in request order.
    let (mut stream, verdicts) = framing::Guarded::new(stream, settings.head_buffer);
    // The backend's 1xx answers, written between hyper's answers.
    let relay = crate::proxy::interim::InterimRelay::default();
    stream.relay_interim(relay.clone());
    let Served { live, role, stop } = served;
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let refused = verdicts.next_request();
        respond(live.clone(), role, from, (req, refused))
    });
    // The relay is in scope for the whole connection, so the
    // requests hyper polls on it see it without a wrapper each.
    let served = accept::serve_http1(&settings.h1, TokioIo::new(stream), service, stop);
    if let Err(e) = crate::proxy::interim::relaying(relay, served).await {
        tracing::debug!(peer = %from.addr, error = %e, "connection ended with an error");
    }
}

/// HTTP/2: its framing is unambiguous (no guard); no 1xx relay. Each
/// stream is counted from its request to its answer's last byte, so that
/// a connection with none is closed after the header timeout.
async fn serve_h2<S>(settings: &Connections, stream: S, from: ClientInfo, served: Served)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Served { live, role, stop } = served;
    let streams = Arc::new(accept::Streams::default());
    let counted = streams.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let open = counted.begin();
        authority_as_host(&mut req);
        // Boxed: hyper spawns a task per HTTP/2 stream, and a task's future
        // is moved into its cell and out again; the answer's future is
        // large, its box is not.
        let answered = Box::pin(respond(live.clone(), role, from, (req, None)));
        async move {
            let resp = answered.await?;
            Ok::<_, Infallible>(resp.map(|body| Counted { body, _open: open }))
        }
    });
    let idle = (streams, settings.head_timeout);
    if let Err(e) = accept::serve_http2(&settings.h2, TokioIo::new(stream), service, stop, idle).await {
        tracing::debug!(peer = %from.addr, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// HTTP/2 names the authority in the target: as `Host`, for the same
/// checks, keys and forwarding as HTTP/1.1. A `Host` naming another
/// authority makes the request malformed (RFC 9113 §8.3.1): both are kept,
/// and two Hosts are a 400 (`bad_host`) as they are over HTTP/1.1, so the
/// key and the backend can never read different authorities.
fn authority_as_host(req: &mut hyper::Request<hyper::body::Incoming>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    let same = match req.headers().get(http::header::HOST) {
        None => false,
        Some(host) => host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()),
    };
    if same {
        return;
    }
    if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().append(http::header::HOST, value);
    }
}

/// An HTTP/2 answer's body, holding its stream open in the connection's
/// count until the body is done or dropped.
struct Counted {
    body: Body,
    _open: accept::StreamGuard,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether a cleartext connection opens with the HTTP/2 preface (prior
/// knowledge, RFC 9113 §3.3), read without consuming it.
async fn h2_preface(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    let peeked = tokio::time::timeout(within, async {
        loop {
            match stream.peek(&mut buf).await {
                // Enough to tell, or the client stopped sending.
                Ok(n) if n >= PREFACE.len() || n == 0 || !PREFACE.starts_with(&buf[..n]) => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await, // more of the preface is on its way
                Err(_) => return 0,
            }
        }
    })
    .await;
    matches!(peeked, Ok(n) if n >= PREFACE.len()) && buf == PREFACE
}

/// One request on a listener, whatever the protocol: the generation it
/// starts on serves it to the end.
async fn respond(
    live: Arc<Live>,
    role: Role,
    from: ClientInfo,
    (req, refused): (hyper::Request<hyper::body::Incoming>, Option<framing::Refusal>),
) -> Result<Response<Body>, Infallible> {
    let gateway = live.gateway();
    let mut req = req.map(|b| b.map_err(BoxError::from).boxed());
    let resp = match (role, refused) {
        (Role::Main, refused) => {
            if let Some(why) = refused {
                req.extensions_mut().insert(why);
            }
            serve_main(&live, &gateway, req, from).await
        }
        (Role::Admin, refused) => {
            let id = proxy::request_id::RequestId::of(req.headers());
            let mut resp = match refused {
                Some(why) => framing::refusal_response(why),
                None if crate::admin::owns(&gateway, req.uri().path()) => {
                    Box::pin(crate::admin::handle(&live, &gateway, req)).await
                }
                None => not_found(),
            };
            gateway.metrics().answered(Route::admin, resp.status().as_u16());
            id.stamp(resp.headers_mut());
            resp
        }
    };
    Ok(resp)
}

/// A request on the main listener: admitted, then the admin routes (unless
/// they have a listener of their own) before the gateway's rules; logged
/// either way.
async fn serve_main(live: &Arc<Live>, gateway: &Arc<Gateway>, req: Request<Body>, from: ClientInfo) -> Response<Body> {
    let admin_here = gateway.config().admin.listen.is_none();
    gateway
        .logged(req, from, |mut req, id| async move {
            if let Some(rejected) = gateway.admit(&mut req) {
                return gateway.answered_unruled(rejected);
            }
            id.forward_on(req.headers_mut());
            // `PURGE /path` (`[admin] purge_method`): answered here, never
            // forwarded, whichever listener serves the admin routes.
            if crate::admin::is_purge(gateway, &req) {
                let resp = Box::pin(crate::admin::purge_url(gateway, req)).await;
                gateway.metrics().answered(Route::admin, resp.status().as_u16());
                return resp;
            }
            if admin_here && crate::admin::owns(gateway, req.uri().path()) {
                let resp = Box::pin(crate::admin::handle(live, gateway, req)).await;
                gateway.metrics().answered(Route::admin, resp.status().as_u16());
                return resp;
            }
            gateway.serve(req, from).await
        })
        .await
}

/// A JSON 404, for routes the proxy answers itself.
pub fn not_found() -> hyper::Response<proxy::Body> {
    proxy::json_error(http::StatusCode::NOT_FOUND, "not_found", "no such route")
}
