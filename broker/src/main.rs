//! The `strata` binary. Command line reference: docs/cli.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_broker::broker::{Broker, SystemClock};
use strata_broker::config::Config;
use strata_broker::supervise::{Backoff, Supervisor};
use strata_broker::telemetry::{self, Health, Metrics};
use strata_broker::{cluster, server};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Kafka-compatible broker with tiered storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(ServeArgs),
    /// The cluster: controller, live brokers, partition counts.
    Status {
        #[command(flatten)]
        target: cli::Target,
    },
    /// List, describe, create, alter or delete topics.
    Topics {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::TopicsCommand,
    },
    /// Placement and leadership of every partition.
    Partitions {
        #[command(flatten)]
        target: cli::Target,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Tiering status per partition (from each partition's leader).
    Tiering {
        #[command(flatten)]
        target: cli::Target,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Segment cache statistics of every broker.
    Cache {
        #[command(flatten)]
        target: cli::Target,
    },
    /// Estimated cost per topic (last hour, last day, projected month), summed over every
    /// live broker's cost ledger.
    Cost {
        #[command(flatten)]
        target: cli::Target,
    },
    /// List or describe transactions, or abort a hanging one.
    Transactions {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::TransactionsCommand,
    },
    /// Move partitions to new replicas (as kafka-reassign-partitions), list or cancel
    /// moves.
    Reassign {
        #[command(flatten)]
        target: cli::Target,
        #[command(subcommand)]
        command: cli::ReassignCommand,
    },
    /// Spread replicas and preferred leaders evenly over the live brokers (after adding
    /// brokers): plan, move in batches, optionally throttled, then elect leaders.
    Rebalance {
        #[command(flatten)]
        target: cli::Target,
        #[command(flatten)]
        args: cli::RebalanceArgs,
    },
    /// Elect leaders: the preferred (first) replica, or with `--unclean` any live replica
    /// of a partition whose in-sync replicas are all down (it may lose acknowledged
    /// records).
    ElectLeaders {
        #[command(flatten)]
        target: cli::Target,
        #[arg(long)]
        unclean: bool,
        /// `TOPIC/PARTITION`; repeat for several.
        #[arg(
            long = "partition",
            value_name = "TOPIC/PARTITION",
            required_unless_present = "all_partitions",
            conflicts_with = "all_partitions"
        )]
        partitions: Vec<String>,
        /// Every partition of every topic.
        #[arg(long)]
        all_partitions: bool,
    },
    /// Move every replica off a broker (before decommissioning it); waits until done.
    Drain(DrainArgs),
    /// Cancel a drain: the broker may receive replicas again.
    Undrain(DrainArgs),
    /// Drain a broker, then shut it down; it receives no replicas until `undrain`.
    Decommission(DrainArgs),
    /// etcd snapshots to the object store (take, list, fetch), and a member's rejoin.
    Etcd {
        #[command(subcommand)]
        command: cli::EtcdCommand,
    },
}

#[derive(clap::Args)]
struct DrainArgs {
    #[command(flatten)]
    target: cli::Target,
    /// Talk to the metadata store directly instead of a broker's admin API:
    /// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` (works with no broker reachable).
    #[arg(long, value_name = "URL")]
    metadata: Option<String>,
    /// The broker to drain.
    #[arg(long, value_name = "N")]
    node: i32,
    /// Give up (exit 1) if replicas are still on the broker after this long.
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    timeout_ms: u64,
    /// With `--metadata`. drain: write this file, holding a token, and mark the broker
    /// draining with it, unless it was marked already (by an operator's drain or
    /// decommission; the file is then removed). undrain: remove the mark only if it still
    /// carries this file's token (no other drain marked the broker since). A pod's start
    /// script undrains only a broker whose volume holds this file.
    #[arg(long, value_name = "FILE", requires = "metadata")]
    marker: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (settings: docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This broker's id [default: 0].
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// This broker's rack (availability zone) [default: none].
    #[arg(long, value_name = "RACK")]
    rack: Option<String>,
    /// gRPC listener for replication [default: 127.0.0.1:9093].
    #[arg(long, value_name = "HOST:PORT")]
    replication_listen: Option<String>,
    /// gRPC listener of the admin API [default: 127.0.0.1:9094].
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Kafka listener [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listener for /metrics, /healthz, /readyz [default: 127.0.0.1:9644].
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// `embedded` or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]` [default: embedded].
    #[arg(long, value_name = "URL")]
    metadata: Option<String>,
    /// `file:///DIR` or `s3://BUCKET[/PREFIX]` [default: <data-dir>/objects].
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> BTreeMap<&'static str, String> {
        let mut flags = BTreeMap::new();
        let mut set = |name, value: Option<String>| {
            if let Some(value) = value {
                flags.insert(name, value);
            }
        };
        set("node_id", self.node_id.map(|v| v.to_string()));
        set("rack", self.rack.clone());
        set("replication_listen", self.replication_listen.clone());
        set("admin_listen", self.admin_listen.clone());
        set("listen", self.listen.clone());
        set("advertise", self.advertise.clone());
        set(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        set("http", self.http.clone());
        set("metadata", self.metadata.clone());
        set("object_store", self.object_store.clone());
        flags
    }
}

fn main() -> ExitCode {
    // One crypto provider for every TLS client and server in the process (tonic's and
    // etcd's included), chosen explicitly: aws-lc-rs, which object_store already builds.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Status { target } => cli::run(&target, cli::status(&target)),
        Command::Topics { target, command } => cli::run(&target, cli::topics(&target, command)),
        Command::Partitions { target, topic } => cli::run(&target, cli::partitions(&target, topic)),
        Command::Tiering { target, topic } => cli::run(&target, cli::tiering(&target, topic)),
        Command::Cache { target } => cli::run(&target, cli::cache(&target)),
        Command::Cost { target } => cli::run(&target, cli::cost(&target)),
        Command::Transactions { target, command } => {
            cli::run(&target, cli::transactions(&target, command))
        }
        Command::Reassign { target, command } => cli::run(&target, cli::reassign(&target, command)),
        Command::Rebalance { target, args } => cli::run(&target, cli::rebalance(&target, args)),
        Command::ElectLeaders {
            target,
            unclean,
            partitions,
            all_partitions,
        } => cli::run(
            &target,
            cli::elect_leaders(&target, unclean, partitions, all_partitions),
        ),
        Command::Drain(args) => drain_command(args, true, false),
        Command::Undrain(args) => drain_command(args, false, false),
        Command::Decommission(args) => drain_command(args, true, true),
        Command::Etcd { command } => cli::etcd(command),
        Command::Serve(args) => {
            let loaded = Config::load(args.config.as_deref(), std::env::vars(), &args.flags())
                .and_then(|config| {
                    strata_broker::topic_config::check_defaults(&config)?;
                    Ok(config)
                });
            let config = match loaded {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("strata: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = cli::runtime(tokio::runtime::Builder::new_multi_thread()) else {
                return ExitCode::FAILURE;
            };
            // Inside the runtime: the OTLP exporter's gRPC client lives there.
            let tracing = match runtime.block_on(async { telemetry::init_tracing(&config) }) {
                Ok(tracing) => tracing,
                Err(e) => {
                    eprintln!(
                        "strata: cannot set up trace export to {}: {e:#}",
                        config.otlp_endpoint
                    );
                    return ExitCode::FAILURE;
                }
            };
            let code = match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("strata stopped: {e:#}");
                    ExitCode::FAILURE
                }
            };
            tracing.shutdown();
            code
        }
    }
}

/// Shares out the open-files limit (see `strata_broker::sys`), sizes the sealed-segment
/// file cache, and says so once, so an operator can see what one broker can hold.
fn fd_budget(config: &Config) {
    use strata_broker::sys::{FILES_PER_ACTIVE_SEGMENT, FdBudget};
    let budget = FdBudget::current().unwrap_or_else(|_| FdBudget::for_limit(1024));
    let segment_files = config.open_segment_files(&budget);
    let partitions = config.partition_limit(&budget);
    strata_broker::log::files::set_capacity(segment_files as usize);
    info!(
        limit = budget.limit,
        connections = budget.connections,
        storage = budget.storage,
        segment_files,
        max_partitions = partitions,
        "open files shared out"
    );
    let storage_needed = partitions
        .saturating_mul(FILES_PER_ACTIVE_SEGMENT)
        .saturating_add(segment_files);
    if storage_needed > budget.storage {
        tracing::warn!(
            needed = storage_needed,
            storage = budget.storage,
            "max_partitions and log_max_open_segment_files need more descriptors than the storage share of the open files limit; raise the limit or lower them"
        );
    }
}

/// Runs the broker until SIGTERM, SIGINT or the admin API's Shutdown, then stops it in
/// order: connections first, then the background loops, then the logs are flushed.
async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    fd_budget(&config);
    let metrics = Arc::new(Metrics::new().context("register metrics")?);
    let cancel = CancellationToken::new();
    let supervisor = start_supervisor(&config, &metrics, &cancel)?;
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
        tasks: supervisor.clone(),
        roll: Default::default(),
        rejoined: false.into(),
    });
    let http = start_http(&config, health.clone(), &cancel).await?;
    metrics.cost.configure(config.cost_prices()?, &config.rack);
    let broker = open_broker(config, metrics, &cancel).await?;
    let clustered = is_clustered(&broker.config)?;
    // Replication between brokers: only with a shared metadata store. Bound before this
    // broker registers, so that a registered broker whose replication address refuses
    // connections has crashed (broker/liveness.rs); served once it has joined.
    let replication_listener = if clustered {
        Some(bind_replication_listener(&broker).await?)
    } else {
        None
    };
    // Join (and step down where others are in sync) before serving anything: until then
    // the roles read at start-up may be stale.
    let session = broker
        .join_cluster(true)
        .await
        .context("register this broker in the cluster")?;
    // The roll gate answers only from here: before its first metadata round the broker
    // sees no other broker live and would name every replicated partition a blocker.
    let _ = health.roll.set(broker.clone());
    let replication = match replication_listener {
        Some(incoming) => Some(start_replication_server(&broker, incoming, &cancel)?),
        None => None,
    };
    // Every background loop runs supervised: a panic or error is logged, counted and
    // restarted with a backoff, and /readyz names the loop while it waits (supervise.rs).
    let cluster_loops = start_cluster_loops(&supervisor, &broker, session, clustered);
    // The admin API; its Shutdown call stops the broker as SIGTERM does.
    let stop = CancellationToken::new();
    let admin = start_admin_server(&broker, &stop, &cancel).await?;
    let listeners = bind_kafka_listeners(&broker).await?;
    let tracker = TaskTracker::new();
    let periodic_loops = start_periodic_loops(&supervisor, &broker);
    let accept = tokio::spawn(listeners.run(cancel.clone(), tracker.clone()));
    health.ready.store(true, Ordering::Relaxed);

    stopped(&stop).await?;
    let running = Running {
        http,
        replication,
        admin,
        accept,
        tracker,
        cluster_loops,
        periodic_loops,
    };
    shut_down(&broker, &health, &cancel, running).await;
    Ok(())
}

/// Whether brokers share a metadata store (etcd), and so replicate between them.
fn is_clustered(config: &Config) -> anyhow::Result<bool> {
    Ok(matches!(
        config.metadata_url()?,
        strata_broker::config::MetadataUrl::Etcd { .. }
    ))
}

/// Raises the soft open-files limit to the hard one, or says why it could not.
fn raise_open_files_limit() {
    match strata_broker::sys::raise_open_files_limit() {
        Ok((before, after)) => info!(before, after, "open files limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// The supervisor of every background loop, with the panics `fault_injection` asks for.
fn start_supervisor(
    config: &Config,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<Arc<Supervisor>> {
    let supervisor = Supervisor::new(
        Backoff::default(),
        metrics.task_restarts.clone(),
        cancel.clone(),
    );
    for (task, starts) in config.panic_tasks()? {
        tracing::warn!(
            task,
            starts,
            "fault injection: a background task will panic"
        );
        supervisor.inject_panics(&task, starts);
    }
    Ok(supervisor)
}

/// Serves /metrics, /healthz and /readyz from before the logs are recovered, so an
/// operator can watch a slow start-up.
async fn start_http(
    config: &Config,
    health: Arc<Health>,
    cancel: &CancellationToken,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let http_listener = tokio::net::TcpListener::bind(config.http_addr()?)
        .await
        .with_context(|| format!("bind the HTTP listener on {}", config.http))?;
    Ok(tokio::spawn(telemetry::serve_http(
        http_listener,
        health,
        cancel.clone(),
    )))
}

/// Opens the metadata and manifest stores and the tiering service, then the broker
/// (which recovers every local log).
async fn open_broker(
    config: Config,
    metrics: Arc<Metrics>,
    cancel: &CancellationToken,
) -> anyhow::Result<Arc<Broker>> {
    let stores = cluster::open(&config).await?;
    let cluster_id = stores
        .metadata
        .cluster_id()
        .await
        .context("read the cluster id")?;
    let tiering = strata_broker::tier::Tiering::open(
        &config,
        &cluster_id,
        stores.manifests.clone(),
        &metrics,
    )
    .await?;
    let diskless = strata_broker::diskless::store::open(&config, stores.etcd.as_ref())?;
    Broker::open_with_diskless(
        config,
        stores.metadata,
        Some(diskless),
        Some(Arc::new(tiering)),
        metrics,
        Arc::new(SystemClock),
        cancel.clone(),
    )
    .await
}

/// The gRPC server followers fetch from. Mutual TLS when certificates are configured: a
/// client without a certificate from ssl_ca_file fails the handshake.
async fn bind_replication_listener(
    broker: &Arc<Broker>,
) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = broker.config.replication_addr()?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the replication listener on {addr}"))
}

fn start_replication_server(
    broker: &Arc<Broker>,
    incoming: tokio::net::TcpListener,
    cancel: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let routes =
        tonic::service::Routes::new(strata_broker::replication::server::service(broker.clone()));
    let tls = strata_broker::security::grpc::acceptor(
        &broker.config,
        strata_broker::config::ClientAuth::Required,
        cancel,
    )?;
    Ok(serve_grpc(
        routes,
        incoming,
        tls,
        cancel.clone(),
        "replication",
    ))
}

/// The admin API's gRPC server; `stop` is cancelled by its Shutdown call. A client
/// certificate is asked for, not required (the bearer token is the other way in).
async fn start_admin_server(
    broker: &Arc<Broker>,
    stop: &CancellationToken,
    cancel: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let addr = broker.config.admin_addr()?;
    let incoming = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the admin listener on {addr}"))?;
    let routes =
        tonic::service::Routes::new(strata_broker::admin::service(broker.clone(), stop.clone())?);
    let tls = strata_broker::security::grpc::acceptor(
        &broker.config,
        strata_broker::config::ClientAuth::Requested,
        cancel,
    )?;
    Ok(serve_grpc(routes, incoming, tls, cancel.clone(), "admin"))
}

/// Serves `routes` on `incoming` until `cancel`, over TLS when `tls` is given.
fn serve_grpc(
    routes: tonic::service::Routes,
    incoming: tokio::net::TcpListener,
    tls: Option<Arc<strata_broker::security::tls::TlsAcceptor>>,
    cancel: CancellationToken,
    name: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder().add_routes(routes);
        let served = match tls {
            Some(tls) => {
                server
                    .serve_with_incoming_shutdown(
                        strata_broker::security::grpc::incoming(incoming, tls),
                        cancel.cancelled_owned(),
                    )
                    .await
            }
            None => {
                // No Nagle: a follower's fetch and the leader's answer are small writes
                // each waiting on the other, and Nagle plus delayed ACKs adds ~40 ms to
                // every acks=all round trip.
                let incoming = futures::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(incoming),
                    |stream| {
                        stream.inspect(|s| {
                            if let Err(e) = s.set_nodelay(true) {
                                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
                            }
                        })
                    },
                );
                server
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = served {
            error!(error = %e, server = name, "a gRPC server stopped");
        }
    })
}

/// Binds the Kafka listeners and says the broker is serving.
async fn bind_kafka_listeners(broker: &Arc<Broker>) -> anyhow::Result<server::KafkaListeners> {
    let listeners = server::bind(broker).await?;
    let first = &broker.listeners[0];
    info!(listen = %first.bind, advertised = %format!("{}:{}", broker.advertised_host, broker.advertised_port),
        listeners = broker.listeners.len(), cluster_id = %broker.cluster_id,
        node_id = broker.config.node_id, "strata is serving");
    Ok(listeners)
}

/// The loops that keep this broker in the cluster. They share the session, which
/// outlives restarts of the two loops that use it.
struct ClusterLoops {
    keeper: JoinHandle<()>,
    membership: JoinHandle<()>,
    /// The watch on the cluster view and the probes of peers: with etcd only.
    watch: Option<JoinHandle<()>>,
    probes: Option<JoinHandle<()>>,
    fetchers: JoinHandle<()>,
    current_session: tokio::sync::watch::Receiver<i64>,
}

fn start_cluster_loops(
    supervisor: &Arc<Supervisor>,
    broker: &Arc<Broker>,
    session: i64,
    clustered: bool,
) -> ClusterLoops {
    let (sessions, current_session) = tokio::sync::watch::channel(session);
    let sessions = Arc::new(sessions);
    let keeper = supervisor.spawn("session", {
        let broker = broker.clone();
        move || broker.clone().keep_session(sessions.clone())
    });
    let membership = supervisor.spawn("metadata", {
        let (broker, current_session) = (broker.clone(), current_session.clone());
        move || broker.clone().run_metadata_rounds(current_session.clone())
    });
    let watch = clustered.then(|| {
        supervisor.spawn("metadata_watch", {
            let broker = broker.clone();
            move || broker.clone().watch_view()
        })
    });
    let probes = clustered.then(|| {
        supervisor.spawn("peer_probes", {
            let broker = broker.clone();
            move || broker.clone().run_peer_probes()
        })
    });
    let fetchers = supervisor.spawn("replication_fetchers", {
        let (broker, supervisor) = (broker.clone(), supervisor.clone());
        move || strata_broker::replication::fetcher::run(broker.clone(), supervisor.clone())
    });
    ClusterLoops {
        keeper,
        membership,
        watch,
        probes,
        fetchers,
        current_session,
    }
}

/// The loops that do the broker's periodic work: housekeeping, group timers,
/// compaction, uploads and scrubbing of the remote tier.
struct PeriodicLoops {
    housekeeping: JoinHandle<()>,
    coordinator: JoinHandle<()>,
    transactions: JoinHandle<()>,
    cleaner: JoinHandle<()>,
    uploader: JoinHandle<()>,
    scrubber: JoinHandle<()>,
    read_pacer: JoinHandle<()>,
    diskless_merger: JoinHandle<()>,
    diskless_scrubber: JoinHandle<()>,
    cost_ledger: JoinHandle<()>,
}

fn start_periodic_loops(supervisor: &Arc<Supervisor>, broker: &Arc<Broker>) -> PeriodicLoops {
    let housekeeping = supervisor.spawn("housekeeping", {
        let broker = broker.clone();
        move || {
            every(
                broker.housekeeping_interval(),
                broker.clone(),
                |broker| async move { broker.housekeeping(false).await },
            )
        }
    });
    // Group timers (join and sync deadlines, sessions) have this resolution.
    let coordinator = supervisor.spawn("group_coordinator", {
        let broker = broker.clone();
        move || {
            every(
                Duration::from_millis(100),
                broker.clone(),
                |broker| async move { broker.groups.tick(&broker).await },
            )
        }
    });
    // Transaction timeouts, marker retries and id expiry (crate::txn).
    let transactions = supervisor.spawn("transaction_coordinator", {
        let broker = broker.clone();
        move || {
            let interval = Duration::from_millis(
                broker
                    .config
                    .transaction_abort_timed_out_transaction_cleanup_interval_ms
                    as u64,
            );
            every(interval, broker.clone(), |broker| async move {
                broker.txns.tick(&broker).await
            })
        }
    });
    let cleaner = supervisor.spawn("cleaner", {
        let broker = broker.clone();
        move || {
            let interval = Duration::from_millis(broker.config.log_cleaner_interval_ms as u64);
            every(interval, broker.clone(), |broker| async move {
                broker.clean_logs().await
            })
        }
    });
    let uploader = supervisor.spawn("uploader", {
        let broker = broker.clone();
        move || strata_broker::tier::run_uploader(broker.clone())
    });
    let scrubber = supervisor.spawn("scrubber", {
        let broker = broker.clone();
        move || strata_broker::tier::run_scrubber(broker.clone())
    });
    let read_pacer = supervisor.spawn("read_pacer", {
        let broker = broker.clone();
        move || strata_broker::tier::run_read_pacer(broker.clone())
    });
    // Diskless partitions: merging (with retention) by each partition's owner, and the
    // shared-object scrubber on the controller. Both end at once without diskless.
    let diskless_merger = supervisor.spawn("diskless_merger", {
        let broker = broker.clone();
        move || strata_broker::diskless::merge::run_merger(broker.clone())
    });
    let diskless_scrubber = supervisor.spawn("diskless_scrubber", {
        let broker = broker.clone();
        move || strata_broker::diskless::scrub::run_scrubber(broker.clone())
    });
    // Storage accrual and budget checks of the cost ledger (crate::cost).
    let cost_ledger =
        supervisor.spawn("cost_ledger", {
            let broker = broker.clone();
            move || {
                every(
                    Duration::from_millis(strata_broker::cost::TICK_MS),
                    broker.clone(),
                    |broker| async move {
                        strata_broker::broker::cost_ledger::tick_broker(&broker).await
                    },
                )
            }
        });
    PeriodicLoops {
        cost_ledger,
        housekeeping,
        coordinator,
        transactions,
        cleaner,
        uploader,
        scrubber,
        read_pacer,
        diskless_merger,
        diskless_scrubber,
    }
}

/// Everything `serve` started that shutdown waits for.
struct Running {
    http: JoinHandle<std::io::Result<()>>,
    replication: Option<JoinHandle<()>>,
    admin: JoinHandle<()>,
    accept: JoinHandle<()>,
    /// The client connections.
    tracker: TaskTracker,
    cluster_loops: ClusterLoops,
    periodic_loops: PeriodicLoops,
}

/// Stops the broker: no new connections, in-flight requests get `shutdown_timeout_ms`,
/// then every loop and server is waited for and the logs are flushed.
async fn shut_down(broker: &Broker, health: &Health, cancel: &CancellationToken, running: Running) {
    let Running {
        http,
        replication,
        admin,
        accept,
        tracker,
        cluster_loops,
        periodic_loops,
    } = running;
    info!("shutting down: no new connections; finishing in-flight requests");
    health.ready.store(false, Ordering::Relaxed);
    cancel.cancel();
    let _ = accept.await;
    tracker.close();
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms as u64);
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        info!(?timeout, "some connections did not finish in time");
    }
    let _ = periodic_loops.housekeeping.await;
    let _ = periodic_loops.coordinator.await;
    let _ = periodic_loops.transactions.await;
    let _ = periodic_loops.read_pacer.await;
    let _ = periodic_loops.cost_ledger.await;
    let _ = cluster_loops.membership.await;
    for handle in [cluster_loops.watch, cluster_loops.probes]
        .into_iter()
        .flatten()
    {
        let _ = handle.await;
    }
    let _ = cluster_loops.keeper.await;
    broker
        .end_session(*cluster_loops.current_session.borrow())
        .await;
    let _ = cluster_loops.fetchers.await;
    if let Some(replication) = replication {
        let _ = replication.await;
    }
    let _ = admin.await;
    let PeriodicLoops {
        cleaner,
        uploader,
        scrubber,
        diskless_merger,
        diskless_scrubber,
        ..
    } = periodic_loops;
    // A merge stops between partitions; one cut short leaves an orphan segment for the
    // scrubber or runs to trim at the next round (tiering/src/lib.rs, the crash table).
    if tokio::time::timeout(timeout, diskless_merger)
        .await
        .is_err()
    {
        info!("a diskless merge was still running at shutdown; it will be redone");
    }
    diskless_scrubber.abort();
    finish_log_work(broker, timeout, cleaner, uploader, scrubber).await;
    let _ = http.await;
    info!("flushed all logs; bye");
}

/// Lets compaction and upload finish what they are doing (up to `timeout` each), stops
/// the scrubber, and flushes every log.
async fn finish_log_work(
    broker: &Broker,
    timeout: Duration,
    cleaner: JoinHandle<()>,
    uploader: JoinHandle<()>,
    scrubber: JoinHandle<()>,
) {
    // A pass stops between partitions; one in progress finishes or leaves only staged
    // copies that start-up discards.
    if tokio::time::timeout(timeout, cleaner).await.is_err() {
        info!("a compaction pass was still running at shutdown");
    }
    // Uploads stop between segments; one in flight may finish or be abandoned (it is
    // redone after restart, and its object scrubbed if it never committed).
    if tokio::time::timeout(timeout, uploader).await.is_err() {
        info!("an upload was still running at shutdown; it will be redone");
    }
    scrubber.abort();
    broker.housekeeping(true).await;
    if let Some(tiering) = &broker.tiering
        && let Err(e) = tiering.cache.close().await
    {
        tracing::warn!(error = %e, "closing the remote segment cache failed");
    }
}

/// Runs `pass` on every tick of `interval` (the first at once) until shutdown.
async fn every<F, Fut>(interval: Duration, broker: Arc<Broker>, mut pass: F)
where
    F: FnMut(Arc<Broker>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            _ = ticker.tick() => pass(broker.clone()).await,
        }
    }
}

fn drain_command(args: DrainArgs, drain: bool, shutdown: bool) -> ExitCode {
    let timeout = Duration::from_millis(args.timeout_ms);
    match &args.metadata {
        Some(_) if shutdown => {
            eprintln!(
                "strata: decommission stops the broker through its admin API; use --admin, not --metadata"
            );
            ExitCode::from(2)
        }
        Some(_) => cli::run(&args.target, drain_broker(&args, drain)),
        None => cli::run(
            &args.target,
            cli::drain(&args.target, args.node, drain, timeout, shutdown),
        ),
    }
}

async fn drain_broker(args: &DrainArgs, drain: bool) -> anyhow::Result<()> {
    // The etcd TLS and user settings come from the environment, as the broker's do (a
    // pod's preStop hook runs this with the broker's environment).
    let setting =
        |name: &str| std::env::var(format!("STRATA_{}", name.to_uppercase())).unwrap_or_default();
    let config = Config {
        metadata: args.metadata.clone().unwrap_or_default(),
        etcd_ca_file: setting("etcd_ca_file"),
        etcd_cert_file: setting("etcd_cert_file"),
        etcd_key_file: setting("etcd_key_file"),
        etcd_username: setting("etcd_username"),
        etcd_password: setting("etcd_password"),
        ..Config::default()
    };
    let stores = cluster::open(&config).await?;
    let store = stores.metadata;
    match (&args.marker, drain) {
        (Some(marker), true) => {
            // The marker first, holding the token the mark will carry: a broker marked
            // draining without it would stay drained after its restart, silently. If the
            // mark cannot be stored, the marker goes.
            let token = uuid::Uuid::new_v4().simple().to_string();
            std::fs::write(marker, format!("{} {token}\n", args.node))
                .with_context(|| format!("write the drain marker {}", marker.display()))?;
            match store.mark_draining_owned(args.node, &token).await {
                Ok(true) => {}
                Ok(false) => {
                    // An operator's drain (or decommission), or ours whose undrain at
                    // start failed: either way not this drain's to undo.
                    remove_marker(marker)?;
                    println!(
                        "broker {} was already marked draining; it stays drained after a restart",
                        args.node
                    );
                }
                Err(e) => {
                    remove_marker(marker)?;
                    return Err(e.into());
                }
            }
        }
        (Some(marker), false) => {
            // The start script's undrain: only the mark this marker's drain made.
            let text = std::fs::read_to_string(marker)
                .with_context(|| format!("read the drain marker {}", marker.display()))?;
            let undone = match text.split_whitespace().nth(1) {
                Some(token) => store.undrain_owned(args.node, token).await?,
                // A marker without a token (written before tokens): undrain as then.
                None => {
                    store.set_draining(args.node, false).await?;
                    true
                }
            };
            if !undone {
                println!(
                    "broker {} was marked draining again by someone else (an operator's drain); it stays drained",
                    args.node
                );
                return Ok(());
            }
        }
        (None, _) => store.set_draining(args.node, drain).await?,
    }
    if !drain {
        println!("broker {} is no longer draining", args.node);
        return Ok(());
    }
    println!(
        "broker {} marked for draining; moving its replicas",
        args.node
    );
    let deadline = std::time::Instant::now() + Duration::from_millis(args.timeout_ms);
    loop {
        let topics = store.list_topics().await?;
        let left: usize = topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&args.node))
            .count();
        if left == 0 {
            println!("drained: broker {} holds no replicas", args.node);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "timed out: broker {} still holds {left} replicas (is a controller running, and are other brokers live?)",
                args.node
            );
        }
        println!("{left} replicas left on broker {}", args.node);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes a drain marker; one that is not there is fine.
fn remove_marker(marker: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove the drain marker {}", marker.display()))
        }
        _ => Ok(()),
    }
}

/// Waits for SIGTERM, SIGINT or the admin API's Shutdown (which cancels `stop`).
async fn stopped(stop: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        signal = shutdown_signal() => signal?,
        _ = stop.cancelled() => {}
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}
