//! This host: its name, its clock's time zone (how times are shown to people), when it
//! booted, and whether a process of it still runs (how locks, journals and scratch
//! directories of killed runs are told from those of live ones).

use std::time::{Duration, SystemTime};

/// The name of this machine.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `t` as every message and table shows a time to people: this host's local time
/// (`TZ`, else `/etc/localtime`) with its offset from UTC, as `2024-01-02 15:48:00
/// +07:00`. Machine-readable output (`--json`) keeps RFC 3339 instead.
pub fn local_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A lock or temp file not touched for this long belongs to a writer that is gone:
/// a live holder or writer would have touched it since.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// Whether a file last modified at `modified` (as a store lists it) is older than
/// [`STALE_AFTER`] (30 minutes): a live holder or writer would have touched it since.
pub fn stale_by_age(modified: Option<SystemTime>) -> bool {
    let age = modified
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    age > STALE_AFTER
}

/// The name of the user this process runs as, from `/etc/passwd` (as Go's `os/user`
/// reads it without cgo); its numeric uid where that file does not name it.
pub fn user_name() -> String {
    let uid = rustix::process::geteuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or(uid)
}

/// Whether process `pid` runs on this host.
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// When this host booted, as the kernel reports it (`btime` in `/proc/stat`); `None`
/// where that cannot be read. Nothing written before it belongs to a live process.
pub fn boot_time() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_named_as_id_names_it() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let name = String::from_utf8_lossy(&id.stdout).trim().to_string();
        // A user only a directory service knows (LDAP) goes by number.
        let in_passwd = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{name}:")));
        let want = if id.status.success() && in_passwd {
            name
        } else {
            rustix::process::geteuid().as_raw().to_string()
        };
        assert_eq!(user_name(), want);
    }

    #[test]
    fn booted_in_the_past() {
        let boot = boot_time().expect("Linux reports btime");
        assert!(boot < SystemTime::now());
        assert!(boot > SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    }
}
