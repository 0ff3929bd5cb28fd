//! One capped accept loop for every server here (SPEC S2): at most so
//! many connections open, and at most so many from any one client, each
//! one request with header and total timeouts, on hyper with an axum
//! router.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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
    /// Open HTTP connections from one client at most (an IPv4 address, an
    /// IPv6 /64); one past it is closed at once. Kept well under
    /// `max_connections`, so that one client holding its share leaves
    /// room for every other.
    pub max_connections_per_client: usize,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// Once this much time has passed since a request arrived, its body
    /// must have come at `body_min_rate` bytes a second on average; a
    /// client that falls behind is answered 408 and cut off.
    pub body_grace: Duration,
    /// The slowest a body may arrive, in bytes a second, after the grace.
    pub body_min_rate: u32,
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
            max_connections_per_client: 16,
            header_timeout: Duration::from_secs(2),
            body_grace: Duration::from_secs(2),
            body_min_rate: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the accept loop refused a connection for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `max_connections` were open.
    Server,
    /// `max_connections_per_client` were open from its client.
    Client,
}

/// The client a connection is counted against: its IPv4 address, or the
/// /64 an IPv6 address is in (one host holds a whole /64).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Connections open per client; an entry goes when its last one closes,
/// so the table is as large as the clients connected now (at most
/// `max_connections`).
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its client until dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    fn take(table: &Arc<Self>, client: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut open = table.0.lock().ok()?;
        let n = open.entry(client).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: Arc::clone(table),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.0.lock() {
            if let Some(n) = open.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.client);
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `stopped`: at most `max_connections`
/// open and `max_connections_per_client` from one client (one past either
/// is closed at once and `refused` told which), each one request with its
/// header and total timeouts (SPEC S2). The avatar dispatcher and the call
/// server (`sotto serve`) both run on it.
pub async fn serve_limited(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServerLimits,
    refused: impl Fn(Crowded) + Send + 'static,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let app = app.layer(axum::middleware::map_response(one_request_each));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stopped => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(_) => {
                // Out of descriptors or the like: let connections finish.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(client) = PerClient::take(
            &per_client,
            client_of(peer.ip()),
            limits.max_connections_per_client,
        ) else {
            refused(Crowded::Client);
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused(Crowded::Server);
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                // A phone stream's WebSocket leaves the request's bounds
                // here: its own task bounds it (start, idle and message
                // limits), and the calls table caps how many there are.
                .with_upgrades();
            let _ = tokio::time::timeout(limits.request_timeout, conn).await;
            drop(permit);
            drop(client);
        });
    }
}

/// One request a connection: every response but a WebSocket's `101` says
/// `Connection: close`, and the connection closes after it. (Turning
/// hyper's keep-alive off instead would also write `close` into the
/// `101`'s `Connection: upgrade`, which WebSocket clients refuse, as RFC
/// 6455 has them.)
async fn one_request_each(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_client_holds_its_share_and_no_more() {
        let table = Arc::new(PerClient::default());
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| PerClient::take(&table, ip, 3).unwrap())
            .collect();
        assert!(PerClient::take(&table, ip, 3).is_none());
        assert!(PerClient::take(&table, "127.0.0.1".parse().unwrap(), 3).is_some());
        drop(held);
        assert!(table.0.lock().unwrap().is_empty(), "entries go with them");
    }
}
