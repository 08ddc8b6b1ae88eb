//! The process's own resource use, read from `/proc/self` (Linux) at scrape time, under the names
//! Prometheus's client libraries give them (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...).

/// CPU time, memory and file descriptors of this process; fields are `None` where the platform does
/// not say (anything but Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// CPU time used (user + system), in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Seconds since the Unix epoch at which the process started.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self` (all `None` where it cannot be read, e.g. not on Linux).
    pub fn read() -> ProcessStats {
        let mut stats = ProcessStats::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            stats.read_stat(&stat);
        }
        // Resident memory in kB from `status`: no page size to guess.
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            stats.resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024);
        }
        stats.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        stats
    }

    /// Fields of `/proc/self/stat` after the command name (which may hold spaces and parentheses).
    fn read_stat(&mut self, stat: &str) {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ")": state is field 3 of proc(5), so field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let ticks = clock_ticks() as f64;
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            self.cpu_seconds = Some((utime + stime) as f64 / ticks);
        }
        self.threads = field(20);
        self.virtual_bytes = field(23);
        if let (Some(start), Some(boot)) = (field(22), boot_time()) {
            self.start_time_seconds = Some(boot + start as f64 / ticks);
        }
    }
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux architecture quorum builds for.
fn clock_ticks() -> u64 {
    100
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_cpu_time_memory_and_descriptors() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 1 << 20);
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.cpu_seconds.unwrap() >= 0.0);
        assert!(stats.threads.unwrap() >= 1);
        let started = stats.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0, "{started} vs {now}");
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let mut stats = ProcessStats::default();
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456 512 0";
        stats.read_stat(line);
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.threads, Some(7));
        assert_eq!(stats.virtual_bytes, Some(123456));
    }
}
