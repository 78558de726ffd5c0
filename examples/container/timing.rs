//! Step timings (`--timings`): each step's end on `CLOCK_MONOTONIC`,
//! relative to the parent's clock just before `clone3`, so both processes'
//! figures share one origin.

use super::sys::monotonic_ns;

/// Whether a step was the init's own work or a wait on the parent (one
/// request's round trip: the parent's handler plus both socket hops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The init's own work (exec, mounts, pivot, …).
    Work,
    /// A request and its reply.
    Sync,
}

/// The steps so far: `(label, kind, end in ns since t0)`.
#[derive(Debug)]
pub struct Timeline {
    t0: u64,
    last: u64,
    steps: Vec<(String, Kind, u64, u64)>,
}

impl Timeline {
    /// A timeline whose origin is `t0` (a [`monotonic_ns`] reading).
    pub fn new(t0: u64) -> Self {
        Timeline {
            t0,
            last: t0,
            steps: Vec::new(),
        }
    }

    /// Ends a step now (it began where the previous one ended).
    pub fn mark(&mut self, label: &str, kind: Kind) {
        let now = monotonic_ns();
        self.steps.push((
            label.to_string(),
            kind,
            self.last - self.t0,
            now - self.last,
        ));
        self.last = now;
    }

    /// Prints the table and the split between the init's work and the sync
    /// conversation.
    pub fn print(&self, title: &str) {
        let ms = |ns: u64| ns as f64 / 1e6;
        out!("timings, {title}:");
        out!("    {:<52} {:>8} {:>8}  kind", "step", "start", "took");
        let (mut sync, mut work) = (0, 0);
        for (label, kind, start, took) in &self.steps {
            let k = match kind {
                Kind::Work => {
                    work += took;
                    "init"
                }
                Kind::Sync => {
                    sync += took;
                    "sync"
                }
            };
            out!(
                "    {label:<52} {:>8.3} {:>8.3}  {k}",
                ms(*start),
                ms(*took)
            );
        }
        let total = self.last - self.t0;
        out!(
            "timing: spawn→execve {:.3} ms, sync conversation {:.3} ms ({:.0}%), init's own work {:.3} ms",
            ms(total),
            ms(sync),
            100.0 * sync as f64 / total.max(1) as f64,
            ms(work)
        );
    }
}
