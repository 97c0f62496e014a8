//! `cachegate demo`: a sample task API with cachegate in front of it.

/// Options of `cachegate demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> Result<(), crate::BoxError> {
    let _ = args;
    Err("not yet".into())
}
