//! Process limits.
//!
//! Every partition's active segment holds three file descriptors (log, offset index, time
//! index), so a broker with a few thousand partitions passes the common default soft
//! limit of 1024 open files and then fails appends, rolls and accepts with EMFILE. At
//! start-up the soft limit is raised to the hard limit, as the Go runtime and many servers
//! do; the hard limit stays the operator's to set (systemd `LimitNOFILE`, Kubernetes node
//! settings).
//!
//! The limit is then split ([`FdBudget`]) so that no one kind of client can take every
//! descriptor: connections get at most half of what is left after a fixed reserve, and
//! storage (active segments and the cache of sealed-segment files) keeps the other half.
//! `max_connections` is capped by [`FdBudget::connections`]; the partition cap and the
//! segment-file cache are derived from [`FdBudget::storage`].
//!
//! [`disk_used_percent`] backs the disk high-water mark (produce is refused before the
//! disk fills).
//!
//! `getrlimit`/`setrlimit`/`statvfs` are only reachable through `libc`, hence the second module
//! allowed to use `unsafe` (see `[workspace.lints]`).
#![allow(unsafe_code)]

/// Descriptors outside both shares: listeners, the metadata-store and object-store
/// clients, the embedded store, the remote cache's files, stdio and temporary files.
pub const FD_RESERVED: u64 = 256;

/// Descriptors a partition's active segment holds open: `.log`, `.index`, `.timeindex`.
pub const FILES_PER_ACTIVE_SEGMENT: u64 = 3;

/// How the open-files limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub limit: u64,
    /// The most descriptors client connections may take.
    pub connections: u64,
    /// Kept for storage: active segments and the sealed-segment file cache.
    pub storage: u64,
}

impl FdBudget {
    pub fn for_limit(limit: u64) -> FdBudget {
        let usable = limit.saturating_sub(FD_RESERVED);
        let connections = usable / 2;
        FdBudget {
            limit,
            connections,
            storage: usable - connections,
        }
    }

    /// The budget under the current soft limit (after [`raise_open_files_limit`]).
    pub fn current() -> std::io::Result<FdBudget> {
        Ok(FdBudget::for_limit(open_files_limit()?))
    }

    /// The default size of the sealed-segment file cache: a quarter of the storage
    /// share, between 16 and 10000.
    pub fn segment_files(&self) -> u64 {
        (self.storage / 4).clamp(16, 10_000)
    }

    /// Partitions whose active segments fit in the storage share beside a cache of
    /// `segment_files` (at least 1).
    pub fn partitions(&self, segment_files: u64) -> u64 {
        (self.storage.saturating_sub(segment_files) / FILES_PER_ACTIVE_SEGMENT).max(1)
    }
}

/// The soft open-files limit.
pub fn open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// Raises the soft open-files limit to the hard limit. Returns (before, after).
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit struct; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// Percentage of the file system holding `path` that is used, as `df` computes it
/// (blocks available to unprivileged users count as free).
pub fn disk_used_percent(path: &std::path::Path) -> std::io::Result<f64> {
    disk_usage(path).map(|usage| usage.used_percent)
}

/// The file system's usage: percent used (as `df` counts it), its size in bytes, and the
/// bytes unprivileged users can still write (`df`'s "Avail").
pub struct DiskUsage {
    pub used_percent: f64,
    pub size_bytes: u64,
    pub available_bytes: u64,
}

pub fn disk_usage(path: &std::path::Path) -> std::io::Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stats` is writable for the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let total = stats.f_blocks as f64;
    let free = stats.f_bfree as f64;
    let available = stats.f_bavail as f64;
    let used = total - free;
    let size_bytes = (stats.f_blocks as u64).saturating_mul(stats.f_frsize as u64);
    let available_bytes = (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64);
    if used + available <= 0.0 {
        return Ok(DiskUsage {
            used_percent: 0.0,
            size_bytes,
            available_bytes,
        });
    }
    Ok(DiskUsage {
        used_percent: 100.0 * used / (used + available),
        size_bytes,
        available_bytes,
    })
}

/// Time comes in through this trait so tests can control it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_usage_is_a_percentage() {
        let used = super::disk_used_percent(std::path::Path::new(".")).expect("statvfs");
        assert!((0.0..=100.0).contains(&used), "{used}");
        assert!(super::disk_used_percent(std::path::Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn the_budget_keeps_a_storage_share_no_connection_can_take() {
        let budget = super::FdBudget::for_limit(20_000);
        assert_eq!(
            budget.connections + budget.storage + super::FD_RESERVED,
            20_000
        );
        assert!(budget.storage >= budget.connections);
        let cache = budget.segment_files();
        assert_eq!(cache, 2_468);
        let partitions = budget.partitions(cache);
        assert!(partitions * super::FILES_PER_ACTIVE_SEGMENT + cache <= budget.storage);
        // A tiny limit still leaves something to work with.
        let tiny = super::FdBudget::for_limit(100);
        assert_eq!(tiny.segment_files(), 16);
        assert_eq!(tiny.partitions(16), 1);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (before, after) = super::raise_open_files_limit().expect("rlimit");
        assert!(after >= before);
        let (again, same) = super::raise_open_files_limit().expect("rlimit");
        assert_eq!(again, after, "the raised limit stays");
        assert_eq!(same, after);
    }
}
