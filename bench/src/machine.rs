//! What the numbers were measured on, and the operator process's CPU time and memory from /proc.

use serde::Serialize;

/// The machine's description, as reported with every result.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process.
    pub nproc: usize,
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal, in MiB.
    pub memory_mib: u64,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// The API server's version (`gitVersion`), when a cluster was used.
    pub kube_apiserver: Option<String>,
}

impl Machine {
    /// Reads /proc (missing files give empty values: the report is still useful).
    #[must_use]
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cpu_model,
            memory_mib: memory_kib / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            kube_apiserver: None,
        }
    }
}

/// CPU time and memory of a process at one instant.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident set size (VmRSS), bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
#[must_use]
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Reads /proc/PID/stat (utime + stime) and /proc/PID/status (VmRSS, VmHWM).
#[must_use]
pub fn sample(pid: u32, ticks: f64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' field 3 (state) has index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some(ProcSample {
        cpu_seconds: (utime + stime) / ticks,
        rss_bytes: kib("VmRSS:")? * 1024,
        peak_rss_bytes: kib("VmHWM:").unwrap_or_default() * 1024,
    })
}

/// Bytes to MiB.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id(), clock_ticks()).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.peak_rss_bytes >= me.rss_bytes);
        assert!(me.cpu_seconds >= 0.0);
    }

    #[test]
    fn describes_the_machine() {
        let machine = Machine::describe();
        assert!(machine.nproc >= 1);
        assert!(machine.memory_mib > 0);
    }
}
