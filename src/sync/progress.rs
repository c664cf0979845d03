//! The initial sync's progress log: height, percent, rate, ETA and the write cache's fill, every
//! 10 seconds; and the moment the index catches up with the daemon, with where the block
//! processor's time went (its stages), so a slow sync says what held it back.

use std::time::{Duration, Instant};

/// The block processor's time by stage since it started (or last unwound). Stages run one after
/// another on its thread, so they add up to its wall time; `waiting` large means the daemon or
/// the prefetcher held the sync back, the others that the processor did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stages {
    /// Waiting for the next block from the prefetcher.
    pub waiting: Duration,
    /// Looking up the outputs a block spends that only the database has.
    pub resolving: Duration,
    /// Applying blocks to the write cache.
    pub applying: Duration,
    /// Building flush batches (sorting rows, filling the batch) and writing them.
    pub building: Duration,
    pub writing: Duration,
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Duration| d.as_secs_f64();
        write!(
            f,
            "waiting for blocks {:.1} s, resolving spends from disk {:.1} s, applying {:.1} s, building batches {:.1} s, \
             writing them {:.1} s",
            s(self.waiting),
            s(self.resolving),
            s(self.applying),
            s(self.building),
            s(self.writing)
        )
    }
}

pub struct Progress {
    last: Instant,
    last_height: u32,
    last_txs: u64,
    /// Whether the last block reached the daemon's tip, to log the moment sync completes.
    caught_up: bool,
    started: Instant,
    pub stages: Stages,
}

impl Progress {
    pub fn new(height: u32, tx_count: u64) -> Progress {
        Progress {
            last: Instant::now(),
            last_height: height,
            last_txs: tx_count,
            caught_up: false,
            started: Instant::now(),
            stages: Stages::default(),
        }
    }

    /// Whether the last block applied reached the daemon's tip.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Starts counting again from `height` (after an unwind).
    pub fn restart(&mut self, height: u32, tx_count: u64) {
        *self = Progress::new(height, tx_count);
    }

    /// Reports a block applied at `height`; `cache` is the write cache's (bytes, limit).
    pub fn block(&mut self, height: u32, tx_count: u64, daemon_tip: u32, cache: (usize, usize)) {
        let caught_up = height >= daemon_tip;
        let elapsed = self.last.elapsed();
        let was_caught_up = std::mem::replace(&mut self.caught_up, caught_up);
        if caught_up && !was_caught_up {
            tracing::info!(
                "caught up with the daemon at height {height} ({tx_count} transactions indexed) after {:.1} s: {}",
                self.started.elapsed().as_secs_f64(),
                self.stages
            );
        } else if caught_up {
            tracing::info!("indexed block {height}");
        } else if elapsed >= Duration::from_secs(10) {
            let secs = elapsed.as_secs_f64();
            let bps = height.saturating_sub(self.last_height) as f64 / secs;
            let tps = tx_count.saturating_sub(self.last_txs) as f64 / secs;
            let pct = 100.0 * height as f64 / daemon_tip.max(1) as f64;
            let left = daemon_tip.saturating_sub(height) as f64;
            let eta = if bps > 0.0 { format_duration(Duration::from_secs_f64(left / bps)) } else { "unknown".into() };
            let (bytes, limit) = cache;
            tracing::info!(
                "sync: height {height}/{daemon_tip} ({pct:.2}%), {bps:.1} blocks/s, {tps:.0} tx/s, ETA {eta}, cache {:.0} MB ({:.0}% of CACHE_MB); {}",
                bytes as f64 / 1e6,
                100.0 * bytes as f64 / limit.max(1) as f64,
                self.stages
            );
        } else {
            return;
        }
        self.last = Instant::now();
        self.last_height = height;
        self.last_txs = tx_count;
    }
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(42)), "42s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(format_duration(Duration::from_secs(3 * 3600 + 7 * 60)), "3h07m");
    }
}
