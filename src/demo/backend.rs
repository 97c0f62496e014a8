//! `cachegate demo-backend`: the sample task API on its own, with UUID task
//! ids as the reference FastAPI service has, so that docker-compose.yml's
//! `backend` service runs from the cachegate image when no `BACKEND_IMAGE`
//! of your own is given. It prints each tenant's token and task ids.

use super::sample_api::{seeded_ids, serve_sample_api_with, SampleApi, TaskIds};
use crate::BoxError;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Options of `cachegate demo-backend`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoBackendArgs {
    /// Where the sample task API listens.
    #[arg(long, env = "DEMO_BACKEND_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: String,
}

/// What `demo-backend` prints at start: one line per tenant, its token and
/// its tasks' ids, then a line to try.
pub fn banner(api: &SampleApi, listen: SocketAddr) -> String {
    let mut out = format!(
        "cachegate demo-backend: the sample task API on http://{listen} (GET /health needs no token)\n\
         Tenants (tokens are new on every start; tenants see only their own tasks):\n"
    );
    for (tenant, ids) in seeded_ids(TaskIds::Uuid) {
        let token = api.token(tenant).unwrap_or_default();
        out.push_str(&format!("  {tenant} token {token} tasks {}\n", ids.join(" ")));
    }
    let (tenant, ids) = &seeded_ids(TaskIds::Uuid)[0];
    out.push_str(&format!(
        "Try: curl -si -H 'Authorization: Bearer {}' http://{listen}/api/v1/tasks/{}\n",
        api.token(tenant).unwrap_or_default(),
        ids[0]
    ));
    out
}

/// Runs the sample task API until SIGTERM or Ctrl-C.
pub fn run(args: DemoBackendArgs) -> crate::BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(run_backend(args))
}

async fn run_backend(args: DemoBackendArgs) -> Result<(), BoxError> {
    let listen: SocketAddr = args.listen.trim().parse().map_err(|_| {
        format!(
            "--listen (DEMO_BACKEND_LISTEN): expected an address such as 0.0.0.0:8000, got {:?}",
            args.listen
        )
    })?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let api = serve_sample_api_with(listener, TaskIds::Uuid).await;
    // Printed and flushed at once: a container's log (and a test reading
    // the pipe) gets the tokens before the first request.
    let text = banner(&api, api.addr);
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
    let stopped = stop_signal().await;
    api.shutdown().await;
    stopped.map_err(|e| format!("cannot wait for a stop signal: {e}").into())
}

/// SIGTERM (what `docker stop` sends to the container's first process)
/// or Ctrl-C.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn banner_lists_each_tenant_with_token_and_uuid_tasks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = serve_sample_api_with(listener, TaskIds::Uuid).await;
        let text = banner(&api, api.addr);
        let acme = text
            .lines()
            .find(|l| l.trim_start().starts_with("acme "))
            .expect("no acme line");
        let words: Vec<&str> = acme.split_whitespace().collect();
        assert_eq!(words[1], "token");
        assert_eq!(words[2], api.token("acme").unwrap());
        assert_eq!(words[4], "00000000-0000-4000-8000-000000000001");
        api.shutdown().await;
    }
}
