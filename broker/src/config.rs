//! Broker configuration: a flat TOML file, overridden by `STRATA_<SETTING>` environment
//! variables, overridden by command-line flags. Validated once at start-up; every error
//! names the setting. docs/configuration.md is the reference for operators.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod listeners;
mod security;

pub use listeners::{Listener, SecurityProtocol};
pub use security::{ClientAuth, SaslMechanism};

/// Every broker setting. Field names are the TOML keys; the environment variable is the
/// name in upper case with a `STRATA_` prefix.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This broker's id in Metadata responses. Default 0.
    pub node_id: i32,
    /// Kafka listener. Default 127.0.0.1:9092.
    pub listen: String,
    /// Address clients are told to connect to. Default: empty, meaning `listen`.
    pub advertise: String,
    /// Where logs and the embedded metadata live. Default ./data. Size it for the hot set.
    pub data_dir: PathBuf,
    /// HTTP listener for /metrics, /healthz, /readyz. Default 127.0.0.1:9644.
    pub http: String,
    /// `embedded` (a file in the data dir), `file:///DIR` (the embedded store in another
    /// directory, so it outlives the data disk) or
    /// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
    pub metadata: String,
    /// Where tiered storage puts segments: `file:///DIR` or `s3://BUCKET[/PREFIX]`.
    /// Default: empty, meaning `file://<data_dir>/objects`.
    pub object_store: String,
    /// S3 endpoint URL (MinIO, moto, or a VPC endpoint). Default: empty, meaning
    /// AWS_ENDPOINT_URL if set, else AWS's regional endpoint.
    pub s3_endpoint: String,
    /// S3 region. Default: empty, meaning AWS_REGION (then us-east-1).
    pub s3_region: String,
    /// Static credentials. Default: empty, meaning AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY, then web identity (IRSA), then instance credentials.
    /// Prefer the environment or a Secret over writing keys into the config file.
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    /// Path-style requests (ENDPOINT/BUCKET/KEY). MinIO and moto need it. Default false.
    pub s3_path_style: bool,
    /// Allow plain-HTTP endpoints. Default false.
    pub s3_allow_http: bool,
    /// How often the uploader looks for sealed segments to upload, and applies remote
    /// retention. Default 1000 ms. Upload latency after a roll is at most this long.
    pub remote_upload_interval_ms: i64,
    /// Partitions uploading at once. Default 4. Each upload holds one part in memory.
    pub remote_upload_concurrency: i64,
    /// Multipart part size; segments larger than one part are uploaded in parts. Default
    /// 16 MiB (S3's minimum is 5 MiB). Each part is one billed PUT request: at 16 MiB a
    /// 1 GiB segment costs 66 requests, at 64 MiB 18.
    pub remote_upload_part_bytes: i64,
    /// Warn when the oldest sealed segment not yet uploaded is older than this. Default
    /// 300000 ms (5 minutes).
    pub remote_upload_stall_warn_ms: i64,
    /// Diskless topics: how long a broker collects produced batches (of every diskless
    /// partition) before writing them as one shared object and committing their offsets.
    /// Default 250 ms. Each flush costs one PUT and one metadata-store transaction per 40
    /// partitions written: 4 PUTs a second per busy broker at 250 ms (about $52 a month at
    /// S3's $0.005 per 1000 PUTs), and adds up to this long to produce latency.
    pub diskless_append_interval_ms: i64,
    /// Diskless topics: flush at once when this many bytes are waiting, before the
    /// interval ends. Default 8 MiB. Bounds the memory one flush holds and the object
    /// size; larger means fewer PUTs under heavy load.
    pub diskless_append_bytes: i64,
    /// Diskless topics: bytes of produce requests the appender may hold waiting (queued
    /// and not yet taken by a flush); past it produce to diskless partitions is refused
    /// with the retriable KAFKA_STORAGE_ERROR. Default 32 MiB (four flushes). Bounds the
    /// broker's memory when the object store or the metadata store is slow; at least
    /// `diskless_append_bytes`.
    pub diskless_append_queue_bytes: i64,
    /// Diskless topics: runs (unmerged appends) a partition may have before produce to it
    /// is refused with a retriable error until merging catches up. Default 2000. Each
    /// run is about 250 bytes in the metadata store.
    pub diskless_max_pending_runs: i64,
    /// Diskless topics: bytes of the shared objects this broker wrote kept in memory, so
    /// consumers tailing a partition read them without a GET. Default 128 MiB.
    pub diskless_write_cache_bytes: i64,
    /// The cost ledger's prices (docs/cost.md): a path to a TOML file, or the TOML inline.
    /// Default: empty, AWS list prices (S3 Standard us-east-1, inter-AZ transfer);
    /// `zero = true` for MinIO. Costs nothing to run: it only prices what is counted.
    pub cost_price_table: String,
    /// Manifest entries kept in the metadata store per partition before older ones spill
    /// into immutable objects in the bucket. Default 100 (about 7 KiB in etcd per
    /// partition). Each spill costs one PUT.
    pub remote_manifest_tail_entries: i64,
    /// References per level in a manifest root before they are merged a level up.
    /// Default 16.
    pub remote_manifest_fanout: i64,
    /// Remote reads fetch objects in chunks of this size with ranged GETs. Default 4 MiB.
    /// Larger chunks mean fewer GET requests per GiB replayed (S3 bills each) but more
    /// memory per read and more bytes fetched for short reads.
    pub remote_chunk_bytes: i64,
    /// Chunks fetched ahead of a sequential remote reader, 0 to 1024 (0: no read-ahead).
    /// Default 4.
    pub remote_read_ahead_chunks: i64,
    /// Upper bound on bytes per second fetched from the object store for remote reads, so
    /// replays cannot starve live produce and fetch. Default 0: unlimited.
    pub remote_read_rate_bytes: i64,
    /// Ranged GETs the read-ahead keeps in flight at once, over all partitions. Default 8.
    /// More keeps a slow store busier (each GET is latency-bound) at the cost of
    /// `remote_chunk_bytes` of memory per GET in flight.
    pub remote_read_ahead_concurrency: i64,
    /// Threads of the separate runtime that runs remote reads, cache fills and the disk
    /// cache's I/O, so that replays do not queue behind or ahead of produce on the
    /// request threads. Default 2.
    pub remote_read_threads: i64,
    /// Read-ahead backs off (halves its GETs in flight, down to 1) over each 100 ms in
    /// which a 10 ms timer on the request threads fired more than this late, and grows
    /// back by one GET per period on time. Default 0: off (only
    /// `remote_read_rate_bytes` and `remote_read_ahead_concurrency` limit replays); on a
    /// busy 2-core machine 2 ms slowed replays without a measurable gain in produce p99
    /// (docs/benchmarks.md). Lower protects produce latency more and slows replays more.
    pub remote_read_backoff_lag_ms: i64,
    /// Memory for cached remote chunks. Default 256 MiB.
    pub remote_cache_memory_bytes: i64,
    /// Local disk for cached remote chunks; 0 keeps the cache in memory only. Default
    /// 1 GiB. Replays that fit in it are served at local-disk speed the second time.
    pub remote_cache_disk_bytes: i64,
    /// Directory for the disk cache. Default: empty, meaning `<data_dir>/cache`.
    pub remote_cache_dir: String,
    /// How often the scrubber lists the bucket for objects no manifest references.
    /// Default 3600000 ms (1 hour); each run costs one LIST request per 1000 objects.
    pub remote_scrub_interval_ms: i64,
    /// Unreferenced objects younger than this are left alone (an upload may be about to
    /// commit them). Default 3600000 ms; at least 60000 ms (1 minute) unless
    /// `testing_short_scrub_grace` is set.
    pub remote_scrub_grace_ms: i64,
    /// How often the merge owner of each diskless partition looks for runs to merge into
    /// a segment. Default 10000 ms; a look at a partition with nothing to do costs
    /// nothing but reading the in-memory view. Retention is applied at most once per
    /// `diskless_merge_max_age_ms`.
    pub diskless_merge_interval_ms: i64,
    /// Target size of a merged segment (capped by the topic's segment.bytes). Unmerged
    /// runs are merged once they reach it. Default 64 MiB: each merge costs one PUT, one
    /// metadata-store commit and a GET per run not in the segment cache; smaller segments
    /// mean more of each and more manifest entries.
    pub diskless_merge_bytes: i64,
    /// Unmerged diskless data older than this is merged even if small. Default 60000 ms.
    /// Lower: fewer runs in the metadata store and sooner deletion of shared objects, at
    /// the price of more, smaller segments (PUTs, manifest entries).
    pub diskless_merge_max_age_ms: i64,
    /// Shared objects (diskless appends) that no committed run references are deleted by
    /// the scrubber once older than this. It must exceed the longest time between an
    /// append's PUT and its metadata commit (an append gives its commit up once half of
    /// it has passed since its PUT). Default 600000 ms (10 minutes); at least 300000 ms
    /// (5 minutes) unless `testing_short_scrub_grace` is set. An object kept longer costs
    /// only its storage.
    pub diskless_scrub_grace_ms: i64,
    /// Testing only: lifts the floors of `remote_scrub_grace_ms` (1 minute) and
    /// `diskless_scrub_grace_ms` (5 minutes) so tests can watch the scrubbers within
    /// seconds. A short grace period lets a scrubber delete an object an upload or append
    /// in flight is about to commit. Default false.
    pub testing_short_scrub_grace: bool,
    /// Produce is refused with a retriable error (KAFKA_STORAGE_ERROR) while the data
    /// directory's file system is fuller than this, so a stalled upload backlog fills the
    /// disk to a known point instead of crashing the broker. Default 95; 100 disables.
    pub disk_high_watermark_percent: i64,
    /// Testing only, comma-separated faults: `crash_after_upload=N` aborts the process
    /// after the N-th segment upload, before its manifest commit; `panic_task=TASK:N` makes
    /// the first N starts of background loop TASK panic (names in docs/operations.md,
    /// "Supervised background tasks"). Default empty.
    pub fault_injection: String,
    /// Partitions of auto-created topics and of CreateTopics with -1. Default 1.
    pub num_partitions: i32,
    /// Create a topic when a client asks Metadata for one that does not exist.
    /// Default true.
    pub auto_create_topics: bool,
    /// Replication factor for topics created with -1. Default 1 (one broker).
    pub default_replication_factor: i16,
    /// Largest request frame accepted, checked before any allocation. Default 100 MiB.
    /// Memory per connection can reach this size while a request is read.
    pub max_request_bytes: i64,
    /// Upper bound on the bytes one Fetch response reads, whatever the client asks for
    /// (the first batch is still returned whole). Default 55 MiB, as Kafka's
    /// fetch.max.bytes. Memory per in-flight fetch can reach this size.
    pub fetch_max_bytes: i64,
    /// Log filter (RUST_LOG syntax) when RUST_LOG is unset. Default "info".
    pub log_filter: String,
    /// `text` or `json` log lines on stderr. Default text.
    pub log_format: String,
    /// OTLP/gRPC endpoint traces are exported to (`http://HOST:4317`, an OpenTelemetry
    /// Collector). Default: empty, meaning tracing export is off.
    pub otlp_endpoint: String,
    /// Share of traces exported (0.0 to 1.0), decided at each trace's root. Default 0.01.
    pub otlp_sample_ratio: f64,
    /// Default segment.bytes. Default 1 GiB. Smaller segments mean more files and more
    /// frequent fsyncs at roll; larger ones delay retention.
    pub log_segment_bytes: i64,
    /// Default segment.ms. Default 7 days.
    pub log_segment_ms: i64,
    /// Default retention.ms; -1 keeps data forever. Default 7 days.
    pub log_retention_ms: i64,
    /// Default retention.bytes per partition; -1 means no size limit. Default -1.
    pub log_retention_bytes: i64,
    /// How often retention, segment.ms rolls and the flush.ms flusher run. Default 1000 ms.
    pub log_housekeeping_interval_ms: i64,
    /// Default flush.messages: fsync once this many messages are unflushed, before the
    /// acknowledgement. 1 fsyncs every batch (safest, slowest). Default: never by count.
    pub log_flush_messages: i64,
    /// Default flush.ms: fsync at most this long after an append. Default 1000 ms: a power
    /// loss can lose up to one second of acknowledged data on a single broker.
    pub log_flush_ms: i64,
    /// Default index.interval.bytes: bytes between sparse index entries. Default 4096.
    pub log_index_interval_bytes: i64,
    /// Default max.message.bytes: the largest record batch accepted. Default 1048588.
    pub message_max_bytes: i64,
    /// Default message.timestamp.type: CreateTime or LogAppendTime. Default CreateTime.
    pub log_message_timestamp_type: String,
    /// Default min.insync.replicas. Default 1.
    pub min_insync_replicas: i32,
    /// Default local.retention.ms (tiered storage; -2 means retention.ms). Default -2.
    pub log_local_retention_ms: i64,
    /// Default local.retention.bytes (tiered storage; -2 means retention.bytes). Default -2.
    pub log_local_retention_bytes: i64,
    /// Default remote.storage.enable. Default false.
    pub remote_storage_enable: bool,
    /// How long shutdown waits for in-flight requests before closing. Default 30000 ms.
    pub shutdown_timeout_ms: i64,
    /// An idempotent producer's state (epoch, last sequences) is forgotten this long
    /// after its last append to a partition. Default 86400000 ms (1 day), as Kafka's
    /// producer.id.expiration.ms. Memory per partition grows with producers seen in it.
    pub producer_id_expiration_ms: i64,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (Kafka's group.initial.rebalance.delay.ms). Default 3000 ms: consumers starting
    /// together get one rebalance instead of one each, at the cost of 3 s before the
    /// first assignment.
    pub group_initial_rebalance_delay_ms: i64,
    /// Smallest session timeout a member may ask for. Default 6000 ms.
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for. Default 1800000 ms (30 minutes). A
    /// dead member holds its partitions up to this long.
    pub group_max_session_timeout_ms: i32,
    /// Partitions of the internal `__consumer_offsets` topic, fixed when it is created
    /// (on first group use). Default 50, as Kafka. Groups spread over them; each costs a
    /// log directory, 3 open files and a replay at start-up.
    pub offsets_topic_partitions: i32,
    /// segment.bytes of `__consumer_offsets`. Default 104857600 (100 MiB). Smaller
    /// segments are compacted sooner (the active segment never is) and load faster.
    pub offsets_topic_segment_bytes: i64,
    /// Partitions of the internal `__transaction_state` topic, fixed when it is created
    /// (on the first transactional producer). Default 50, as Kafka. Transactional ids
    /// spread over them; each costs a log directory, 3 open files and a replay when its
    /// leadership moves. Its segment size is `offsets_topic_segment_bytes`.
    pub transaction_state_partitions: i32,
    /// Longest transaction.timeout.ms a transactional producer may ask for (Kafka's
    /// transaction.max.timeout.ms). Default 900000 ms (15 minutes). An open transaction
    /// holds back read_committed consumers of its partitions until it ends or times out.
    pub transaction_max_timeout_ms: i64,
    /// Kafka's finalized `transaction.version` feature: 2 tells clients that support it
    /// (Kafka 4 Java clients) to use KIP-890 part 2: the coordinator bumps the producer
    /// epoch at every EndTxn (v5), and a partition leader (Produce v12) or the group
    /// coordinator (TxnOffsetCommit v5) adds the partition to the transaction itself.
    /// Default 1: the first protocol, which every client speaks.
    pub transaction_version: i16,
    /// A transactional id with no transaction is forgotten this long after its last use
    /// (Kafka's transactional.id.expiration.ms). Default 604800000 ms (7 days); memory
    /// on the coordinator grows with the ids used within this window.
    pub transactional_id_expiration_ms: i64,
    /// How often the transaction coordinator aborts timed-out transactions, retries
    /// markers and expires ids. Default 1000 ms: a transaction is aborted at most this
    /// long after its timeout. Each round scans the coordinator's ids in memory.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: i64,
    /// Committed offsets of a group that has been empty this long are deleted (Kafka's
    /// offsets.retention.minutes). Default 604800000 ms (7 days).
    pub offsets_retention_ms: i64,
    /// How often offset expiry runs. Default 600000 ms (10 minutes).
    pub offsets_retention_check_interval_ms: i64,
    /// Longest metadata string accepted with a committed offset, in bytes; at most 32767
    /// (an offset record's string length is an i16). Default 4096 bytes: each committed
    /// offset keeps up to this much in memory and in the offsets topic.
    pub offset_metadata_max_bytes: i64,
    /// How often the log cleaner looks for compacted partitions due for a pass (Kafka's
    /// log.cleaner.backoff.ms). Default 15000 ms. One partition is cleaned at a time, on
    /// a blocking thread: a pass reads the partition's cleanable segments and rewrites the
    /// ones it changes, so its disk I/O is up to twice the partition's sealed bytes.
    pub log_cleaner_interval_ms: i64,
    /// Memory for the cleaner's key map (Kafka's log.cleaner.dedupe.buffer.size). Default
    /// 134217728 (128 MiB), about 2.8 million distinct keys per pass; a partition with
    /// more keys in its dirty part is cleaned over several passes.
    pub log_cleaner_dedupe_buffer_bytes: i64,
    /// This broker's rack (availability zone). Replicas of a partition are placed in as
    /// many racks as there are. Default: empty (no rack).
    pub rack: String,
    /// gRPC listener for replication between brokers. Default 127.0.0.1:9093.
    pub replication_listen: String,
    /// Address other brokers use to reach `replication_listen`. Default: empty, meaning
    /// `replication_listen`.
    pub replication_advertise: String,
    /// gRPC listener of the admin API (`proto/strata/admin.proto`, the `strata status`,
    /// `topics`, `tiering`, `cache`, `drain` commands). Default 127.0.0.1:9094.
    pub admin_listen: String,
    /// Address the admin CLI uses to reach this broker when it asks every broker (tiering,
    /// cache). Default: empty, meaning `admin_listen`.
    pub admin_advertise: String,
    /// The broker's etcd lease: a broker that cannot renew it for this long (dead, or cut
    /// off from etcd) is taken out of the cluster and its partitions move to other
    /// replicas. Default 6000 ms (rounded up to whole seconds, at least 2 s). Shorter
    /// fails over faster; too short and a GC-free but busy or briefly partitioned broker
    /// is taken out needlessly.
    pub broker_session_timeout_ms: i64,
    /// How often a broker probes its peers' replication listeners (the controller every
    /// broker, every broker the controller). A broker that accepted and then refuses two
    /// probes in a row has crashed: its session is ended at once instead of at its
    /// expiry, so failover after a crash takes about two of these rather than
    /// `broker_session_timeout_ms`. Default 100 ms; 0 disables (crashes are then noticed
    /// at the session's expiry). Costs one TCP connection per probed peer per interval.
    pub broker_probe_interval_ms: i64,
    /// How often brokers do their periodic metadata work: the controller reconciles,
    /// leaders propose ISR changes. Changes in etcd arrive through a watch at once; only
    /// without one (etcd out of reach, or the watch failed) is this also how often the
    /// store's revision is polled. Default 500 ms.
    pub metadata_refresh_interval_ms: i64,
    /// A follower that has not caught up with the leader's log end for this long leaves
    /// the ISR (Kafka's replica.lag.time.max.ms). Default 30000 ms. acks=all waits for the
    /// ISR, so a stuck follower delays acks=all produce at most this long.
    pub replica_lag_time_max_ms: i64,
    /// How long a follower's fetch waits at the leader for new data. Default 500 ms.
    pub replica_fetch_wait_max_ms: i64,
    /// Bound on one replication fetch response. Default 10485760 (10 MiB).
    pub replica_fetch_max_bytes: i64,
    /// Bytes per second this broker, as a leader, sends to replicas that a reassignment
    /// is adding and that are not in the ISR yet (Kafka's
    /// leader.replication.throttled.rate; dynamic). In-sync followers are never
    /// throttled. Default unlimited (i64::MAX). A low rate keeps a rebalance from taking
    /// the disk and network that producers and consumers need, and makes it last longer.
    pub leader_replication_throttled_rate: i64,
    /// Bytes per second this broker, as a replica being added that is not in the ISR
    /// yet, fetches (Kafka's follower.replication.throttled.rate; dynamic). Default
    /// unlimited (i64::MAX).
    pub follower_replication_throttled_rate: i64,
    /// Replication factor of `__consumer_offsets`, capped at the live brokers when it is
    /// created. Default 3.
    pub offsets_topic_replication_factor: i16,
    /// Elect a replica outside the ISR when no in-sync replica is alive: the partition
    /// comes back sooner but loses what only the dead replicas held. Default false.
    pub unclean_leader_election_enable: bool,
    /// How often the controller moves leadership back to preferred replicas (the first
    /// of each partition's replica list) that are in sync. Default 30000 ms; 0 disables.
    pub leader_rebalance_interval_ms: i64,
    /// Client connections open at once on the Kafka listener (Kafka's max.connections).
    /// Default 10000, and never more than half the open-files limit: the other half is
    /// kept for segments (three files each) and the broker's own clients, so connections
    /// alone cannot take every descriptor. A connection over the limit is accepted and
    /// closed at once. Each idle connection costs a descriptor and a few KiB.
    pub max_connections: i64,
    /// Connections open at once from one IP address (Kafka's max.connections.per.ip).
    /// Default 1000, so one host cannot take every connection. Clients behind one NAT
    /// address share it: raise it, or name the address in the overrides.
    pub max_connections_per_ip: i64,
    /// Per-address exceptions to `max_connections_per_ip`, Kafka's syntax
    /// `IP:COUNT,IP:COUNT` (IP addresses only; IPv6 without brackets). Default: empty.
    pub max_connections_per_ip_overrides: String,
    /// A connection with no request in flight and none arriving for this long is closed
    /// (Kafka's connections.max.idle.ms). Default 600000 ms (10 minutes). The same bound
    /// applies to a response the client does not read. Shorter frees descriptors of
    /// abandoned connections sooner; clients reconnect transparently.
    pub connections_max_idle_ms: i64,
    /// Once the first byte of a request has arrived, the whole request must arrive within
    /// this long or the connection is closed (a client trickling bytes holds a task and a
    /// buffer). Default 30000 ms. Too short cuts off large requests over slow links.
    pub request_read_timeout_ms: i64,
    /// Bytes of requests being read or handled across all connections (Kafka's
    /// queued.max.request.bytes). Default 536870912 (512 MiB); must be at least
    /// `max_request_bytes`. Over it, connections wait before reading their next request
    /// (backpressure: nothing fails; a wait past `request_read_timeout_ms` closes the
    /// connection). Responses are not counted, so a slow reader holds back only itself;
    /// one connection holds at most one request and one response at a time.
    pub queued_max_request_bytes: i64,
    /// The smallest `segment.bytes` a client may give a topic (CreateTopics, AlterConfigs);
    /// smaller values are refused with INVALID_CONFIG, and topics stored with a smaller
    /// value roll at this size. Default 1048576 (1 MiB, Kafka's floor for dynamic
    /// `log.segment.bytes`). Every segment is three files on disk and an upload; a tiny
    /// floor lets one client create millions of them.
    pub log_segment_bytes_min: i64,
    /// The smallest `segment.ms` a client may give a topic; smaller values are refused with
    /// INVALID_CONFIG and stored smaller values act as this. Default 60000 (1 minute).
    /// Lower floors let an idle topic roll a segment (three files, one upload) that often.
    pub log_segment_ms_min: i64,
    /// Sealed-segment files (`.log`, `.index`, `.timeindex`) open at once; reads of older
    /// segments open them through an LRU cache of this size. Default 0: a quarter of the
    /// storage share of the open-files limit (see docs/operations.md), at most 10000.
    /// Larger keeps more history reads free of an open(2); each entry is one descriptor.
    pub log_max_open_segment_files: i64,
    /// A partition's active segment not appended to for this long, with everything in it
    /// fsynced, closes its three files; its next append opens them again (three open(2)
    /// calls, tens of microseconds). Default 30000 (30 s). Descriptors then follow the
    /// partitions written in the last interval rather than all partitions; lower frees
    /// them sooner, at the cost of reopening files of partitions written less often.
    pub log_release_idle_files_ms: i64,
    /// Partitions in the whole cluster (counted in the metadata store, internal topics
    /// included); CreateTopics, CreatePartitions and auto-creation past it are refused with
    /// POLICY_VIOLATION. Default 0: what this broker's storage share of the open-files
    /// limit can hold open (three descriptors per partition's active segment). Each
    /// partition costs three descriptors, memory and a metadata entry on its replicas.
    pub max_partitions: i64,
    /// Partitions one CreateTopics or CreatePartitions request may add, over all its
    /// topics; the topics past it are refused with POLICY_VIOLATION. Default 1000. Bounds
    /// the logs (and descriptors) one request opens.
    pub max_partitions_per_request: i64,
    /// Topics one Metadata request may auto-create; the other unknown topics it names
    /// are answered UNKNOWN_TOPIC_OR_PARTITION (clients retry and create them in later
    /// requests). Default 10. Bounds what one request of a few bytes can create.
    pub auto_create_topics_per_request: i64,

    // Security (docs/security.md). With none of these set the broker has one PLAINTEXT
    // listener, no authentication and no authorization, as before they existed.
    /// Kafka listeners, Kafka's syntax: `NAME://HOST:PORT,...`, each name a security
    /// protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or one that
    /// `listener_security_protocol_map` maps. Default: empty, meaning one PLAINTEXT
    /// listener on `listen`, advertised as `advertise`. When set, `listen` and `advertise`
    /// are ignored.
    pub listeners: String,
    /// The address each listener's clients are told to connect to, `NAME://HOST:PORT,...`.
    /// Default: empty, meaning each listener's own address (which must then be a
    /// connectable one, not 0.0.0.0).
    pub advertised_listeners: String,
    /// Custom listener names and their protocols, `NAME:PROTOCOL,...` (for example
    /// `CLIENT:SASL_SSL,OPS:SSL`). Default: empty (the four protocol names map to
    /// themselves).
    pub listener_security_protocol_map: String,
    /// PEM certificate chain (leaf first) of the SSL and SASL_SSL listeners. Reloaded
    /// when the file changes (checked every second), so cert-manager rotations need no
    /// restart. Default: empty (required when a listener uses TLS).
    pub ssl_cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `ssl_cert_file`. Default: empty.
    pub ssl_key_file: String,
    /// PEM CA certificates that client certificates must chain to. Default: empty
    /// (required when `ssl_client_auth` is not `none`).
    pub ssl_ca_file: String,
    /// `none`, `requested` (a certificate is verified if sent) or `required` (mutual
    /// TLS). Default `none`. A client certificate gives the connection its principal on
    /// SSL listeners.
    pub ssl_client_auth: String,
    /// How a client certificate's subject becomes a principal name, Kafka's
    /// ssl.principal.mapping.rules syntax (`RULE:pattern/replacement/[LU],...,DEFAULT`).
    /// Default `DEFAULT` (the subject DN as RFC 2253 prints it).
    pub ssl_principal_mapping_rules: String,
    /// SASL mechanisms of the SASL listeners, from SCRAM-SHA-256, SCRAM-SHA-512, PLAIN and
    /// OAUTHBEARER. Default `SCRAM-SHA-256,SCRAM-SHA-512`. PLAIN sends the password
    /// itself: use it over SASL_SSL only.
    pub sasl_enabled_mechanisms: String,
    /// A file of `NAME:MECHANISM:PASSWORD` lines (a mounted Secret): each user's SCRAM
    /// credential is created or replaced in the metadata store at start. Default: empty.
    /// The passwords are never stored or logged, only salted SCRAM keys.
    pub sasl_bootstrap_users_file: String,
    /// JWKS of the OAUTHBEARER token issuer: `https://...`, `http://...` or `file:///...`.
    /// Default: empty (required with OAUTHBEARER). Fetched at start and refreshed hourly
    /// (and when a token names an unknown key id, at most once a minute).
    pub sasl_oauthbearer_jwks_url: String,
    /// The `iss` a token must carry. Default: empty (not checked).
    pub sasl_oauthbearer_expected_issuer: String,
    /// An `aud` a token must carry. Default: empty (not checked).
    pub sasl_oauthbearer_expected_audience: String,
    /// The claim that names the principal. Default `sub`.
    pub sasl_oauthbearer_sub_claim_name: String,
    /// A SASL connection must re-authenticate within this long or be closed (KIP-368;
    /// Kafka's connections.max.reauth.ms). Default 0: sessions do not expire. A token's
    /// own expiry shortens the session further.
    pub connections_max_reauth_ms: i64,
    /// `none` (every request allowed) or `acl` (Kafka's ACLs, stored in the metadata
    /// store). Default `none`.
    pub authorizer: String,
    /// Principals the ACL authorizer always allows, Kafka's `User:a;User:b` syntax.
    /// Default: empty.
    pub super_users: String,
    /// With the ACL authorizer, allow a request on a resource no ACL names. Default false.
    pub allow_everyone_if_no_acl_found: bool,
    /// A file of ACL lines created at start when missing (a ConfigMap):
    /// `PRINCIPAL,ALLOW|DENY,OPERATION,RESOURCE_TYPE,PATTERN_TYPE,NAME[,HOST]`. Default:
    /// empty. ACLs are never removed by it; DeleteAcls removes them.
    pub acl_bootstrap_file: String,
    /// A file holding the admin API's bearer token (a mounted Secret). When set, every
    /// admin call must carry `authorization: Bearer <token>` or a client certificate whose
    /// principal has ALTER (changes) or DESCRIBE (reads) on the cluster. Default: empty.
    pub admin_token_file: String,
    /// CA (PEM) that etcd's server certificate must chain to; setting it (or a client
    /// certificate) makes the broker connect to etcd over TLS. Default: empty.
    pub etcd_ca_file: String,
    /// Client certificate and key (PEM) for etcd's client certificate authentication.
    /// Default: empty.
    pub etcd_cert_file: String,
    pub etcd_key_file: String,
    /// etcd user name and password (etcd's own authentication). The password is
    /// sensitive: pass it as STRATA_ETCD_PASSWORD from a Secret. Default: empty.
    pub etcd_username: String,
    pub etcd_password: String,
    /// CA (PEM) the object store's certificate must chain to, for a private MinIO with
    /// its own CA. Default: empty (the system's roots).
    pub object_store_ca_file: String,
}

impl Config {
    /// Settings that hold a secret: never logged, printed or described (Debug shows them
    /// as `[hidden]`; a DescribeConfigs of broker settings must report them as null with
    /// is_sensitive, as Kafka does).
    pub const SENSITIVE: &'static [&'static str] = &["s3_secret_access_key", "etcd_password"];
}

/// Every setting, with the sensitive ones hidden: a Config may end up in a log line or a
/// panic message.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut table = toml::Table::try_from(self).map_err(|_| std::fmt::Error)?;
        for name in Config::SENSITIVE {
            if let Some(value) = table.get_mut(*name)
                && value.as_str().is_some_and(|s| !s.is_empty())
            {
                *value = toml::Value::String("[hidden]".into());
            }
        }
        f.debug_map().entries(table.iter()).finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            listen: "127.0.0.1:9092".into(),
            advertise: String::new(),
            data_dir: PathBuf::from("./data"),
            http: "127.0.0.1:9644".into(),
            metadata: "embedded".into(),
            object_store: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: false,
            s3_allow_http: false,
            remote_upload_interval_ms: 1000,
            remote_upload_concurrency: 4,
            remote_upload_part_bytes: 16 << 20,
            remote_upload_stall_warn_ms: 300_000,
            diskless_append_interval_ms: 250,
            diskless_append_bytes: 8 << 20,
            diskless_append_queue_bytes: 32 << 20,
            diskless_max_pending_runs: 2000,
            diskless_write_cache_bytes: 128 << 20,
            cost_price_table: String::new(),
            remote_manifest_tail_entries: 100,
            remote_manifest_fanout: 16,
            remote_chunk_bytes: 4 << 20,
            remote_read_ahead_chunks: 4,
            remote_read_rate_bytes: 0,
            remote_read_ahead_concurrency: 8,
            remote_read_threads: 2,
            remote_read_backoff_lag_ms: 0,
            remote_cache_memory_bytes: 256 << 20,
            remote_cache_disk_bytes: 1 << 30,
            remote_cache_dir: String::new(),
            remote_scrub_interval_ms: 3_600_000,
            remote_scrub_grace_ms: 3_600_000,
            diskless_merge_interval_ms: 10_000,
            diskless_merge_bytes: 64 << 20,
            diskless_merge_max_age_ms: 60_000,
            diskless_scrub_grace_ms: 600_000,
            testing_short_scrub_grace: false,
            disk_high_watermark_percent: 95,
            fault_injection: String::new(),
            num_partitions: 1,
            auto_create_topics: true,
            default_replication_factor: 1,
            max_request_bytes: 100 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            log_filter: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: String::new(),
            otlp_sample_ratio: 0.01,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_housekeeping_interval_ms: 1000,
            log_flush_messages: i64::MAX,
            log_flush_ms: 1000,
            log_index_interval_bytes: 4096,
            message_max_bytes: 1_048_588,
            log_message_timestamp_type: "CreateTime".into(),
            min_insync_replicas: 1,
            log_local_retention_ms: -2,
            log_local_retention_bytes: -2,
            remote_storage_enable: false,
            shutdown_timeout_ms: 30_000,
            producer_id_expiration_ms: 86_400_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_topic_partitions: 50,
            offsets_topic_segment_bytes: 100 << 20,
            transaction_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transaction_version: 1,
            transactional_id_expiration_ms: 604_800_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 1_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            log_cleaner_interval_ms: 15_000,
            log_cleaner_dedupe_buffer_bytes: 128 << 20,
            rack: String::new(),
            replication_listen: "127.0.0.1:9093".into(),
            replication_advertise: String::new(),
            admin_listen: "127.0.0.1:9094".into(),
            admin_advertise: String::new(),
            broker_session_timeout_ms: 6000,
            broker_probe_interval_ms: 100,
            metadata_refresh_interval_ms: 500,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 10 << 20,
            leader_replication_throttled_rate: i64::MAX,
            follower_replication_throttled_rate: i64::MAX,
            offsets_topic_replication_factor: 3,
            unclean_leader_election_enable: false,
            leader_rebalance_interval_ms: 30_000,
            max_connections: 10_000,
            max_connections_per_ip: 1000,
            max_connections_per_ip_overrides: String::new(),
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            queued_max_request_bytes: 512 << 20,
            log_segment_bytes_min: 1 << 20,
            log_segment_ms_min: 60_000,
            log_max_open_segment_files: 0,
            log_release_idle_files_ms: 30_000,
            max_partitions: 0,
            max_partitions_per_request: 1000,
            auto_create_topics_per_request: 10,
            listeners: String::new(),
            advertised_listeners: String::new(),
            listener_security_protocol_map: String::new(),
            ssl_cert_file: String::new(),
            ssl_key_file: String::new(),
            ssl_ca_file: String::new(),
            ssl_client_auth: "none".into(),
            ssl_principal_mapping_rules: "DEFAULT".into(),
            sasl_enabled_mechanisms: "SCRAM-SHA-256,SCRAM-SHA-512".into(),
            sasl_bootstrap_users_file: String::new(),
            sasl_oauthbearer_jwks_url: String::new(),
            sasl_oauthbearer_expected_issuer: String::new(),
            sasl_oauthbearer_expected_audience: String::new(),
            sasl_oauthbearer_sub_claim_name: "sub".into(),
            connections_max_reauth_ms: 0,
            authorizer: "none".into(),
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            acl_bootstrap_file: String::new(),
            admin_token_file: String::new(),
            etcd_ca_file: String::new(),
            etcd_cert_file: String::new(),
            etcd_key_file: String::new(),
            etcd_username: String::new(),
            etcd_password: String::new(),
            object_store_ca_file: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{setting}`: {message}")]
    Invalid { setting: String, message: String },
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// An error naming `setting` unless `value >= min`.
fn at_least(setting: &str, value: i64, min: i64) -> Result<(), ConfigError> {
    if value < min {
        Err(invalid(setting, format!("must be >= {min}")))
    } else {
        Ok(())
    }
}

/// One entry of the `fault_injection` setting (testing only).
enum Fault {
    CrashAfterUpload(u64),
    PanicTask(String, u32),
}

/// Where cluster metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataUrl {
    /// The embedded store's directory.
    Embedded(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// The least `remote_scrub_grace_ms` accepted without `testing_short_scrub_grace`.
pub const MIN_REMOTE_SCRUB_GRACE_MS: i64 = 60_000;
/// The least `diskless_scrub_grace_ms` accepted without `testing_short_scrub_grace`: the
/// appender gives a commit up after half of it since the PUT.
pub const MIN_DISKLESS_SCRUB_GRACE_MS: i64 = 300_000;

/// Where tiered data goes.
pub use strata_tiering::Location as ObjectStoreUrl;

impl Config {
    /// Builds the configuration from a file (optional), the environment and flag overrides
    /// (`flags` maps setting names to values as strings), then validates it. The topic
    /// defaults are not checked here: a loader that serves must also call
    /// `topic_config::check_defaults` (as `strata serve` does).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl Iterator<Item = (String, String)>,
        flags: &BTreeMap<&str, String>,
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| invalid("(defaults)", e.to_string()))?;
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let env: BTreeMap<String, String> = env.collect();
        for (name, default) in &defaults {
            let var = format!("STRATA_{}", name.to_uppercase());
            if let Some(raw) = env.get(&var) {
                table.insert(name.clone(), typed_value(&var, raw, default)?);
            }
        }
        for (name, raw) in flags {
            let default = defaults
                .get(*name)
                .ok_or_else(|| invalid(name, "unknown setting"))?;
            table.insert(
                name.to_string(),
                typed_value(&format!("--{}", name.replace('_', "-")), raw, default)?,
            );
        }
        for key in table.keys() {
            if !defaults.contains_key(key) {
                return Err(invalid(key, "unknown setting"));
            }
        }
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            // The error ends with "in `<key>`" when toml knows which setting failed.
            let text = e.to_string();
            let setting = text
                .rsplit_once("in `")
                .and_then(|(_, rest)| rest.split('`').next());
            invalid(setting.unwrap_or("(config file)"), e.message())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the error names the first bad one. The checks run in a fixed
    /// order, so a configuration with several bad settings always reports the same one.
    /// `cost_price_table`, read and checked.
    pub fn cost_prices(&self) -> Result<crate::cost::PriceTable, ConfigError> {
        crate::cost::PriceTable::from_setting(&self.cost_price_table)
            .map_err(|message| invalid("cost_price_table", &message))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_addresses()?;
        self.check_node_and_topic_defaults()?;
        self.check_request_sizes()?;
        self.check_advertised_address()?;
        self.check_telemetry()?;
        if self.log_housekeeping_interval_ms < 10 {
            return Err(invalid("log_housekeeping_interval_ms", "must be >= 10"));
        }
        self.check_tiering()?;
        self.cost_prices()?;
        if !(1..=100).contains(&self.disk_high_watermark_percent) {
            return Err(invalid(
                "disk_high_watermark_percent",
                "must be between 1 and 100",
            ));
        }
        self.faults()?;
        self.check_producers_and_groups()?;
        at_least("log_cleaner_interval_ms", self.log_cleaner_interval_ms, 10)?;
        at_least(
            "log_cleaner_dedupe_buffer_bytes",
            self.log_cleaner_dedupe_buffer_bytes,
            1 << 20,
        )?;
        if self.shutdown_timeout_ms < 0 {
            return Err(invalid("shutdown_timeout_ms", "must be >= 0"));
        }
        self.check_cluster()?;
        self.check_connections()?;
        self.check_log_and_partition_limits()?;
        self.check_security()?;
        // The topic defaults are checked with the rules of topic configs by
        // `topic_config::check_defaults`, which the binary calls after this (that module
        // builds on this one).
        Ok(())
    }

    /// The listeners, the advertised address and the metadata and object store URLs.
    fn check_addresses(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !self.advertise.is_empty() {
            parse_host_port("advertise", &self.advertise)?;
        }
        self.http_addr()?;
        self.metadata_url()?;
        self.object_store_url()?;
        Ok(())
    }

    /// This broker's id and the defaults of topics created without settings.
    fn check_node_and_topic_defaults(&self) -> Result<(), ConfigError> {
        if self.node_id < 0 {
            return Err(invalid("node_id", "must be >= 0"));
        }
        if self.num_partitions < 1 {
            return Err(invalid("num_partitions", "must be >= 1"));
        }
        if self.default_replication_factor < 1 {
            return Err(invalid("default_replication_factor", "must be >= 1"));
        }
        Ok(())
    }

    /// The largest request the broker reads and the largest fetch response it builds.
    fn check_request_sizes(&self) -> Result<(), ConfigError> {
        if !(1024..=i32::MAX as i64).contains(&self.max_request_bytes) {
            return Err(invalid(
                "max_request_bytes",
                "must be between 1024 and 2147483647",
            ));
        }
        if !(1024..=i32::MAX as i64).contains(&self.fetch_max_bytes) {
            return Err(invalid(
                "fetch_max_bytes",
                "must be between 1024 and 2147483647",
            ));
        }
        Ok(())
    }

    /// Clients must be told an address they can connect to.
    fn check_advertised_address(&self) -> Result<(), ConfigError> {
        if self.listeners.trim().is_empty()
            && self.advertise.is_empty()
            && self.listen_addr()?.ip().is_unspecified()
        {
            return Err(invalid(
                "advertise",
                format!(
                    "must be set when listen is {}: clients cannot connect to an unspecified address",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// Logs and trace export.
    fn check_telemetry(&self) -> Result<(), ConfigError> {
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(invalid("log_format", "must be `text` or `json`"));
        }
        if !self.otlp_endpoint.is_empty()
            && (!self.otlp_endpoint.starts_with("http://")
                || parse_host_port("otlp_endpoint", &self.otlp_endpoint["http://".len()..])
                    .is_err())
        {
            return Err(invalid(
                "otlp_endpoint",
                format!("`{}` is not http://HOST:PORT", self.otlp_endpoint),
            ));
        }
        if !(0.0..=1.0).contains(&self.otlp_sample_ratio) {
            return Err(invalid("otlp_sample_ratio", "must be between 0.0 and 1.0"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err() {
            return Err(invalid("log_filter", "is not a valid RUST_LOG filter"));
        }
        Ok(())
    }

    /// Uploads, the remote manifest, remote reads and their cache, and the scrubber.
    fn check_tiering(&self) -> Result<(), ConfigError> {
        at_least(
            "diskless_append_interval_ms",
            self.diskless_append_interval_ms,
            1,
        )?;
        at_least("diskless_append_bytes", self.diskless_append_bytes, 1024)?;
        at_least(
            "diskless_append_queue_bytes",
            self.diskless_append_queue_bytes,
            self.diskless_append_bytes,
        )?;
        at_least(
            "diskless_max_pending_runs",
            self.diskless_max_pending_runs,
            1,
        )?;
        at_least(
            "diskless_write_cache_bytes",
            self.diskless_write_cache_bytes,
            0,
        )?;
        at_least(
            "remote_upload_interval_ms",
            self.remote_upload_interval_ms,
            10,
        )?;
        at_least(
            "remote_upload_concurrency",
            self.remote_upload_concurrency,
            1,
        )?;
        at_least(
            "remote_upload_part_bytes",
            self.remote_upload_part_bytes,
            5 << 20,
        )?;
        at_least(
            "remote_upload_stall_warn_ms",
            self.remote_upload_stall_warn_ms,
            1,
        )?;
        at_least(
            "remote_manifest_tail_entries",
            self.remote_manifest_tail_entries,
            2,
        )?;
        at_least("remote_manifest_fanout", self.remote_manifest_fanout, 2)?;
        at_least("remote_chunk_bytes", self.remote_chunk_bytes, 64 << 10)?;
        if self.remote_chunk_bytes > 256 << 20 {
            return Err(invalid("remote_chunk_bytes", "must be <= 268435456"));
        }
        at_least("remote_read_ahead_chunks", self.remote_read_ahead_chunks, 0)?;
        // The window is capped at an eighth of the memory tier anyway; this keeps
        // chunks × chunk size far from overflowing.
        if self.remote_read_ahead_chunks > 1024 {
            return Err(invalid("remote_read_ahead_chunks", "must be <= 1024"));
        }
        at_least("remote_read_rate_bytes", self.remote_read_rate_bytes, 0)?;
        at_least(
            "remote_read_ahead_concurrency",
            self.remote_read_ahead_concurrency,
            1,
        )?;
        if self.remote_read_ahead_concurrency > 1024 {
            return Err(invalid("remote_read_ahead_concurrency", "must be <= 1024"));
        }
        at_least("remote_read_threads", self.remote_read_threads, 1)?;
        at_least(
            "remote_read_backoff_lag_ms",
            self.remote_read_backoff_lag_ms,
            0,
        )?;
        if self.remote_read_threads > 64 {
            return Err(invalid("remote_read_threads", "must be <= 64"));
        }
        at_least(
            "remote_cache_memory_bytes",
            self.remote_cache_memory_bytes,
            1 << 20,
        )?;
        at_least("remote_cache_disk_bytes", self.remote_cache_disk_bytes, 0)?;
        at_least(
            "remote_scrub_interval_ms",
            self.remote_scrub_interval_ms,
            100,
        )?;
        // The scrubbers' safety rests on every upload (append) committing within the grace
        // period: a short one is for tests only.
        let (remote_floor, diskless_floor) = if self.testing_short_scrub_grace {
            (0, 0)
        } else {
            (MIN_REMOTE_SCRUB_GRACE_MS, MIN_DISKLESS_SCRUB_GRACE_MS)
        };
        at_least(
            "remote_scrub_grace_ms",
            self.remote_scrub_grace_ms,
            remote_floor,
        )?;
        at_least(
            "diskless_merge_interval_ms",
            self.diskless_merge_interval_ms,
            100,
        )?;
        at_least("diskless_merge_bytes", self.diskless_merge_bytes, 1024)?;
        if self.diskless_merge_bytes > i64::from(i32::MAX) {
            return Err(invalid("diskless_merge_bytes", "must be < 2 GiB"));
        }
        at_least(
            "diskless_merge_max_age_ms",
            self.diskless_merge_max_age_ms,
            0,
        )?;
        at_least(
            "diskless_scrub_grace_ms",
            self.diskless_scrub_grace_ms,
            diskless_floor,
        )?;
        Ok(())
    }

    /// Producer id expiry, the group coordinator and its offsets topic.
    fn check_producers_and_groups(&self) -> Result<(), ConfigError> {
        at_least(
            "producer_id_expiration_ms",
            self.producer_id_expiration_ms,
            1,
        )?;
        at_least(
            "group_initial_rebalance_delay_ms",
            self.group_initial_rebalance_delay_ms,
            0,
        )?;
        at_least(
            "group_min_session_timeout_ms",
            i64::from(self.group_min_session_timeout_ms),
            1,
        )?;
        if self.group_max_session_timeout_ms < self.group_min_session_timeout_ms {
            return Err(invalid(
                "group_max_session_timeout_ms",
                "must be >= group_min_session_timeout_ms",
            ));
        }
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return Err(invalid(
                "offsets_topic_partitions",
                "must be between 1 and 1000",
            ));
        }
        at_least(
            "offsets_topic_segment_bytes",
            self.offsets_topic_segment_bytes,
            1 << 20,
        )?;
        if !(1..=1000).contains(&self.transaction_state_partitions) {
            return Err(invalid(
                "transaction_state_partitions",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=2).contains(&self.transaction_version) {
            return Err(invalid("transaction_version", "must be 1 or 2"));
        }
        if !(1..=i64::from(i32::MAX)).contains(&self.transaction_max_timeout_ms) {
            return Err(invalid(
                "transaction_max_timeout_ms",
                "must be between 1 and 2147483647",
            ));
        }
        at_least(
            "transactional_id_expiration_ms",
            self.transactional_id_expiration_ms,
            1,
        )?;
        at_least(
            "transaction_abort_timed_out_transaction_cleanup_interval_ms",
            self.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            10,
        )?;
        at_least("offsets_retention_ms", self.offsets_retention_ms, 1)?;
        at_least(
            "offsets_retention_check_interval_ms",
            self.offsets_retention_check_interval_ms,
            1,
        )?;
        // A committed offset's metadata is an i16-length string in the offsets topic
        // (group::format::MAX_STRING_BYTES): a longer one could only be stored cut.
        let most = i64::from(i16::MAX);
        if !(0..=most).contains(&self.offset_metadata_max_bytes) {
            return Err(invalid(
                "offset_metadata_max_bytes",
                format!("must be between 0 and {most} (the longest string an offset record holds)"),
            ));
        }
        Ok(())
    }

    /// The replication and admin listeners, broker sessions, replica fetching and
    /// leader placement.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        self.replication_addr()?;
        if !self.replication_advertise.is_empty() {
            parse_host_port("replication_advertise", &self.replication_advertise)?;
        }
        self.admin_addr()?;
        if !self.admin_advertise.is_empty() {
            parse_host_port("admin_advertise", &self.admin_advertise)?;
        }
        at_least(
            "broker_session_timeout_ms",
            self.broker_session_timeout_ms,
            1000,
        )?;
        if self.broker_probe_interval_ms != 0 {
            at_least(
                "broker_probe_interval_ms",
                self.broker_probe_interval_ms,
                10,
            )?;
        }
        at_least(
            "metadata_refresh_interval_ms",
            self.metadata_refresh_interval_ms,
            10,
        )?;
        at_least("replica_lag_time_max_ms", self.replica_lag_time_max_ms, 100)?;
        at_least(
            "replica_fetch_wait_max_ms",
            self.replica_fetch_wait_max_ms,
            0,
        )?;
        at_least(
            "replica_fetch_max_bytes",
            self.replica_fetch_max_bytes,
            1024,
        )?;
        // A rate of 0 would stop a reassignment for good; 1 byte/s is the slowest.
        at_least(
            "leader_replication_throttled_rate",
            self.leader_replication_throttled_rate,
            1,
        )?;
        at_least(
            "follower_replication_throttled_rate",
            self.follower_replication_throttled_rate,
            1,
        )?;
        if self.offsets_topic_replication_factor < 1 {
            return Err(invalid("offsets_topic_replication_factor", "must be >= 1"));
        }
        at_least(
            "leader_rebalance_interval_ms",
            self.leader_rebalance_interval_ms,
            0,
        )?;
        Ok(())
    }

    /// Connection limits and timeouts, and the memory requests may queue.
    fn check_connections(&self) -> Result<(), ConfigError> {
        at_least("max_connections", self.max_connections, 1)?;
        at_least("max_connections_per_ip", self.max_connections_per_ip, 1)?;
        self.connection_overrides()?;
        at_least("connections_max_idle_ms", self.connections_max_idle_ms, 100)?;
        at_least("request_read_timeout_ms", self.request_read_timeout_ms, 100)?;
        if self.queued_max_request_bytes < self.max_request_bytes {
            return Err(invalid(
                "queued_max_request_bytes",
                format!(
                    "must be >= max_request_bytes ({}): a request of the largest size must fit",
                    self.max_request_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Segment rolling bounds, open segment files and partition limits.
    fn check_log_and_partition_limits(&self) -> Result<(), ConfigError> {
        at_least("log_segment_bytes_min", self.log_segment_bytes_min, 1)?;
        at_least("log_segment_ms_min", self.log_segment_ms_min, 1)?;
        if self.log_segment_bytes < self.log_segment_bytes_min {
            return Err(invalid(
                "log_segment_bytes",
                format!(
                    "must be >= log_segment_bytes_min ({})",
                    self.log_segment_bytes_min
                ),
            ));
        }
        if self.log_segment_ms < self.log_segment_ms_min {
            return Err(invalid(
                "log_segment_ms",
                format!(
                    "must be >= log_segment_ms_min ({})",
                    self.log_segment_ms_min
                ),
            ));
        }
        at_least(
            "log_max_open_segment_files",
            self.log_max_open_segment_files,
            0,
        )?;
        at_least(
            "log_release_idle_files_ms",
            self.log_release_idle_files_ms,
            0,
        )?;
        at_least("max_partitions", self.max_partitions, 0)?;
        at_least(
            "max_partitions_per_request",
            self.max_partitions_per_request,
            1,
        )?;
        at_least(
            "auto_create_topics_per_request",
            self.auto_create_topics_per_request,
            0,
        )?;
        Ok(())
    }

    /// `max_connections_per_ip_overrides` parsed: the limit of each named address.
    pub fn connection_overrides(&self) -> Result<HashMap<IpAddr, u64>, ConfigError> {
        let setting = "max_connections_per_ip_overrides";
        let mut overrides = HashMap::new();
        for entry in self
            .max_connections_per_ip_overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (host, count) = entry
                .rsplit_once(':')
                .ok_or_else(|| invalid(setting, format!("`{entry}` is not IP:COUNT")))?;
            let ip: IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| {
                invalid(
                    setting,
                    format!("`{host}` is not an IP address (host names are not resolved)"),
                )
            })?;
            let count: u64 = count
                .parse()
                .map_err(|_| invalid(setting, format!("`{count}` is not a count")))?;
            overrides.insert(ip, count);
        }
        Ok(overrides)
    }

    /// `log_max_open_segment_files`, or its default under `budget`.
    pub fn open_segment_files(&self, budget: &crate::sys::FdBudget) -> u64 {
        match self.log_max_open_segment_files {
            0 => budget.segment_files(),
            n => n as u64,
        }
    }

    /// `max_partitions`, or its default under `budget`.
    pub fn partition_limit(&self, budget: &crate::sys::FdBudget) -> u64 {
        match self.max_partitions {
            0 => budget.partitions(self.open_segment_files(budget)),
            n => n as u64,
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| invalid("listen", format!("`{}` is not IP:PORT", self.listen)))
    }

    pub fn replication_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.replication_listen.parse().map_err(|_| {
            invalid(
                "replication_listen",
                format!("`{}` is not IP:PORT", self.replication_listen),
            )
        })
    }

    /// The replication endpoint other brokers dial.
    pub fn admin_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.admin_listen.parse().map_err(|_| {
            invalid(
                "admin_listen",
                format!("`{}` is not IP:PORT", self.admin_listen),
            )
        })
    }

    pub fn admin_advertised(&self) -> String {
        if self.admin_advertise.is_empty() {
            self.admin_listen.clone()
        } else {
            self.admin_advertise.clone()
        }
    }

    pub fn replication_advertised(&self) -> String {
        if self.replication_advertise.is_empty() {
            self.replication_listen.clone()
        } else {
            self.replication_advertise.clone()
        }
    }

    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.http
            .parse()
            .map_err(|_| invalid("http", format!("`{}` is not IP:PORT", self.http)))
    }

    /// (host, port) advertised to clients.
    pub fn advertised(&self) -> Result<(String, i32), ConfigError> {
        if self.advertise.is_empty() {
            let addr = self.listen_addr()?;
            Ok((addr.ip().to_string(), i32::from(addr.port())))
        } else {
            parse_host_port("advertise", &self.advertise)
        }
    }

    /// The `fault_injection` setting's `crash_after_upload=N`, if present.
    pub fn crash_after_upload(&self) -> Result<Option<u64>, ConfigError> {
        let mut found = None;
        for fault in self.faults()? {
            if let Fault::CrashAfterUpload(n) = fault {
                found = Some(n);
            }
        }
        Ok(found)
    }

    /// The `fault_injection` setting's `panic_task=TASK:N` entries: (task, starts).
    pub fn panic_tasks(&self) -> Result<Vec<(String, u32)>, ConfigError> {
        Ok(self
            .faults()?
            .into_iter()
            .filter_map(|fault| match fault {
                Fault::PanicTask(task, starts) => Some((task, starts)),
                Fault::CrashAfterUpload(_) => None,
            })
            .collect())
    }

    fn faults(&self) -> Result<Vec<Fault>, ConfigError> {
        let unknown = || {
            invalid(
                "fault_injection",
                "faults are `crash_after_upload=N` and `panic_task=TASK:N`, separated by commas",
            )
        };
        let mut faults = Vec::new();
        for item in self.fault_injection.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            if let Some(n) = item.strip_prefix("crash_after_upload=") {
                faults.push(Fault::CrashAfterUpload(n.parse().map_err(|_| unknown())?));
            } else if let Some(spec) = item.strip_prefix("panic_task=") {
                let (task, starts) = spec.split_once(':').ok_or_else(unknown)?;
                if !crate::supervise::TASKS.contains(&task) {
                    return Err(invalid(
                        "fault_injection",
                        format!(
                            "`{task}` is not a background task; tasks are {}",
                            crate::supervise::TASKS.join(", ")
                        ),
                    ));
                }
                let starts = starts.parse().map_err(|_| unknown())?;
                faults.push(Fault::PanicTask(task.to_string(), starts));
            } else {
                return Err(unknown());
            }
        }
        Ok(faults)
    }

    pub fn remote_cache_dir(&self) -> PathBuf {
        if self.remote_cache_dir.is_empty() {
            self.data_dir.join("cache")
        } else {
            PathBuf::from(&self.remote_cache_dir)
        }
    }

    pub fn metadata_url(&self) -> Result<MetadataUrl, ConfigError> {
        if self.metadata == "embedded" {
            return Ok(MetadataUrl::Embedded(self.data_dir.clone()));
        }
        if let Some(path) = self.metadata.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "metadata",
                    "file:// URLs need an absolute path (file:///DIR)",
                ));
            }
            return Ok(MetadataUrl::Embedded(PathBuf::from(path)));
        }
        let rest = self.metadata.strip_prefix("etcd://").ok_or_else(|| {
            invalid(
                "metadata",
                format!(
                    "`{}` is neither `embedded`, `file:///DIR` nor `etcd://HOST:PORT[,...][/PREFIX]`",
                    self.metadata
                ),
            )
        })?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "strata"));
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            parse_host_port("metadata", host)?;
            endpoints.push(format!("http://{host}"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() { "strata" } else { prefix };
        Ok(MetadataUrl::Etcd {
            endpoints,
            prefix: prefix.to_string(),
        })
    }

    pub fn object_store_url(&self) -> Result<ObjectStoreUrl, ConfigError> {
        if self.object_store.is_empty() {
            return Ok(ObjectStoreUrl::Directory(self.data_dir.join("objects")));
        }
        if let Some(path) = self.object_store.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "object_store",
                    "file:// URLs need an absolute path (file:///DIR)",
                ));
            }
            return Ok(ObjectStoreUrl::Directory(PathBuf::from(path)));
        }
        if let Some(rest) = self.object_store.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("object_store", "s3:// URL has no bucket"));
            }
            return Ok(ObjectStoreUrl::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        Err(invalid(
            "object_store",
            format!(
                "`{}` is neither file:///DIR nor s3://BUCKET[/PREFIX]",
                self.object_store
            ),
        ))
    }
}

fn parse_host_port(setting: &str, value: &str) -> Result<(String, i32), ConfigError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| invalid(setting, format!("`{value}` is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(setting, format!("`{port}` is not a port")))?;
    if host.is_empty() {
        return Err(invalid(setting, format!("`{value}` has no host")));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

/// Parses an environment or flag value to the type of the setting's default.
pub(crate) fn typed_value(
    source: &str,
    raw: &str,
    default: &toml::Value,
) -> Result<toml::Value, ConfigError> {
    let value = match default {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| invalid(source, format!("`{raw}` is not an integer")))?,
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| invalid(source, format!("`{raw}` is not a number")))?,
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(invalid(source, format!("`{raw}` is not true or false"))),
        },
        _ => toml::Value::String(raw.to_string()),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&'static str, &str)],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("strata.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).expect("write config");
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let flags = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Config::load(file.map(|_| path.as_path()), env, &flags)
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = Some("num_partitions = 2\nnode_id = 5\nauto_create_topics = false\n");
        let config = load(
            file,
            &[("STRATA_NUM_PARTITIONS", "3"), ("STRATA_NODE_ID", "6")],
            &[("node_id", "7")],
        )
        .expect("valid");
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.node_id, 7);
        assert!(!config.auto_create_topics);
        assert_eq!(config.log_flush_ms, 1000);
    }

    #[test]
    fn scrub_grace_periods_have_floors_unless_testing() {
        for (setting, var, floor) in [
            (
                "diskless_scrub_grace_ms",
                "STRATA_DISKLESS_SCRUB_GRACE_MS",
                MIN_DISKLESS_SCRUB_GRACE_MS,
            ),
            (
                "remote_scrub_grace_ms",
                "STRATA_REMOTE_SCRUB_GRACE_MS",
                MIN_REMOTE_SCRUB_GRACE_MS,
            ),
        ] {
            for short in ["0".to_string(), (floor - 1).to_string()] {
                let err = load(None, &[(var, short.as_str())], &[]).expect_err("below the floor");
                assert!(err.to_string().contains(setting), "{err}");
                let config = load(
                    None,
                    &[
                        (var, short.as_str()),
                        ("STRATA_TESTING_SHORT_SCRUB_GRACE", "true"),
                    ],
                    &[],
                )
                .expect("a test may go below the floor");
                assert!(config.testing_short_scrub_grace);
            }
            load(None, &[(var, floor.to_string().as_str())], &[]).expect("the floor itself");
        }
        let defaults = Config::default();
        assert!(defaults.diskless_scrub_grace_ms >= MIN_DISKLESS_SCRUB_GRACE_MS);
        assert!(defaults.remote_scrub_grace_ms >= MIN_REMOTE_SCRUB_GRACE_MS);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = load(Some("num_partitions = 0\n"), &[], &[]).expect_err("invalid");
        assert!(err.to_string().contains("num_partitions"), "{err}");
        let err = load(Some("no_such_thing = 1\n"), &[], &[]).expect_err("unknown");
        assert!(err.to_string().contains("no_such_thing"), "{err}");
        let err =
            load(None, &[("STRATA_LOG_SEGMENT_BYTES", "lots")], &[]).expect_err("not a number");
        assert!(
            err.to_string().contains("STRATA_LOG_SEGMENT_BYTES"),
            "{err}"
        );
        let err = load(Some("listen = 5\n"), &[], &[]).expect_err("wrong type");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = load(None, &[], &[("metadata", "zookeeper://x")]).expect_err("bad url");
        assert!(err.to_string().contains("metadata"), "{err}");
        let err = load(None, &[("STRATA_LOG_SEGMENT_BYTES", "10")], &[]).expect_err("too small");
        assert!(err.to_string().contains("log_segment_bytes"), "{err}");
        // chunks × chunk size must not overflow the read-ahead window.
        let err = load(
            Some("remote_read_ahead_chunks = 9223372036854775807\n"),
            &[],
            &[],
        )
        .expect_err("too many chunks");
        assert!(
            err.to_string().contains("remote_read_ahead_chunks"),
            "{err}"
        );
        load(Some("remote_read_ahead_chunks = 1024\n"), &[], &[]).expect("the most allowed");
    }

    #[test]
    fn offset_metadata_fits_an_offset_record() {
        let most = load(
            Some(
                "offset_metadata_max_bytes = 32767
",
            ),
            &[],
            &[],
        )
        .expect("valid");
        assert_eq!(most.offset_metadata_max_bytes, 32767);
        let err = load(
            Some(
                "offset_metadata_max_bytes = 32768
",
            ),
            &[],
            &[],
        )
        .expect_err("longer than a record holds");
        assert!(
            err.to_string().contains("offset_metadata_max_bytes"),
            "{err}"
        );
        let err = load(
            Some(
                "offset_metadata_max_bytes = -1
",
            ),
            &[],
            &[],
        )
        .expect_err("negative");
        assert!(
            err.to_string().contains("offset_metadata_max_bytes"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config {
            s3_secret_access_key: "very-secret-key".into(),
            etcd_password: "etcd-pass-word".into(),
            ..Config::default()
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("very-secret-key") && !text.contains("etcd-pass-word"),
            "{text}"
        );
        assert!(text.contains("[hidden]"), "{text}");
    }

    #[test]
    fn connection_overrides_parse() {
        let config = load(
            Some("max_connections_per_ip_overrides = \"127.0.0.1:5, ::1:0,[fe80::1]:7\"\n"),
            &[],
            &[],
        )
        .expect("valid");
        let overrides = config.connection_overrides().expect("parsed");
        assert_eq!(overrides.get(&"127.0.0.1".parse().expect("ip")), Some(&5));
        assert_eq!(overrides.get(&"::1".parse().expect("ip")), Some(&0));
        assert_eq!(overrides.get(&"fe80::1".parse().expect("ip")), Some(&7));
        for bad in ["localhost:5", "127.0.0.1", "127.0.0.1:-1"] {
            let err = load(
                None,
                &[("STRATA_MAX_CONNECTIONS_PER_IP_OVERRIDES", bad)],
                &[],
            )
            .expect_err(bad);
            assert!(
                err.to_string().contains("max_connections_per_ip_overrides"),
                "{err}"
            );
        }
        let err = load(
            Some("max_request_bytes = 2000000\nqueued_max_request_bytes = 1000000\n"),
            &[],
            &[],
        )
        .expect_err("budget below one request");
        assert!(
            err.to_string().contains("queued_max_request_bytes"),
            "{err}"
        );
    }

    #[test]
    fn urls_parse() {
        let mut config = Config {
            metadata: "etcd://127.0.0.1:2379,127.0.0.1:2380/prod".into(),
            ..Config::default()
        };
        assert_eq!(
            config.metadata_url().expect("etcd url"),
            MetadataUrl::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.1:2380".into()
                ],
                prefix: "prod".into()
            }
        );
        config.object_store = "s3://bucket/some/prefix/".into();
        assert_eq!(
            config.object_store_url().expect("s3 url"),
            ObjectStoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        config.object_store = String::new();
        assert_eq!(
            config.object_store_url().expect("default"),
            ObjectStoreUrl::Directory("./data/objects".into())
        );
    }
}
