//! Fault injection for the crash tests: `GN_BURN_FAULT` stops a run dead at a chosen point so
//! that a test can SIGKILL it exactly there and check what `--resume` finds. Values:
//!
//! - `pause-at-step:N`: the training thread stops before optimizer step `N` (0-based, counted
//!   over the whole run as the learning-rate schedule counts them);
//! - `pause-in-checkpoint:KIND:EPOCH`: the checkpoint writer of `KIND` (`model`, `optim` or
//!   `scheduler`) stops halfway through writing epoch `EPOCH`'s file.
//!
//! At the point, `GN_BURN_FAULT paused: ...` is written to stderr and the thread sleeps until
//! the process is killed (after 10 minutes it aborts, so that a forgotten child ends).
//! Unset, nothing changes.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// The variable.
pub const FAULT_ENV: &str = "GN_BURN_FAULT";

#[derive(Debug, PartialEq, Eq)]
enum Fault {
    Step(usize),
    Checkpoint(String, usize),
}

fn parse(value: &str) -> Option<Fault> {
    let mut parts = value.trim().split(':');
    let fault = match (parts.next()?, parts.next(), parts.next()) {
        ("pause-at-step", Some(step), None) => Fault::Step(step.parse().ok()?),
        ("pause-in-checkpoint", Some(kind), Some(epoch)) => {
            Fault::Checkpoint(kind.to_string(), epoch.parse().ok()?)
        }
        _ => return None,
    };
    parts.next().is_none().then_some(fault)
}

fn fault() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let value = std::env::var(FAULT_ENV).ok()?;
            // A misspelt fault must not let the test run as if there were none.
            Some(parse(&value).unwrap_or_else(|| {
                panic!(
                    "{FAULT_ENV}={value:?}: expected pause-at-step:N or \
                     pause-in-checkpoint:KIND:EPOCH"
                )
            }))
        })
        .as_ref()
}

fn pause(what: String) -> ! {
    let _ = writeln!(std::io::stderr(), "{FAULT_ENV} paused: {what}");
    std::thread::sleep(Duration::from_secs(600));
    std::process::abort()
}

/// Before optimizer step `step`.
pub(crate) fn before_step(step: usize) {
    if fault() == Some(&Fault::Step(step)) {
        pause(format!("before optimizer step {step}"));
    }
}

/// Halfway through writing `kind`'s checkpoint of `epoch`.
pub(crate) fn mid_checkpoint(kind: &str, epoch: usize) {
    if let Some(Fault::Checkpoint(k, e)) = fault()
        && k == kind
        && *e == epoch
    {
        pause(format!("writing the {kind} checkpoint of epoch {epoch}"));
    }
}

#[cfg(test)]
mod tests {
    use super::{Fault, parse};

    #[test]
    fn parses_faults() {
        assert_eq!(parse("pause-at-step:9"), Some(Fault::Step(9)));
        assert_eq!(
            parse("pause-in-checkpoint:optim:2"),
            Some(Fault::Checkpoint("optim".into(), 2))
        );
        for bad in [
            "",
            "pause-at-step",
            "pause-at-step:x",
            "pause-at-step:1:2",
            "pause-in-checkpoint:optim",
            "pause-in-checkpoint:optim:2:3",
            "kill:1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
