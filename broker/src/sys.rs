//! Process limits.
//!
//! Every open segment holds three file descriptors (log, offset index, time index), so a
//! broker with a few thousand partitions passes the common default soft limit of 1024
//! open files and then fails appends, rolls and accepts with EMFILE. At start-up the soft
//! limit is raised to the hard limit, as the Go runtime and many servers do; the hard
//! limit stays the operator's to set (systemd `LimitNOFILE`, Kubernetes node settings).
//!
//! `getrlimit`/`setrlimit` are only reachable through `libc`, hence the second module
//! allowed to use `unsafe` (see `[workspace.lints]`).
#![allow(unsafe_code)]

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (before, after) = super::raise_open_files_limit().expect("rlimit");
        assert!(after >= before);
        let (again, same) = super::raise_open_files_limit().expect("rlimit");
        assert_eq!(again, after, "the raised limit stays");
        assert_eq!(same, after);
    }
}
