//! The HTTP listener: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over TLS) on one
//! port, served by hyper-util's auto server with upgrades, each request handed to
//! [`Proxy::handle`]. `https` listeners are the same behind a TLS handshake.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::h1;
use super::idle::{watch_http, Activity, IdleStream};
use super::mtls::ClientCertHeaders;
use super::tls::Terminator;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::proxy::{Body, Forwarded, Proxy};
use crate::routing::Routes;
use crate::upstream::{Heads, ResponseBody};

/// Serves `listener` until `stop` fires, then waits for its open connections to finish
/// their in-flight requests (the caller bounds that wait). With `tls`, each connection
/// is a TLS handshake first (an `https` listener).
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: TcpListener,
    proxy: Arc<Proxy>,
    routes: Routes,
    index: usize,
    tls: Option<Arc<Terminator>>,
    stop: CancellationToken,
) {
    let mut limits = routes.load().listener(index).limits;
    let mut builder = Arc::new(builder(&limits));
    let drain = Arc::new(h1::Drain::default());
    // Connection tasks are owned here: when the caller gives up draining and drops this
    // future, they are aborted with it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            accepted = super::accept(&listener) => accepted,
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        super::tune(&stream);
        let (idle_timeout, keep_alive, current_limits, accept_proxy, counting) = {
            let table = routes.load();
            let settings = table.listener(index);
            (
                settings.idle_timeout,
                settings.client_keep_alive,
                settings.limits,
                settings.accept_proxy_protocol,
                table.metrics_enabled,
            )
        };
        if current_limits != limits {
            // A reload changed the limits: new connections get a parser sized for them.
            limits = current_limits;
            builder = Arc::new(self::builder(&limits));
        }
        let counters = metrics.listener(index);
        counters.new_connections.fetch_add(1, Ordering::Relaxed);
        counters.active_connections.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::new(counting.then(|| (Arc::clone(&metrics), index)));
        let open = OpenConnection::new(Arc::clone(&metrics), index);
        let connection = Connection {
            builder: Arc::clone(&builder),
            proxy: Arc::clone(&proxy),
            activity,
            idle_timeout,
            keep_alive,
            client,
            client_cert: None,
            tls: None,
            max_head: max_head(&limits),
            drain: Arc::clone(&drain),
        };
        let tls = tls.as_ref().map(|t| t.acceptor_for_http());
        connections.spawn(async move {
            let _open = open;
            let mut stream = stream;
            let mut connection = connection;
            if accept_proxy {
                match super::proxy_protocol::read_header(&mut stream, super::PREAMBLE_TIMEOUT).await {
                    Ok(addrs) => {
                        if let Some(addrs) = addrs {
                            connection.client = addrs.source;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%client, error = %e, "closing connection: bad PROXY protocol header");
                        return;
                    }
                }
            }
            let stream = IdleStream::new(stream, Arc::clone(&connection.activity));
            match tls {
                None => connection.serve(stream, true).await,
                // Boxed, like hyper's path below: the task of every plain connection is
                // as large as its largest state, and it stays allocated while idle.
                Some((acceptor, client_certs)) => Box::pin(async move {
                    let handshake =
                        tokio::time::timeout(super::PREAMBLE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let session = stream.get_ref().1;
                            connection.client_cert = client_certs.headers(session);
                            connection.tls = Some(crate::tls::Session::of(session));
                            let h2 = session.alpn_protocol() == Some(b"h2");
                            connection.serve(stream, !h2).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%client, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                })
                .await,
            }
        });
    }
    drop(listener);
    // Lean connections end after their current response; hyper's are shut down
    // gracefully (HTTP/2: GOAWAY). Connections in their preamble are waited for too.
    drain.start();
    while connections.join_next().await.is_some() {}
}

/// One accepted client connection, ready to be served once its preamble (PROXY header,
/// TLS handshake) is done.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// The listener's `client_keep_alive`: the connection ends after the response in
    /// progress once it is this old.
    keep_alive: Duration,
    client: SocketAddr,
    /// What targets are told of the client's certificate (mTLS listeners).
    client_cert: Option<ClientCertHeaders>,
    /// The TLS session (HTTPS listeners), once the handshake is done.
    tls: Option<crate::tls::Session>,
    /// The largest request head hyper's parser buffers for this listener.
    max_head: usize,
    /// Fires when the listener drains.
    drain: Arc<h1::Drain>,
}

impl Connection {
    /// Serves the connection: HTTP/1.1 requests on the lean path while they are of the
    /// kind it serves (`lean`), then, from the first request that is not, on hyper.
    async fn serve<S>(mut self, io: S, lean: bool)
    where
        S: h1::ClientStream + Send + 'static,
    {
        let activity = Arc::clone(&self.activity);
        let client = Arc::new(Forwarded::new(self.client, self.tls.take()));
        let watchdog = watch_http(&activity, self.idle_timeout);
        tokio::pin!(watchdog);
        // One timer per connection, looked at (a flag) once per response on the lean
        // path. Polled once to register it: a sleep that was never polled never
        // elapses. (It then wakes this task once, in vain.)
        let aged = tokio::time::sleep(self.keep_alive);
        tokio::pin!(aged);
        std::future::poll_fn(|cx| {
            let _ = aged.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        if !lean {
            return Box::pin(self.serve_hyper(io, client, watchdog, aged)).await;
        }
        let served = h1::serve(
            io,
            h1::Lean {
                proxy: &self.proxy,
                activity: &self.activity,
                client: &client,
                client_cert: self.client_cert.as_ref(),
                max_head: self.max_head,
                drain: &self.drain,
                aged: aged.as_mut(),
            },
        );
        let rest = tokio::select! {
            rest = served => rest,
            () = &mut watchdog => {
                tracing::debug!(client = %client.addr, "closing idle client connection");
                return;
            }
        };
        if let Some(io) = rest {
            // Boxed: most connections never get here, and hyper's connection state is
            // large (it would size every connection's task).
            Box::pin(self.serve_hyper(io, client, watchdog, aged)).await;
        }
    }

    async fn serve_hyper<S>(
        self,
        io: S,
        client: Arc<Forwarded>,
        mut watchdog: Pin<&mut impl Future<Output = ()>>,
        mut aged: Pin<&mut Sleep>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            proxy,
            activity,
            client_cert,
            drain,
            ..
        } = self;
        let addr = client.addr;
        let service = service_fn(move |mut req: hyper::Request<Incoming>| {
            if let Some(client_cert) = &client_cert {
                client_cert.apply(req.headers_mut());
            }
            let (proxy, activity) = (Arc::clone(&proxy), Arc::clone(&activity));
            let client = Arc::clone(&client);
            async move {
                let http2 = req.version() == http::Version::HTTP_2;
                let req = activity.request_started(req);
                let mut resp = proxy.handle(&client, req, Heads::Map).await;
                activity.request_ended();
                if let Body::Target(body, tail) = resp.body_mut() {
                    if !http_body::Body::is_end_stream(body) {
                        tail.open = Some(activity.response_streaming());
                    }
                    // The lean client's values share a copy of the head already.
                    if http2 && matches!(body, ResponseBody::Hyper(_)) {
                        crate::proxy::headers::own_values(resp.headers_mut());
                    }
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        tokio::pin!(conn);
        let mut drained = drain.signal();
        // Whether the connection is ending after its requests in progress (HTTP/1.1:
        // hyper closes it after the current response; HTTP/2: GOAWAY).
        let mut ending = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(client = %addr, error = %e, "client connection ended with an error");
                    }
                    return;
                }
                () = watchdog.as_mut() => {
                    tracing::debug!(client = %addr, "closing idle client connection");
                    return;
                }
                () = aged.as_mut(), if !ending => {
                    tracing::debug!(client = %addr, "client keep-alive duration reached: closing after the requests in progress");
                    conn.as_mut().graceful_shutdown();
                    ending = true;
                }
                () = &mut drained, if !ending => {
                    conn.as_mut().graceful_shutdown();
                    ending = true;
                }
            }
        }
    }
}

/// Counts a client connection as active until dropped (also when its task is aborted).
pub(crate) struct OpenConnection(Arc<Metrics>, usize);

impl OpenConnection {
    /// A connection of listener `index` that the caller has counted as active.
    pub(crate) fn new(metrics: Arc<Metrics>, index: usize) -> Self {
        Self(metrics, index)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let counters = self.0.listener(self.1);
        counters.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Request heads are timed by `watch_http` instead, without a timer per request.
        .header_read_timeout(None)
        .keep_alive(true)
        // Room for a request line and headers at their limits; what exceeds the buffer
        // gets hyper's 431, what fits but exceeds a limit gets ours (414 or 431).
        .max_buf_size(max_head(limits))
        .max_headers(limits.max_headers + 1);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size((limits.max_header_bytes + limits.max_uri_bytes) as u32);
    builder
}

/// Room for a request line and headers at their limits.
fn max_head(limits: &Limits) -> usize {
    (limits.max_header_bytes + limits.max_uri_bytes + 4096).max(8192)
}

/// The listener's local address, for logs.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
