//! `strata etcd rejoin`: how a member of the chart's etcd whose data directory is empty
//! starts (templates/etcd.yaml, start.sh).
//!
//! An empty volume means one of two things, and mistaking one for the other loses data:
//!
//! - a first install: every member is empty and they form a cluster together (`new`);
//! - a member that lost its volume in a cluster that was formed before. Starting it
//!   `new` would give it its old member ID with an empty log: it votes as if it had
//!   seen nothing, and a leader it helps elect can overwrite committed entries (raft
//!   amnesia). It must instead be removed and added again as a new member (`existing`).
//!
//! Silence proves nothing: after a restart of every pod, the members with data take a
//! while (volumes, images, WAL replay) and serve clients only once a quorum is back. So
//! the decision rests on evidence, polled until it is conclusive:
//!
//! - etcd serves `GET /members` on its peer port before it has a quorum (etcd 3.5,
//!   server/etcdserver/api/etcdhttp/peer.go). A member restarted from data lists members
//!   with client URLs: they published themselves, so the cluster formed before. Then
//!   the answer is never `new`: the member waits for a quorum and re-adds itself.
//! - While deciding, this command answers on the member's own peer address that it has
//!   no data. Every other member saying so (or running an etcd that lists no published
//!   member: one that started `new` a moment ago) is a first install: `new`.
//! - Only after `--wait` with no evidence of a formed cluster, and with a majority of
//!   the members (this one included) known to be empty, is the answer `new` too: a
//!   first install where a pod could not start. One empty member alone never decides
//!   `new`: the members with data are the majority and may just be slow.
//! - Otherwise, after `--wait`, it fails with the reason; the kubelet reruns the init
//!   container.
//!
//! Re-adding is serialized by an etcd lock held by a lease of `--lock-ttl` seconds that
//! is never kept alive or released: it outlives this command, so a second member that
//! rejoins at the same time adds itself only after the first one had time to start.
//! Otherwise the first one's `--initial-cluster` would miss the second and etcd would
//! refuse to start ("member count is unequal").

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, LockOptions, Member};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Tries of a member add, a second apart. etcd refuses an add while a member it counts
/// is not yet active (the member re-added just before, still starting and catching up),
/// which takes tens of seconds on a busy node: give it a minute and a half.
const ADD_ATTEMPTS: u32 = 90;
/// Pause between two rounds of asking the other members.
const POLL: Duration = Duration::from_secs(2);
/// The lock that serializes rejoins.
const LOCK_NAME: &str = "strata-etcd-rejoin";
/// The header the announcement of an empty member carries.
const EMPTY_HEADER: &str = "x-strata-etcd-member: no-data";

pub struct Request<'a> {
    /// Client URLs of the other members.
    pub endpoints: &'a [String],
    /// Peer URLs of the other members.
    pub peers: &'a [String],
    pub name: &'a str,
    pub peer_url: &'a str,
    /// `HOST:PORT` to announce "no data" on while deciding (the member's peer listener).
    pub listen_peer: Option<&'a str>,
    pub wait: Duration,
    pub lock_ttl: i64,
}

/// What a look at another member's peer port shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// etcd runs there and lists published members: the cluster formed before.
    Formed,
    /// Another member without data, deciding; or an etcd that lists no published
    /// member (started `new` a moment ago).
    Empty,
    /// Nothing answers (yet).
    Silent,
}

/// What the members seen so far allow.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    New,
    Wait,
    Fail(String),
}

/// The pure part of the decision: `peers` is the latest look at each other member,
/// `formed_seen` whether any look so far showed a formed cluster.
fn verdict(peers: &[Peer], formed_seen: bool, waited_enough: bool) -> Verdict {
    let members = peers.len() + 1;
    let empty = 1 + peers.iter().filter(|p| **p == Peer::Empty).count();
    if formed_seen {
        return if waited_enough {
            Verdict::Fail(
                "a member answers with data but its cluster has no leader: it lost its quorum (or is still replaying its log). A member without data cannot join it, and a new cluster would hide the old one's data. Bring back the members that hold data, or restore a snapshot (docs/deploy.md, \"Restoring etcd from a snapshot\")".into(),
            )
        } else {
            Verdict::Wait
        };
    }
    if empty == members {
        return Verdict::New;
    }
    if !waited_enough {
        return Verdict::Wait;
    }
    if empty * 2 > members {
        return Verdict::New;
    }
    Verdict::Fail(format!(
        "only {empty} of {members} members are known to have no data and the others did not answer: they may hold the cluster's data and be slow to start, so this member will not start a new cluster"
    ))
}

pub async fn rejoin(request: Request<'_>) -> anyhow::Result<()> {
    let announcing = match request.listen_peer {
        Some(address) => Some(announce_empty(address).await?),
        None => None,
    };
    let started = Instant::now();
    let mut formed_seen = false;
    // A look can miss an answer (a busy member): decide on silence only after several.
    let mut rounds = 0u32;
    let outcome = loop {
        match quorum(request.endpoints).await {
            Ok((client, endpoint)) => break join_existing(client, &endpoint, &request).await,
            Err(why) => {
                let mut seen = Vec::with_capacity(request.peers.len());
                for peer in request.peers {
                    let look = look_at(peer).await;
                    if look == Peer::Formed && !formed_seen {
                        eprintln!(
                            "{peer} lists members that published themselves: the cluster formed before; waiting for its quorum ({why})"
                        );
                        formed_seen = true;
                    }
                    seen.push(look);
                }
                rounds += 1;
                let waited_enough = started.elapsed() >= request.wait && rounds >= 3;
                match verdict(&seen, formed_seen, waited_enough) {
                    Verdict::New => {
                        eprintln!(
                            "no etcd cluster formed before at {} (members: {seen:?}): a first install, new",
                            request.peers.join(",")
                        );
                        println!("new");
                        break Ok(());
                    }
                    Verdict::Fail(reason) => break Err(anyhow::anyhow!(reason)),
                    Verdict::Wait => tokio::time::sleep(POLL).await,
                }
            }
        }
    };
    if let Some(task) = announcing {
        task.abort();
    }
    outcome
}

/// A client of one member of a cluster with a quorum, or why there is none. One member:
/// a client of several sends each call to any of them, a stopped one included.
async fn quorum(endpoints: &[String]) -> Result<(Client, String), String> {
    let mut why = Vec::new();
    for endpoint in endpoints {
        // Require a leader: without one, either the cluster is still forming or it lost
        // its quorum, where changing membership is impossible anyway.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_require_leader(true);
        match tokio::time::timeout(
            Duration::from_secs(5),
            Client::connect([endpoint], Some(options)),
        )
        .await
        {
            // A leader that lost its followers may still call itself leader for a while:
            // a linearizable read proves a quorum (etcd's /health makes the same one).
            Ok(Ok(mut client)) => match client.get("health", None).await {
                Ok(_) => return Ok((client, endpoint.clone())),
                Err(e) => why.push(format!("{endpoint}: no quorum: {e}")),
            },
            Ok(Err(e)) => why.push(format!("{endpoint}: {e}")),
            Err(_) => why.push(format!("{endpoint}: timed out")),
        }
    }
    Err(why.join("; "))
}

/// Answers every request on `address` with the no-data header until aborted.
async fn announce_empty(address: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let address = address
        .strip_prefix("http://")
        .unwrap_or(address)
        .trim_end_matches('/');
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("listen on {address} to tell other members this one has no data")
    })?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stream.read(&mut request)).await;
                let response = format!(
                    "HTTP/1.0 200 OK\r\n{EMPTY_HEADER}\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nno data\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

/// `GET <peer>/members`, read as [`Peer`].
async fn look_at(peer_url: &str) -> Peer {
    let look = async {
        let host = peer_url
            .split("://")
            .nth(1)?
            .split('/')
            .next()
            .filter(|h| !h.is_empty())?;
        let mut stream = TcpStream::connect(host).await.ok()?;
        let request = format!("GET /members HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // Read up to the end of the body its Content-Length announces: etcd can hold the
        // connection open for seconds after answering, Connection: close or not.
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..read]);
            if complete(&response) {
                break;
            }
        }
        Some(classify(&String::from_utf8_lossy(&response)))
    };
    tokio::time::timeout(Duration::from_secs(5), look)
        .await
        .ok()
        .flatten()
        .unwrap_or(Peer::Silent)
}

/// Whether `response` holds its head and the whole body its Content-Length announces.
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    length.is_some_and(|length| response.len() >= end + 4 + length)
}

/// Reads an HTTP response of a peer port.
fn classify(response: &str) -> Peer {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Peer::Silent;
    };
    if head
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case(EMPTY_HEADER))
    {
        return Peer::Empty;
    }
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Peer::Silent;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(body.trim()) {
        Ok(members) => {
            let published = members.iter().any(|m| {
                m.get("clientURLs")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|urls| !urls.is_empty())
            });
            if published { Peer::Formed } else { Peer::Empty }
        }
        Err(_) => Peer::Silent,
    }
}

/// Under the rejoin lock: replaces this member's stale entry, prints `existing` and the
/// `--initial-cluster`.
async fn join_existing(
    mut client: Client,
    endpoint: &str,
    request: &Request<'_>,
) -> anyhow::Result<()> {
    let (name, peer_url) = (request.name, request.peer_url);
    let lease = client
        .lease_grant(request.lock_ttl, None)
        .await
        .context("grant the lease of the rejoin lock")?
        .id();
    // The lock call blocks while another member holds it, up to its lease's TTL: a
    // client of its own, without the per-call deadline.
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(3));
    let mut locker = Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connect to {endpoint} for the rejoin lock"))?;
    let wait = Duration::from_secs(request.lock_ttl.unsigned_abs() + 30);
    tokio::time::timeout(
        wait,
        locker.lock(LOCK_NAME, Some(LockOptions::new().with_lease(lease))),
    )
    .await
    .context("take the rejoin lock: timed out")?
    .context("take the rejoin lock")?;
    eprintln!(
        "took the rejoin lock for {}s (lease {lease:x}, left to expire)",
        request.lock_ttl
    );
    let members = client
        .member_list()
        .await
        .context("list the members")?
        .members()
        .to_vec();
    let mine = members
        .iter()
        .find(|m| m.peer_urls().iter().any(|u| u == peer_url) || m.name() == name);
    match mine {
        // Never started (added by a previous attempt, or listed at the first install and
        // late while the others formed the cluster): no client URL published; start as is.
        Some(member) if member.client_urls().is_empty() => {
            eprintln!(
                "member {name} ({:x}) is in the cluster but never started: starting it as is",
                member.id()
            );
        }
        Some(member) => {
            eprintln!(
                "member {name} ({:x}) is in the cluster but its data is gone: removing and re-adding it",
                member.id()
            );
            client
                .member_remove(member.id())
                .await
                .with_context(|| format!("remove the stale member {name}"))?;
            add_member(&mut client, peer_url).await?;
        }
        None => {
            eprintln!("member {name} is not in the cluster: adding it");
            add_member(&mut client, peer_url).await?;
        }
    }
    // Listed again, under the lock, after the add: the membership this member starts
    // with is the cluster's, not one answer's.
    let members = client
        .member_list()
        .await
        .context("list the members after the add")?
        .members()
        .to_vec();
    if !members
        .iter()
        .any(|m| m.peer_urls().iter().any(|u| u == peer_url))
    {
        bail!("the member list after adding {peer_url} does not hold it");
    }
    println!("existing");
    println!("{}", initial_cluster(&members, name, peer_url)?);
    Ok(())
}

fn initial_cluster(members: &[Member], name: &str, peer_url: &str) -> anyhow::Result<String> {
    let mut initial = Vec::new();
    for member in members {
        let member_name = if member.peer_urls().iter().any(|u| u == peer_url) {
            name
        } else if member.name().is_empty() {
            // Another member added but not started yet: the chart names each member
            // after its pod, the first label of its peer URL's host.
            let url = member.peer_urls().first().map_or("", String::as_str);
            pod_of(url).with_context(|| {
                format!(
                    "another member ({:x}) has no name and a peer URL {url:?} that names no pod",
                    member.id()
                )
            })?
        } else {
            member.name()
        };
        for url in member.peer_urls() {
            initial.push(format!("{member_name}={url}"));
        }
    }
    Ok(initial.join(","))
}

/// `http://strata-etcd-1.strata-etcd-peers.ns.svc:2380` → `strata-etcd-1`.
fn pod_of(peer_url: &str) -> Option<&str> {
    let host = peer_url.split("://").nth(1)?.split([':', '/']).next()?;
    host.split('.').next().filter(|label| !label.is_empty())
}

async fn add_member(client: &mut Client, peer_url: &str) -> anyhow::Result<()> {
    // Right after a member is removed etcd may refuse the add ("unhealthy cluster": a
    // member it has not heard from lately); it accepts once the others are active.
    let mut attempt = 1;
    loop {
        match client.member_add([peer_url], None).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < ADD_ATTEMPTS => {
                eprintln!("adding the member {peer_url} failed ({e}); retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("add the member {peer_url}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_url_names_its_pod() {
        assert_eq!(
            pod_of("http://s-etcd-1.s-etcd-peers.ns.svc.cluster.local:2380"),
            Some("s-etcd-1")
        );
        assert_eq!(pod_of("http://127.0.0.1:2380"), Some("127"));
        assert_eq!(pod_of("nonsense"), None);
    }

    #[test]
    fn a_formed_cluster_is_never_new() {
        use Peer::*;
        assert_eq!(verdict(&[Formed, Silent], true, false), Verdict::Wait);
        assert!(matches!(
            verdict(&[Silent, Silent], true, true),
            Verdict::Fail(_)
        ));
        // Seen formed once, empty-looking later: still not new.
        assert!(matches!(
            verdict(&[Empty, Empty], true, true),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn silence_is_not_a_first_install() {
        use Peer::*;
        assert_eq!(verdict(&[Silent, Silent], false, false), Verdict::Wait);
        // One empty member of three: the two others may hold the data.
        assert!(matches!(
            verdict(&[Silent, Silent], false, true),
            Verdict::Fail(_)
        ));
        // A majority empty after the wait: a first install with a pod that did not start.
        assert_eq!(verdict(&[Empty, Silent], false, true), Verdict::New);
        assert_eq!(verdict(&[Empty, Silent], false, false), Verdict::Wait);
        // Everybody empty: a first install, at once.
        assert_eq!(verdict(&[Empty, Empty], false, false), Verdict::New);
        assert_eq!(verdict(&[], false, false), Verdict::New);
    }

    #[test]
    fn peer_answers_are_read() {
        let etcd = |body: &str| {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{body}\n")
        };
        assert_eq!(
            classify(&etcd(
                r#"[{"id":1,"peerURLs":["http://a:2380"],"name":"a","clientURLs":["http://a:2379"]}]"#
            )),
            Peer::Formed
        );
        assert_eq!(
            classify(&etcd(
                r#"[{"id":1,"peerURLs":["http://a:2380"],"name":"","clientURLs":[]}]"#
            )),
            Peer::Empty
        );
        assert_eq!(
            classify(&format!(
                "HTTP/1.0 200 OK\r\n{EMPTY_HEADER}\r\n\r\nno data\n"
            )),
            Peer::Empty
        );
        assert_eq!(classify("HTTP/1.1 404 Not Found\r\n\r\nnope"), Peer::Silent);
        assert!(complete(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]"));
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n[]"));
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n"));
        assert_eq!(classify(""), Peer::Silent);
    }
}
