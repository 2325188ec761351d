//! Where replicas go: spread over brokers and racks, leaders spread over brokers.
//!
//! Brokers are ordered so that consecutive ones are in different racks (racks taken in
//! turn, brokers within a rack by id); partition `p` of a topic gets the `rf` brokers
//! from position `start + p` of that order. Consecutive brokers being in different racks,
//! a partition's replicas are in as many racks as there are, and the first replica (the
//! preferred leader) moves one broker along per partition.

use std::collections::BTreeMap;

use super::BrokerInfo;

/// Brokers in rack-alternating order.
fn rack_alternating(brokers: &[BrokerInfo]) -> Vec<i32> {
    let mut racks: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        racks
            .entry(b.rack.as_deref().unwrap_or(""))
            .or_default()
            .push(b.node_id);
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::with_capacity(brokers.len());
    for round in 0.. {
        let before = order.len();
        order.extend(racks.values().filter_map(|ids| ids.get(round).copied()));
        if order.len() == before {
            break;
        }
    }
    order
}

/// Replicas for `partitions` new partitions, the preferred leader first. `start` spreads
/// the leaders of different topics (a topic's name hash, say).
pub fn assign(
    brokers: &[BrokerInfo],
    partitions: usize,
    rf: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, String> {
    if rf == 0 || rf > brokers.len() {
        return Err(format!(
            "replication factor {rf} is larger than the {} available broker{}",
            brokers.len(),
            if brokers.len() == 1 { "" } else { "s" }
        ));
    }
    let order = rack_alternating(brokers);
    let n = order.len();
    Ok((0..partitions)
        .map(|p| (0..rf).map(|j| order[(start + p + j) % n]).collect())
        .collect())
}

/// The rack of broker `id`, if it is among `brokers` and has one.
fn rack_of(brokers: &[BrokerInfo], id: i32) -> Option<&str> {
    brokers
        .iter()
        .find(|b| b.node_id == id)
        .and_then(|b| b.rack.as_deref())
}

/// A broker to take over a replica of a partition now on `current`: live, not among the
/// current replicas, preferably in a rack the others do not use, then the least loaded.
pub fn replacement(
    brokers: &[BrokerInfo],
    current: &[i32],
    load: &BTreeMap<i32, usize>,
) -> Option<i32> {
    let used: Vec<Option<&str>> = current.iter().map(|&id| rack_of(brokers, id)).collect();
    brokers
        .iter()
        .filter(|b| !current.contains(&b.node_id))
        .min_by_key(|b| {
            (
                used.contains(&b.rack.as_deref()),
                load.get(&b.node_id).copied().unwrap_or(0),
                b.node_id,
            )
        })
        .map(|b| b.node_id)
}

/// A broker to take over the replica `leaving` holds of a partition now on `current`,
/// for a rebalance: not among the current replicas, keeping the partition in as many
/// racks as before, then the least loaded (ties: a rack the other replicas do not use,
/// then the lowest id). Unlike [`replacement`], the leaving replica's own rack counts as
/// free, so a broker in that rack may take its place.
pub fn move_target(
    brokers: &[BrokerInfo],
    current: &[i32],
    leaving: i32,
    load: &BTreeMap<i32, usize>,
) -> Option<i32> {
    let racks = |replicas: &mut dyn Iterator<Item = i32>| {
        replicas
            .map(|id| rack_of(brokers, id))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = racks(&mut current.iter().copied()).len();
    let others = racks(&mut current.iter().copied().filter(|&id| id != leaving));
    brokers
        .iter()
        .filter(|b| !current.contains(&b.node_id))
        .filter(|b| {
            let mut after = others.clone();
            after.insert(b.rack.as_deref());
            after.len() >= before
        })
        .min_by_key(|b| {
            (
                load.get(&b.node_id).copied().unwrap_or(0),
                others.contains(&b.rack.as_deref()),
                b.node_id,
            )
        })
        .map(|b| b.node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, rack: &str) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: Some(rack.into()),
            replication: String::new(),
            admin: String::new(),
            listeners: Vec::new(),
            principal: String::new(),
        }
    }

    #[test]
    fn replicas_span_racks_and_leaders_rotate() {
        let brokers = [
            broker(1, "a"),
            broker(2, "a"),
            broker(3, "b"),
            broker(4, "b"),
        ];
        let assigned = assign(&brokers, 4, 2, 0).expect("enough brokers");
        for replicas in &assigned {
            let racks: std::collections::BTreeSet<_> = replicas
                .iter()
                .map(|id| if *id <= 2 { "a" } else { "b" })
                .collect();
            assert_eq!(racks.len(), 2, "{replicas:?} spans both racks");
        }
        let leaders: std::collections::BTreeSet<_> = assigned.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 4);
        assert!(assign(&brokers, 1, 5, 0).is_err());
    }

    #[test]
    fn a_replacement_prefers_a_new_rack_then_the_least_loaded_broker() {
        let brokers = [
            broker(1, "a"),
            broker(2, "b"),
            broker(3, "b"),
            broker(4, "c"),
        ];
        let load = BTreeMap::from([(4, 10), (3, 0)]);
        assert_eq!(replacement(&brokers, &[1, 2], &load), Some(4));
        assert_eq!(replacement(&brokers, &[1, 4], &load), Some(2));
        assert_eq!(replacement(&brokers, &[1, 2, 3, 4], &load), None);
    }
}
