//! The connections of `strata serve`: at most so many open at once per protocol (others are
//! refused as they come), and a connection that has had no request for the idle time is
//! closed (never while one of its requests is under way).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TlsConnectInfo};

/// Whether a connection is busy, and since when it has been idle.
#[derive(Debug)]
pub(super) struct Activity {
    busy: AtomicUsize,
    since: parking_lot::Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            busy: AtomicUsize::new(0),
            since: parking_lot::Mutex::new(Instant::now()),
        })
    }

    /// A request starts; the connection is busy until the returned guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// When the connection is to be closed for being idle `idle`, or `None` if it is now.
    fn deadline(&self, idle: Duration) -> Option<Instant> {
        let now = Instant::now();
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Some(now + idle);
        }
        let at = *self.since.lock() + idle;
        (at > now).then_some(at)
    }

    /// Completes once the connection has been idle for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        while let Some(at) = self.deadline(idle) {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A request under way on a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock() = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The limits on one protocol's connections.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    protocol: &'static str,
    places: Option<Arc<Semaphore>>,
    max: usize,
    pub(super) idle: Option<Duration>,
}

/// A connection's place under the limit, and its activity.
#[derive(Debug)]
pub(super) struct Admitted {
    _place: Option<OwnedSemaphorePermit>,
    pub(super) activity: Arc<Activity>,
}

impl Gate {
    pub(super) fn new(protocol: &'static str, max: Option<usize>, idle: Option<Duration>) -> Gate {
        Gate {
            protocol,
            places: max.map(|n| Arc::new(Semaphore::new(n))),
            max: max.unwrap_or(usize::MAX),
            idle,
        }
    }

    /// A place for a new connection, or `None` when as many as allowed are open.
    pub(super) fn admit(&self, peer: Option<std::net::SocketAddr>) -> Option<Admitted> {
        let place = match &self.places {
            Some(places) => match places.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    let peer = peer.map(|p| format!(" from {p}")).unwrap_or_default();
                    log::warn!(
                        target: "strata::server",
                        "{} connection{peer} refused: {} are open, the most this server takes",
                        self.protocol,
                        self.max
                    );
                    return None;
                }
            },
            None => None,
        };
        Some(Admitted {
            _place: place,
            activity: Activity::new(),
        })
    }

    /// How many connections this server takes at once.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// The Flight SQL connections of `listener` that are admitted, each closed once idle.
    pub(super) fn incoming(
        self,
        listener: TcpListener,
    ) -> impl Stream<Item = std::io::Result<Connection>> + Send {
        futures::stream::unfold((listener, self), |(listener, gate)| async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => return Some((Err(e), (listener, gate))),
                };
                let _ = socket.set_nodelay(true);
                if let Some(admitted) = gate.admit(Some(peer)) {
                    let connection = Connection::new(socket, admitted, gate.idle);
                    return Some((Ok(connection), (listener, gate)));
                }
            }
        })
    }
}

/// An admitted Flight SQL connection: reading from it ends once it has been idle too long.
pub(super) struct Connection {
    io: TcpStream,
    admitted: Admitted,
    idle: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    session: SessionSlot,
}

/// A connection's session, once it has one.
pub(super) type SessionSlot = Arc<parking_lot::Mutex<Option<Arc<super::sessions::Session>>>>;

impl Connection {
    fn new(io: TcpStream, admitted: Admitted, idle: Option<Duration>) -> Connection {
        let start = Instant::now() + idle.unwrap_or(Duration::from_secs(3600));
        Connection {
            io,
            admitted,
            idle,
            timer: Box::pin(tokio::time::sleep_until(start)),
            session: SessionSlot::default(),
        }
    }

    /// Whether the connection has been idle for too long; otherwise the timer is set to
    /// wake this task when it might have been.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else {
            return false;
        };
        while self.timer.as_mut().poll(cx).is_ready() {
            match self.admitted.activity.deadline(idle) {
                Some(at) => self.timer.as_mut().reset(at),
                None => return true,
            }
        }
        false
    }
}

/// What a Flight SQL request learns of its connection.
#[derive(Debug, Clone)]
pub(super) struct ConnectionInfo {
    activity: Arc<Activity>,
    /// Its session, which lasts as long as the connection (or another that uses it).
    pub(super) session: SessionSlot,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            activity: self.admitted.activity.clone(),
            session: self.session.clone(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            log::info!(
                target: "strata::server",
                "closing an idle Flight SQL connection{}",
                self.io.peer_addr().map(|p| format!(" from {p}")).unwrap_or_default()
            );
            // The end of the stream: the server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A gRPC service whose requests keep their connection busy until their response ends.
#[derive(Debug, Clone)]
pub(super) struct Tracked<S>(pub(super) S);

impl<S: NamedService> NamedService for Tracked<S> {
    const NAME: &'static str = S::NAME;
}

/// What a request's extensions know of its connection (with or without TLS).
pub(super) fn connection_info(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .map(|tls| tls.get_ref())
    })
}

fn activity<B>(request: &http::Request<B>) -> Option<Arc<Activity>> {
    connection_info(request.extensions()).map(|info| info.activity.clone())
}

impl<S> Service<http::Request<tonic::body::Body>> for Tracked<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let busy = activity(&request).map(|a| a.begin());
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| tonic::body::Body::new(Guarded { body, busy })))
        })
    }
}

/// A response body that keeps its connection busy until it ends or is dropped.
struct Guarded {
    body: tonic::body::Body,
    busy: Option<Busy>,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.busy = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
