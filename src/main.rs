//! `tally`: the command line. `tally serve` runs everything in one process; `ingest`,
//! `process` and `api` run one role each (a split deployment on Kafka, ClickHouse, Postgres).

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
    /// Run the collect and command endpoints only.
    Ingest(Settings),
    /// Run processing stages only (all, or those named with --only).
    Process {
        #[command(flatten)]
        settings: Settings,
        /// metadata | enrich | analytics (repeat or comma-separate)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run the dashboard read API only.
    Api(Settings),
    /// Drop the analytics projection and rebuild it from the log (run while processors are
    /// stopped).
    Replay(Settings),
    /// Check the money: each company's balance against its ledger, and executions against
    /// the usage records on the log and the ledger's debits and refunds. Exits 1 on any
    /// difference.
    Reconcile(Settings),
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
            Command::Serve(settings) => serve(settings, tally::Roles::all()).await,
            Command::Ingest(settings) => serve(settings, tally::Roles::ingest()).await,
            Command::Process { settings, only } => {
                serve(settings, tally::Roles::process(&only)?).await
            }
            Command::Api(settings) => serve(settings, tally::Roles::api()).await,
            Command::Replay(settings) => {
                let n = tally::replay(&settings).await?;
                tracing::info!(records = n, "analytics projection rebuilt from the log");
                Ok(())
            }
            Command::Rewind { settings, stage } => tally::rewind(&settings, &stage).await,
            Command::Reconcile(settings) => {
                let r = tally::reconcile(&settings).await?;
                for line in &r.lines {
                    println!("{line}");
                }
                if !r.ok {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    })
}

async fn serve(settings: Settings, roles: tally::Roles) -> anyhow::Result<()> {
    let app = tally::start_roles(settings, roles).await?;
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
