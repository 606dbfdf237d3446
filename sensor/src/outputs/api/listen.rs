//! Binding and serving shared by the live API and the metrics server, with
//! bind errors a person can act on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

use super::ApiError;

pub(crate) struct Listening {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub what: &'static str,
}

/// Binds `addr`; `what` ("the live API", "metrics") and `flag` ("--api-addr")
/// make the error line say what to change.
pub(crate) async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<Listening, ApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ApiError::Listen {
            addr,
            what,
            flag,
            reason: bind_reason(&e, addr),
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok(Listening {
        listener,
        addr: bound,
        what,
    })
}

fn bind_reason(e: &io::Error, addr: SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
        }
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::AddrNotAvailable => "no such address on this host".to_string(),
        _ => e.to_string(),
    }
}

pub(crate) async fn serve(
    l: Listening,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    what: &'static str,
) -> Result<(), ApiError> {
    tracing::info!(addr = %l.addr, "{} listening", l.what);
    // Stream lines must not wait for Nagle's algorithm.
    let listener = l.listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ApiError::Serve { what, source })
}
