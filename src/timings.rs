//! Where a run's time goes: wall and CPU seconds per stage (load, tokenize, forward, capture,
//! each analysis' update and finish, merge, render), recorded only when `--timings` asks.
//!
//! Timings are kept apart from results.json and its provenance: they are not reproducible,
//! and a results file must be the same bytes on every run. Stages are recorded on the thread
//! that runs the pipeline; CPU time is the whole process's, so a stage's CPU time includes the
//! matrix kernels' worker threads and can exceed its wall time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

static ENABLED: AtomicBool = AtomicBool::new(false);
static STAGES: Mutex<Vec<Stage>> = Mutex::new(Vec::new());

/// One stage's total over a run, as `timings.json` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stage {
    /// The stage: `load`, `tokenize` (`tokenize (count)`: the counting pass), `forward`, `forward (second models)`, `capture`,
    /// `analyses[I] KIND update`, `analyses[I] KIND finish`, `read partials`, `merge`,
    /// `render`.
    pub stage: String,
    /// How many times the stage ran (once per batch for the forward, once per text for an
    /// update).
    pub calls: u64,
    /// Wall-clock seconds, summed over its calls.
    pub wall_s: f64,
    /// CPU seconds of the whole process (every thread) while it ran, summed over its calls;
    /// `null` where the platform has no process CPU clock.
    pub cpu_s: Option<f64>,
}

/// `timings.json`: a run's stages in the order they first ran.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// The command that ran (`report` or `merge`).
    pub command: String,
    /// Wall-clock seconds from the first stage's start to the file's writing.
    pub total_wall_s: f64,
    /// Process CPU seconds over the same span (`null` where unmeasured).
    pub total_cpu_s: Option<f64>,
    /// Threads the matrix kernels may use (`RAYON_NUM_THREADS` or the cores), for reading
    /// CPU against wall time.
    pub threads: usize,
    /// The process's peak resident memory so far, in bytes: the kernel's high-water mark of
    /// this program's own pages (`VmHWM`), memory-mapped weights included. Unlike
    /// `getrusage`, it does not count the pages of a large parent that started this
    /// process. `null` where the platform does not report it.
    pub peak_rss_bytes: Option<u64>,
    /// Each stage's totals.
    pub stages: Vec<Stage>,
}

/// Starts recording for this process.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
    *START.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), cpu_seconds()));
}

static START: Mutex<Option<(Instant, Option<f64>)>> = Mutex::new(None);

/// Whether `--timings` asked for a record.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A running stage; its time is added to the stage's total when it drops.
pub struct Span {
    stage: String,
    wall: Instant,
    cpu: Option<f64>,
}

/// Times a stage until the returned guard drops; `None` (and no clock read) when timings
/// are off. `name` is only called when they are on.
pub fn span(name: impl FnOnce() -> String) -> Option<Span> {
    enabled().then(|| Span {
        stage: name(),
        wall: Instant::now(),
        cpu: cpu_seconds(),
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = self.cpu.zip(cpu_seconds()).map(|(a, b)| b - a);
        let mut stages = STAGES.lock().unwrap_or_else(|e| e.into_inner());
        match stages.iter_mut().find(|s| s.stage == self.stage) {
            Some(s) => {
                s.calls += 1;
                s.wall_s += wall;
                s.cpu_s = s.cpu_s.zip(cpu).map(|(a, b)| a + b);
            }
            None => stages.push(Stage {
                stage: std::mem::take(&mut self.stage),
                calls: 1,
                wall_s: wall,
                cpu_s: cpu,
            }),
        }
    }
}

/// The record so far, for `command`.
pub fn snapshot(command: &str) -> Timings {
    let start = *START.lock().unwrap_or_else(|e| e.into_inner());
    let (wall, cpu) = match start {
        Some((t, c)) => (
            t.elapsed().as_secs_f64(),
            c.zip(cpu_seconds()).map(|(a, b)| b - a),
        ),
        None => (0.0, None),
    };
    // Microseconds are all a clock read around a stage resolves.
    let us = |x: f64| (x * 1e6).round() / 1e6;
    let stages = STAGES.lock().unwrap_or_else(|e| e.into_inner());
    Timings {
        command: command.to_string(),
        total_wall_s: us(wall),
        total_cpu_s: cpu.map(us),
        threads: candle_core::utils::get_num_threads(),
        peak_rss_bytes: peak_rss(),
        stages: stages
            .iter()
            .map(|s| Stage {
                wall_s: us(s.wall_s),
                cpu_s: s.cpu_s.map(us),
                ..s.clone()
            })
            .collect(),
    }
}

impl Timings {
    /// The table `--timings` prints: stages by wall time, most first, each with its share of
    /// the forward's wall time (the yardstick: an analysis at 10% costs a tenth of a forward).
    pub fn table(&self) -> String {
        let forward: f64 = self
            .stages
            .iter()
            .filter(|s| s.stage == "forward")
            .map(|s| s.wall_s)
            .sum();
        let mut rows: Vec<&Stage> = self.stages.iter().collect();
        rows.sort_by(|a, b| b.wall_s.total_cmp(&a.wall_s).then(a.stage.cmp(&b.stage)));
        let width = rows.iter().map(|s| s.stage.len()).max().unwrap_or(5).max(5);
        let mut out = format!(
            "{:<width$} {:>9} {:>9} {:>10} {:>7}\n",
            "stage", "wall s", "cpu s", "% forward", "calls"
        );
        for s in rows {
            let share = if forward > 0.0 {
                format!("{:.1}", 100.0 * s.wall_s / forward)
            } else {
                "-".into()
            };
            let cpu = s.cpu_s.map_or("-".into(), |c| format!("{c:.3}"));
            out += &format!(
                "{:<width$} {:>9.3} {cpu:>9} {share:>10} {:>7}\n",
                s.stage, s.wall_s, s.calls
            );
        }
        let cpu = self.total_cpu_s.map_or("-".into(), |c| format!("{c:.3}"));
        out += &format!("{:<width$} {:>9.3} {cpu:>9}\n", "total", self.total_wall_s);
        if let Some(peak) = self.peak_rss_bytes {
            out += &format!("peak resident memory: {:.0} MB\n", peak as f64 / 1e6);
        }
        out
    }

    /// The file's bytes: pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// The process's CPU time (all threads), in seconds.
#[cfg(unix)]
fn cpu_seconds() -> Option<f64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
    ok.then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
}

#[cfg(not(unix))]
fn cpu_seconds() -> Option<f64> {
    None
}

/// `VmHWM` of `/proc/self/status`, in bytes (Linux; `None` elsewhere or unreadable).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_hwm(&status)
}

/// The `VmHWM:   1234 kB` line of a `/proc/PID/status` text, in bytes.
fn parse_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_add_up_per_stage_and_the_table_sorts_by_cost() {
        let t = Timings {
            command: "report".into(),
            total_wall_s: 3.0,
            total_cpu_s: Some(5.0),
            threads: 2,
            peak_rss_bytes: Some(512_000_000),
            stages: vec![
                Stage {
                    stage: "load".into(),
                    calls: 1,
                    wall_s: 0.5,
                    cpu_s: Some(0.5),
                },
                Stage {
                    stage: "forward".into(),
                    calls: 3,
                    wall_s: 2.0,
                    cpu_s: Some(4.0),
                },
            ],
        };
        let table = t.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("forward"), "{table}");
        assert!(
            lines[2].starts_with("load") && lines[2].contains("25.0"),
            "{table}"
        );
        assert!(lines[3].starts_with("total"), "{table}");
        assert_eq!(lines[4], "peak resident memory: 512 MB", "{table}");
        assert_eq!(
            parse_hwm("VmPeak:\t 9 kB\nVmHWM:\t  2048 kB\nVmRSS: 1 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_hwm("VmRSS: 1 kB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(peak_rss().is_some_and(|b| b > 0));
        // Off: no span, no record.
        assert!(span(|| unreachable!()).is_none());
    }
}
