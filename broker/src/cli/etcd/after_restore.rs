//! `strata etcd after-restore`: run once on a restored etcd, before any broker starts.
//!
//! A snapshot puts back counters that moved on after it was taken, and two of them must
//! never be handed out twice:
//!
//! - Each partition's `leader_epoch` (in `<prefix>/topics/<name>`). The logs on the
//!   brokers' disks and in the bucket already carry the epochs used after the snapshot.
//!   A controller counting on from the snapshot's value would give a new leader an epoch
//!   an older leader used: a replica ignores an epoch that is not newer than the last it
//!   recorded, and truncation by epoch would compare entries of two different leaders as
//!   if they were one's, so replicas can diverge silently.
//! - `<prefix>/producer_ids`, the next producer id to reserve. A producer id handed out
//!   after the snapshot would be handed out again: a batch of the new producer with the
//!   same id, epoch and sequence as one already written is taken for a duplicate and
//!   acknowledged without being written.
//!
//! Both are raised by a margin far above what the lost window can have used: every leader
//! election adds one to an epoch (the default 1,000,000 covers an election every 4 ms for
//! an hour), and producer ids are reserved in blocks (the default 10^12 covers 10^12 ids;
//! the counter is an i64). Raising them more than needed costs nothing: epochs and ids
//! only need to be new, not consecutive. Each topic record changes by compare-and-swap,
//! so running it twice only raises them twice.

use anyhow::{Context, bail};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use strata_broker::config::Config;

pub async fn after_restore(
    config: &Config,
    epoch_bump: i32,
    producer_id_bump: i64,
) -> anyhow::Result<()> {
    if epoch_bump < 1 || producer_id_bump < 1 {
        bail!("--epoch-bump and --producer-id-bump must be at least 1");
    }
    let (mut client, endpoints, prefix) = super::snapshot_client(config).await?;
    let topics_prefix = format!("{prefix}/topics/");
    let topics = client
        .get(
            topics_prefix.as_str(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .context("list the topic records")?;
    let mut partitions = 0usize;
    let mut highest = i64::MIN;
    for kv in topics.kvs() {
        let key = kv
            .key_str()
            .context("a topic key is not UTF-8")?
            .to_string();
        let mut record: serde_json::Value = serde_json::from_slice(kv.value())
            .with_context(|| format!("read the topic record {key}"))?;
        let Some(list) = record
            .get_mut("partitions")
            .and_then(serde_json::Value::as_array_mut)
        else {
            bail!("the topic record {key} has no partitions");
        };
        for partition in list {
            let epoch = partition
                .get("leader_epoch")
                .and_then(serde_json::Value::as_i64)
                .with_context(|| format!("a partition of {key} has no leader_epoch"))?;
            let raised = i32::try_from(epoch)
                .ok()
                .and_then(|e| e.checked_add(epoch_bump))
                .with_context(|| {
                    format!("{key}: leader epoch {epoch} + {epoch_bump} does not fit an i32")
                })?;
            partition["leader_epoch"] = raised.into();
            highest = highest.max(i64::from(raised));
            partitions += 1;
        }
        let value = serde_json::to_vec(&record).context("encode a topic record")?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        if !client
            .txn(txn)
            .await
            .with_context(|| format!("write {key}"))?
            .succeeded()
        {
            bail!("{key} changed while this ran: is a broker running? Stop the brokers first");
        }
    }
    println!(
        "leader epochs of {partitions} partitions in {} topics raised by {epoch_bump} (highest now {highest})",
        topics.kvs().len()
    );
    let key = format!("{prefix}/producer_ids");
    let found = client
        .get(key.as_str(), None)
        .await
        .context("read the producer id counter")?;
    match found.kvs().first() {
        Some(kv) => {
            let text = String::from_utf8_lossy(kv.value());
            let next: i64 = text
                .trim()
                .parse()
                .with_context(|| format!("{key} holds {text:?}, not a number"))?;
            let raised = next.checked_add(producer_id_bump).with_context(|| {
                format!("{key}: {next} + {producer_id_bump} does not fit an i64")
            })?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.as_str(), raised.to_string(), None)]);
            if !client
                .txn(txn)
                .await
                .with_context(|| format!("write {key}"))?
                .succeeded()
            {
                bail!("{key} changed while this ran: is a broker running? Stop the brokers first");
            }
            println!("next producer id raised from {next} to {raised}");
        }
        None => println!("no producer id reserved yet ({key} absent): nothing to raise"),
    }
    println!("etcd at {} is ready for the brokers", endpoints.join(","));
    Ok(())
}
