//! One capped accept loop for every server here (SPEC S2): at most so
//! many connections open, each one request with header and total
//! timeouts, on hyper with an axum router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

/// Caps that keep one client from taking the server (SPEC S2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Live peer connections at most; a join past it is a 503.
    pub max_peers: usize,
    /// A peer not connected this long after its answer is torn down.
    pub connect_timeout: Duration,
    /// Open HTTP connections at most; one past it is closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection is closed this long after it opened, whatever it is
    /// doing: one request (no keep-alive), body and answer included.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_peers: 64,
            connect_timeout: Duration::from_secs(5),
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `stopped`: at most `max_connections`
/// open (one past it is closed at once and `refused` told), each one
/// request with its header and total timeouts (SPEC S2). The avatar
/// dispatcher and the call server (`sotto serve`) both run on it.
pub async fn serve_limited(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    refused: impl Fn() + Send + 'static,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stopped => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or the like: let connections finish.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.request_timeout, conn).await;
            drop(permit);
        });
    }
}
