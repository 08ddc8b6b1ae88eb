//! File-system helpers shared by the registry and the ensemble store: name validation, crash-safe
//! writes (temporary name, fsync, rename) and timestamps.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Longest accepted model or ensemble name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `value` can be used as one path component: 1–128 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with `.` (hidden and temporary entries start with a dot) and not `.`/`..`.
///
/// # Errors
///
/// `invalid_name` naming the rule broken.
pub fn validate_name(what: &'static str, value: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidName { what, value: value.to_string(), reason });
    if value.is_empty() {
        return invalid("it is empty");
    }
    if value.len() > MAX_NAME_LEN {
        return invalid("it is longer than 128 characters");
    }
    if value.starts_with('.') {
        return invalid("it starts with '.'");
    }
    if value.chars().any(char::is_control) {
        return invalid("it contains control characters");
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return invalid("only letters, digits, '.', '_' and '-' are allowed (no '/', spaces or other characters)");
    }
    Ok(())
}

/// A name for a temporary sibling that no reader lists (it starts with a dot) and no concurrent writer shares.
pub fn temporary_name(base: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!(".tmp-{base}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// How old a temporary must be before it counts as abandoned: a home shared by replicas in other PID
/// namespaces (pods on one volume) sees their live writers' pids as dead, so age decides too.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether `path` (named `name`) is a [`temporary_name`] whose writer, a process of this machine, is
/// gone, and which nothing has touched for [`ABANDONED_AFTER`].
fn is_abandoned(path: &Path, name: &str) -> bool {
    is_dead_writers_temporary(name)
        && fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= ABANDONED_AFTER))
}

/// Whether `name` is a [`temporary_name`] whose writer's pid names no live process here.
fn is_dead_writers_temporary(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    // .tmp-{base}-{pid}-{counter}-{nanos}; the base may itself contain '-'.
    let mut parts = rest.rsplitn(4, '-');
    let (Some(_nanos), Some(_counter), Some(pid), Some(_base)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

/// Removes the leftovers of writes killed mid-way (staging folders, temporary files, trash) found
/// directly in `dir`, with a warning naming each and its size: they would otherwise stay forever.
pub fn clear_abandoned(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if !entry.file_name().to_str().is_some_and(|name| is_abandoned(&path, name)) {
            continue;
        }
        let bytes = size_on_disk(&path);
        let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        match removed {
            Ok(()) => tracing::warn!(path = %path.display(), bytes, "removed the leftover of an interrupted write"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the leftover of an interrupted write")
            }
        }
    }
}

/// Bytes under `path` (a file, or a folder's files), for reports.
fn size_on_disk(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| size_on_disk(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
///
/// # Errors
///
/// `io` when the temporary file cannot be written, synced or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(temporary_name(file_name));
    let result = write_synced(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Writes `bytes` to `path` only if nothing is there, atomically: readers see no file or the whole
/// one, and of two writers racing for one path exactly one wins. `Ok(false)` when `path` existed.
pub fn create_new_atomic(path: &Path, bytes: &[u8]) -> Result<bool> {
    let dir = path.parent().ok_or_else(|| Error::Config(format!("{} has no parent directory", path.display())))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(temporary_name(file_name));
    write_synced(&tmp, bytes).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    // link(2), unlike rename(2), fails when the target exists.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

/// Writes and fsyncs a new file.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("writing {}", path.display());
    let mut file = File::create(path).map_err(|e| Error::io(context(), e))?;
    file.write_all(bytes).map_err(|e| Error::io(context(), e))?;
    file.sync_all().map_err(|e| Error::io(context(), e))
}

/// Makes a rename durable; best effort, since not every file system supports syncing a directory.
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Lists `dir`, a folder of a quorum home: `None` when the home exists without it (nothing saved
/// there yet), `not_found` when the home itself is missing (a mistyped `--home`).
pub fn read_dir_in_home(dir: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir.parent() {
            Some(home) if !home.as_os_str().is_empty() && !home.is_dir() => {
                Err(Error::not_found("quorum home", home.display().to_string()))
            }
            _ => Ok(None),
        },
        Err(e) => Err(Error::io(format!("listing {}", dir.display()), e)),
    }
}

pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Current UTC time as RFC 3339 (`2026-11-27T10:32:12Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC (Howard Hinnant's civil-from-days).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_confuse_are_refused() {
        for bad in ["", "../x", "/etc/passwd", "a/b", "..", ".", ".hidden", "tab\there", "nl\n", "sp ace", "é"] {
            assert!(validate_name("model name", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["technical", "tech-v2", "a.b_c", "X1"] {
            validate_name("model name", good).unwrap_or_else(|e| panic!("{good:?} refused: {e}"));
        }
        assert!(validate_name("model name", &"a".repeat(129)).is_err());
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_775_532), "2026-11-27T10:32:12Z");
    }
}
