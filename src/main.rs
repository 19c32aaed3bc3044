//! `tally`: the command line. `tally serve` runs everything on embedded backends.

use clap::{Parser, Subcommand};
use tally::config::{load_config_file, Settings};

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Event-sourced web analytics and analytics marketplace backend"
)]
struct Cli {
    /// A file of TALLY_NAME=value lines (flags and environment variables win over it).
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, processors and the read API in one process.
    Serve(Settings),
    /// Make a stage re-read its input topic from the start (run while Tally is stopped).
    Rewind {
        #[command(flatten)]
        settings: Settings,
        /// enrich | analytics
        #[arg(long)]
        stage: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    load_config_file(&args)?;
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(settings) => serve(settings).await,
            Command::Rewind { settings, stage } => tally::rewind(&settings, &stage).await,
        }
    })
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = tally::start(settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
