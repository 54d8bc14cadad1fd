//! The `l402-proxy` command: a thin shell over the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use l402_proxy::admin_client::commands::{self, AgentsCommand, PaymentFilterArgs};
use l402_proxy::admin_client::Connection;
use l402_proxy::config::Config;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "l402-proxy",
    version,
    about = "A forward proxy that pays L402 challenges for AI agents"
)]
struct Cli {
    /// Log format on stderr (default: the config's log.format, else text).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
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
        /// The admin API (default: the proxy's port + 1000).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
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
    /// Manage agents through a running proxy's admin API.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
        #[command(flatten)]
        admin: Connection,
    },
    /// List payments from a running proxy's ledger.
    Payments {
        #[command(flatten)]
        filter: PaymentFilterArgs,
        #[command(flatten)]
        admin: Connection,
    },
    /// List the payments the proxy declined, and why.
    Declines {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        admin: Connection,
    },
    /// The proxy at a glance: wallet and balance, store, agents, pending payments.
    Status {
        #[command(flatten)]
        admin: Connection,
    },
    /// Stop every new payment, on every replica (free traffic and cached tokens still pass;
    /// held approvals are denied; payments in flight finish).
    PauseAll {
        /// Why, for the audit log and the `fleet.paused` event.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: Connection,
    },
    /// Let the fleet pay again after `pause-all` (or the fleet's spend-spike breaker).
    ResumeAll {
        #[command(flatten)]
        admin: Connection,
    },
    /// Every change made through the admin API.
    Audit {
        /// At most this many entries.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        admin: Connection,
    },
    /// Exit 0 when the URL answers 200 (a container HEALTHCHECK without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9402/healthz")]
        url: String,
    },
    /// Run the demo L402 seller alone (paid /weather/today, free /free/x, ...).
    Seller {
        /// Plain-HTTP listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// HTTPS listener, with a certificate from the seller's own throwaway CA.
        #[arg(long)]
        tls_listen: Option<SocketAddr>,
        /// Write the seller CA's PEM here (for the proxy's tls.upstream_roots).
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Names the HTTPS certificate covers (repeatable; default localhost and 127.0.0.1).
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
        /// Price of each service, in sats.
        #[arg(long, default_value_t = 10)]
        price_sats: u64,
        /// Create invoices on this LNbits instance instead of the dev network.
        #[arg(long, requires = "lnbits_invoice_key_env")]
        lnbits_url: Option<String>,
        /// Environment variable holding the LNbits wallet's invoice key.
        #[arg(long, requires = "lnbits_url")]
        lnbits_invoice_key_env: Option<String>,
        /// The dev network's shared secret (invoices payable by `wallet.backend: dev`).
        #[arg(long, default_value = "l402-proxy-dev")]
        dev_secret: String,
    },
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
    /// Validate a config file and exit: everything `run` would refuse, all at once.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Check the file alone, not the machine it will run on (secrets set, files readable,
        /// the CA usable): for configs rendered to run elsewhere (a chart, an image).
        #[arg(long)]
        offline: bool,
    },
}

fn init_logs(format: LogFormat) {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    // rustls warns on every handshake from a client that sends an IP address as SNI: nothing
    // an operator can act on, so rustls speaks only of errors unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    // Colours only for a person at a terminal, never in files or log shippers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` reads its config first so the config's log format can apply.
    if !matches!(cli.command, Command::Run { .. }) {
        init_logs(cli.log_format.unwrap_or(LogFormat::Text));
    }
    match run(cli.command, cli.log_format) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
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
            command: ConfigCommand::Check { config, offline },
        } => match if offline {
            l402_proxy::config::check_file(&config)
        } else {
            l402_proxy::config::check(&config)
        } {
            Ok(c) => {
                println!(
                    "{}: ok ({} agents, wallet {}, store {}, listen {})",
                    config.display(),
                    c.agents.len(),
                    c.wallet.backend.name(),
                    c.store.backend.name(),
                    c.listen
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                eprintln!(
                    "{}: {} problem{}:",
                    config.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                );
                for p in &problems {
                    eprintln!("  - {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        },
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
        Command::Run { config } => runtime()?.block_on(serve(config, log_format)),
        Command::Agents { command, admin } => operate(&admin, |client| async move {
            commands::agents(&client, &command, admin.json).await
        }),
        Command::Payments { filter, admin } => operate(&admin, |client| async move {
            commands::payments(&client, &filter, admin.json).await
        }),
        Command::Declines {
            agent,
            limit,
            csv,
            admin,
        } => operate(&admin, |client| async move {
            commands::declines(&client, agent.as_deref(), limit, csv, admin.json).await
        }),
        Command::Status { admin } => operate(&admin, |client| async move {
            commands::status(&client, admin.json).await
        }),
        Command::PauseAll { reason, admin } => operate(&admin, |client| async move {
            commands::pause_all(&client, reason.as_deref(), admin.json).await
        }),
        Command::ResumeAll { admin } => operate(&admin, |client| async move {
            commands::resume_all(&client, admin.json).await
        }),
        Command::Audit { limit, admin } => operate(&admin, |client| async move {
            commands::audit(&client, limit, admin.json).await
        }),
        Command::Healthcheck { url } => runtime()?.block_on(healthcheck(&url)),
        Command::Seller {
            listen,
            tls_listen,
            ca_out,
            tls_names,
            price_sats,
            lnbits_url,
            lnbits_invoice_key_env,
            dev_secret,
        } => runtime()?.block_on(seller(SellerArgs {
            listen,
            tls_listen,
            ca_out,
            tls_names,
            price_sats,
            lnbits: lnbits_url.zip(lnbits_invoice_key_env),
            dev_secret,
        })),
        Command::Demo {
            listen,
            admin_listen,
            data_dir,
            once,
        } => {
            let ok = runtime()?.block_on(l402_proxy::demo::run(l402_proxy::demo::DemoOptions {
                listen,
                admin_listen,
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

/// Runs one admin API command and prints what it returns; its error is the exit message.
fn operate<F, Fut>(admin: &Connection, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(l402_proxy::admin_client::AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<String, l402_proxy::admin_client::ClientError>>,
{
    let client = admin.client()?;
    let out = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command(client))?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config_path: PathBuf, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    l402_proxy::app::run(&config_path, |config| {
        let from_config = match config {
            Some(c) if c.log.format == l402_proxy::config::LogFormat::Json => LogFormat::Json,
            _ => LogFormat::Text,
        };
        init_logs(log_format.unwrap_or(from_config));
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// GET `url`; success only on 200.
async fn healthcheck(url: &str) -> anyhow::Result<ExitCode> {
    use http_body_util::Empty;
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let check = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = http::Request::get(path)
            .header(
                http::header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(""),
            )
            .body(Empty::<bytes::Bytes>::new())?;
        Ok::<_, anyhow::Error>(sender.send_request(req).await?.status())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(status)) if status == http::StatusCode::OK => Ok(ExitCode::SUCCESS),
        Ok(Ok(status)) => {
            eprintln!("{url}: {status}");
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            eprintln!("{url}: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("{url}: no answer within 5 s");
            Ok(ExitCode::FAILURE)
        }
    }
}

struct SellerArgs {
    listen: SocketAddr,
    tls_listen: Option<SocketAddr>,
    ca_out: Option<PathBuf>,
    tls_names: Vec<String>,
    price_sats: u64,
    lnbits: Option<(String, String)>,
    dev_secret: String,
}

/// The demo seller on fixed listeners, until SIGTERM or Ctrl-C.
async fn seller(args: SellerArgs) -> anyhow::Result<ExitCode> {
    use l402_proxy::demo::mint::DevInvoiceMinter;
    use l402_proxy::demo::seller::{
        serve_http, serve_https, InvoiceSource, Seller, SellerConfig, SellerTls,
    };
    use l402_proxy::invoice::Network;
    let mut config = SellerConfig::new(DevInvoiceMinter::new(&args.dev_secret, Network::Regtest));
    config.price = l402_proxy::core::Msat::from_sats(args.price_sats);
    if let Some((url, key_env)) = &args.lnbits {
        let key = std::env::var(key_env)
            .with_context(|| format!("environment variable {key_env} is not set"))?;
        config.invoices = InvoiceSource::Lnbits(Box::new(
            l402_proxy::demo::lnbits::LnbitsInvoices::new(url, &key)?,
        ));
    }
    let seller = Seller::new(config);
    let http = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tokio::spawn(serve_http(seller.clone(), http));
    if let Some(addr) = args.tls_listen {
        let tls = if args.tls_names.is_empty() {
            SellerTls::generate()?
        } else {
            SellerTls::generate_for(&args.tls_names)?
        };
        if let Some(path) = &args.ca_out {
            std::fs::write(path, &tls.ca_pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tokio::spawn(serve_https(seller.clone(), listener, tls.server));
    }
    tracing::info!(http = %args.listen, https = ?args.tls_listen, lnbits = args.lnbits.is_some(), "demo seller ready");
    l402_proxy::app::until_stopped().await;
    Ok(ExitCode::SUCCESS)
}
