//! The `l402-proxy` command: a thin shell over the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use l402_proxy::admin::Admin;
use l402_proxy::config::Config;
use l402_proxy::proxy::{Proxy, Shared};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "l402-proxy",
    version,
    about = "A forward proxy that pays L402 challenges for AI agents"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in the foreground.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a seller, the dev wallet and the proxy together, and send one paid request.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8402")]
        listen: SocketAddr,
        /// Where the demo keeps its CA and config.
        #[arg(long, default_value = ".l402-demo")]
        data_dir: PathBuf,
        /// Exit after the scripted request (status 0 when it was paid and answered).
        #[arg(long)]
        once: bool,
    },
    /// Certificate authority commands.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Read an agent key on stdin and print the key_sha256 value for the config.
    HashKey,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM) agents must trust; creates the CA if missing.
    Export {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key)?;
            let key = key.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!key.is_empty(), "no key on stdin");
            println!("{}", l402_proxy::agents::hash_key(key));
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let c = Config::load(&config)?;
            println!(
                "{}: ok ({} agents, wallet {}, listen {})",
                config.display(),
                c.agents.len(),
                c.wallet.backend.name(),
                c.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca {
            command: CaCommand::Export { config },
        } => {
            let c = Config::load(&config)?;
            let ca = l402_proxy::tls::CertificateAuthority::load_or_create(
                &c.tls.ca_cert,
                &c.tls.ca_key,
            )?;
            print!("{}", ca.ca_cert_pem());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => runtime()?.block_on(serve(config)),
        Command::Demo {
            listen,
            data_dir,
            once,
        } => {
            let ok = runtime()?.block_on(l402_proxy::demo::run(l402_proxy::demo::DemoOptions {
                listen,
                data_dir,
                once,
            }))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&config_path)?;
    let wallet = l402_proxy::wallet::from_config(&config)?;
    let shared = Arc::new(Shared::from_config(&config, wallet)?);
    let admin = match config.admin.listen {
        Some(addr) => {
            let token = l402_proxy::config::read_secret(
                config.admin.token_env.as_deref(),
                config.admin.token_file.as_deref(),
                "admin.token_env",
            )?;
            let admin = Admin::new(shared.clone(), &token);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
            tracing::info!(listen = %addr, "admin API ready");
            tokio::spawn(admin.clone().serve(listener));
            Some(admin)
        }
        None => None,
    };
    // Pending payments from an earlier run are resolved before any new payment can start.
    shared.prepare().await?;
    let proxy = Proxy::bind(config.listen, shared.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(listen = %proxy.local_addr()?, agents = config.agents.len(), wallet = config.wallet.backend.name(), "l402-proxy ready");
    if let Some(admin) = &admin {
        admin
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let task = tokio::spawn(proxy.run());
    while let Signal::Reload = signal().await {
        match Config::load(&config_path) {
            Ok(new) => {
                let restart = shared.reload(&config, &new);
                tracing::info!(agents = new.agents.len(), "config reloaded");
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "these changes take effect only after a restart");
                }
                config = new;
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; keeping the running config")
            }
        }
    }
    tracing::info!("shutting down");
    task.abort();
    if let Err(e) = shared.engine.store().flush().await {
        tracing::warn!(error = %e, "ledger flush failed");
    }
    Ok(ExitCode::SUCCESS)
}

enum Signal {
    Reload,
    Stop,
}

async fn signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Signal::Stop
}
