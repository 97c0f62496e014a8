//! Upgrades: a `Connection: upgrade` request (WebSocket) is forwarded as it
//! is, never routed to a rule, keyed or stored; when the backend answers
//! `101 Switching Protocols`, the client's connection and the backend's are
//! joined into one tunnel (`proxy::upgrade::pump`) that outlives the
//! request, until a side closes or the tunnel idles out.

use super::Gateway;
use crate::proxy::{upgrade, Body, ClientInfo};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

impl Gateway {
    pub(super) async fn tunnel(&self, mut req: Request<Body>, from: ClientInfo) -> Response<Body> {
        let metrics = self.shared.metrics.clone();
        // Taken before the request moves on: hyper hands the client's
        // connection over once the 101 is written.
        let client_side = hyper::upgrade::on(&mut req);
        let mut resp = match self.forward(req, from).await {
            Ok(resp) => resp,
            Err(e) => {
                metrics.upgrade("failed");
                return e.to_response();
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The backend declined (e.g. 400, 426): its answer as it is.
            metrics.upgrade("declined");
            return resp;
        }
        let backend_side = hyper::upgrade::on(&mut resp);
        let idle = self.generation.config.backend.tunnel_idle_timeout;
        tokio::spawn(async move {
            match tokio::try_join!(client_side, backend_side) {
                Ok((client, backend)) => {
                    metrics.upgrade("tunnelled");
                    let _open = metrics.tunnel_opened();
                    let end = upgrade::pump(TokioIo::new(client), TokioIo::new(backend), idle).await;
                    tracing::debug!(peer = %from.addr, ?end, "tunnel closed");
                }
                Err(e) => {
                    metrics.upgrade("failed");
                    tracing::debug!(peer = %from.addr, error = %e, "upgrade did not complete");
                }
            }
        });
        resp
    }
}
