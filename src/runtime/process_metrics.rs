//! The standard `process_*` metrics (CPU, memory, file descriptors, start time), read from
//! `/proc/self` at scrape time, as the Prometheus Go and Python clients expose them.
//!
//! Linux only: elsewhere (or when `/proc` cannot be read) the families are simply absent.
//! Clock ticks are `USER_HZ`, which Linux fixes at 100 for everything it reports in `/proc`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `USER_HZ`: the unit of the tick counts in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<f64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    cpu_ticks: f64,
    start_ticks: f64,
    virtual_bytes: f64,
}

/// Parses `/proc/<pid>/stat`: the fields after the command name (which may hold spaces and
/// parentheses, so the split is at the last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after) = text.rsplit_once(')')?;
    // after[0] is field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some(Stat { cpu_ticks: field(14)? + field(15)?, start_ticks: field(22)?, virtual_bytes: field(23)? })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn parse_rss(status: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(kib * 1024.0)
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// The soft `Max open files` limit of `/proc/<pid>/limits`.
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

impl ProcessSample {
    /// Reads `/proc/self` now.
    #[must_use]
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
        #[allow(clippy::cast_precision_loss)]
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as f64);
        Self {
            cpu_seconds: stat.map(|s| s.cpu_ticks / TICKS_PER_SECOND),
            resident_memory_bytes: read("/proc/self/status").as_deref().and_then(parse_rss),
            virtual_memory_bytes: stat.map(|s| s.virtual_bytes),
            open_fds,
            max_fds: read("/proc/self/limits").as_deref().and_then(parse_max_fds),
            start_time_seconds: stat.zip(boot).map(|(s, boot)| boot + s.start_ticks / TICKS_PER_SECOND),
        }
    }
}

/// Encodes [`ProcessSample::read`] at every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = ProcessSample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", sample.resident_memory_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", sample.virtual_memory_bytes),
            ("process_open_fds", "Number of open file descriptors", sample.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", sample.max_fds),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (tenant (access) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    12 0 123456 987654321 3000 18446744073709551615";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed, Stat { cpu_ticks: 300.0, start_ticks: 123_456.0, virtual_bytes: 987_654_321.0 });
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n"), Some(2_097_152.0));
        assert_eq!(
            parse_max_fds("Max open files            1024                 524288               files\n"),
            Some(1024.0)
        );
        assert_eq!(parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured_on_linux() {
        let sample = ProcessSample::read();
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(sample.resident_memory_bytes.is_some_and(|b| b > 0.0));
        assert!(sample.open_fds.is_some_and(|n| n >= 1.0));
        assert!(sample.max_fds.is_some_and(|n| n >= 1.0));
        assert!(sample.start_time_seconds.is_some_and(|t| t > 1_500_000_000.0));
    }
}
