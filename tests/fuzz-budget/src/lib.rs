//! Fixed-budget fuzzing for `cargo test` on stable Rust: arbtest under a time budget and a hang watchdog, plus a per-thread allocation meter.
//!
//! CI runs every property for a few seconds, so the budget is fixed by the test, not by
//! arbtest's 100 ms default; `CLAWLINK_FUZZ_BUDGET_MS` raises it for a longer run by hand.
//! A failing case prints arbtest's seed; `ARBTEST_SEED=<seed>` replays exactly that case.
//!
//! A parser stuck in a loop would otherwise hang CI until its global timeout, with no hint
//! of the input: every property runs on a thread of its own, and the caller's thread fails
//! the test when one case runs longer than [`HANG_LIMIT`], printing that case's input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use arbitrary::{self, Arbitrary, Unstructured};

/// Overrides every property's time budget (milliseconds), for longer runs outside CI.
pub const BUDGET_ENV: &str = "CLAWLINK_FUZZ_BUDGET_MS";

/// How long one case may run before it counts as a hang. Generous for a debug build on a
/// loaded 2-core machine: every parser here answers a case in well under a millisecond.
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

/// How much arbitrary data one case gets at most; parsers are also tested on large inputs
/// explicitly where a size limit matters.
const MAX_CASE_BYTES: u32 = 16 * 1024;

/// What a run did, for the test's own assertions and its log line.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Cases whose input could be generated and that ran to the end.
    pub cases: u64,
    pub elapsed: Duration,
}

/// The case the property thread is running, shared with the watchdog.
#[derive(Default)]
struct Progress {
    case_started: Option<Instant>,
    input: String,
    cases: u64,
}

/// Runs `property` on arbitrary values of `T` for `budget` (or [`BUDGET_ENV`]) and fails
/// the test if a case panics or runs longer than [`HANG_LIMIT`].
///
/// `name` labels the log line and the failure message. Returns how many cases ran; a run
/// of zero cases is a failure, since it would prove nothing.
pub fn check<T, P>(name: &str, budget: Duration, property: P) -> Report
where
    T: for<'a> Arbitrary<'a> + Debug,
    P: Fn(T) + Send + 'static,
{
    run(name, budget, HANG_LIMIT, property)
}

fn run<T, P>(name: &str, budget: Duration, hang_limit: Duration, property: P) -> Report
where
    T: for<'a> Arbitrary<'a> + Debug,
    P: Fn(T) + Send + 'static,
{
    let budget = std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(budget);
    let progress = Arc::new(Mutex::new(Progress::default()));
    let shared = Arc::clone(&progress);
    let started = Instant::now();
    let runner = std::thread::Builder::new()
        .name(format!("fuzz {name}"))
        .spawn(move || {
            arbtest::arbtest(|u| {
                let input: T = u.arbitrary()?;
                {
                    let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                    p.case_started = Some(Instant::now());
                    p.input = shown(&input);
                }
                property(input);
                let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                p.case_started = None;
                p.cases += 1;
                Ok(())
            })
            .size_max(MAX_CASE_BYTES)
            .budget(budget)
            .run();
        })
        .expect("spawning the fuzz thread");
    loop {
        if runner.is_finished() {
            if let Err(panic) = runner.join() {
                // arbtest has printed the seed; the panic message is the property's.
                std::panic::resume_unwind(panic);
            }
            break;
        }
        let (hung_for, input) = {
            let p = progress.lock().unwrap_or_else(|e| e.into_inner());
            (p.case_started.map(|t| t.elapsed()), p.input.clone())
        };
        if let Some(running) = hung_for.filter(|d| *d > hang_limit) {
            // The runner thread cannot be stopped; failing here ends the test binary's
            // wait for it, and the process exit ends the thread.
            panic!(
                "fuzz {name}: one case has run for {running:?} (limit {hang_limit:?}), a hang; input: {input}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = Report {
        cases: progress.lock().unwrap_or_else(|e| e.into_inner()).cases,
        elapsed: started.elapsed(),
    };
    eprintln!(
        "fuzz {name}: {} cases in {:.2?}",
        report.cases, report.elapsed
    );
    assert!(
        report.cases > 0,
        "fuzz {name}: no case ran within {budget:?}"
    );
    report
}

/// The input as the failure message shows it, cut so a huge one does not bury the message.
fn shown<T: Debug>(input: &T) -> String {
    const SHOWN_CHARS: usize = 2_000;
    let text = format!("{input:?}");
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text,
    }
}

/// An arbitrary JSON value of bounded depth, for parsers that read JSON: its `Debug` is the
/// JSON text, so a failing case shows what was sent.
#[derive(Clone, PartialEq)]
pub struct Json(pub serde_json::Value);

/// How deep [`Json`] nests: deep enough for every shape the parsers expect, shallow enough
/// that a case stays small. Nesting beyond serde_json's limit is tested on its own.
const JSON_DEPTH: u32 = 4;

impl Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        json_value(u, JSON_DEPTH).map(Json)
    }
}

/// A JSON value whose object keys are often ones the parsers look for (`keys`), so that
/// cases reach past "missing field" into the typed fields.
pub fn json_with_keys(
    u: &mut Unstructured<'_>,
    depth: u32,
    keys: &[&str],
) -> arbitrary::Result<serde_json::Value> {
    use serde_json::Value;
    let leaf_or_branch = if depth == 0 { 5 } else { 7 };
    Ok(match u.choose_index(leaf_or_branch)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary::<bool>()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary::<f64>()?)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        4 => Value::String(u.arbitrary::<String>()?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            let items = (0..len)
                .map(|_| json_with_keys(u, depth - 1, keys))
                .collect::<arbitrary::Result<_>>()?;
            Value::Array(items)
        }
        _ => {
            let len = u.int_in_range(0..=6)?;
            let mut object = serde_json::Map::new();
            for _ in 0..len {
                let key = if !keys.is_empty() && u.ratio(3, 4)? {
                    (*u.choose(keys)?).to_owned()
                } else {
                    u.arbitrary::<String>()?
                };
                object.insert(key, json_with_keys(u, depth - 1, keys)?);
            }
            Value::Object(object)
        }
    })
}

/// A JSON value of at most `depth` levels of arrays and objects, with arbitrary keys.
pub fn json_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<serde_json::Value> {
    json_with_keys(u, depth, &[])
}

/// A global allocator that counts, per thread, the bytes live and their peak, so a test can
/// say how much one call allocated. Install it in a test binary with
/// `#[global_allocator] static METER: MeteredAllocator = MeteredAllocator;`.
pub struct MeteredAllocator;

static METER_INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised cells without destructors: safe to touch from inside the allocator.
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for MeteredAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        METER_INSTALLED.store(true, Ordering::Relaxed);
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        METER_INSTALLED.store(true, Ordering::Relaxed);
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the most bytes it held allocated at once on this
/// thread, beyond what was live before. Panics unless [`MeteredAllocator`] is installed.
pub fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let baseline = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(baseline));
    let result = f();
    assert!(
        METER_INSTALLED.load(Ordering::Relaxed),
        "peak_allocation needs `#[global_allocator] static METER: MeteredAllocator = MeteredAllocator;` in the test binary"
    );
    let peak = PEAK_BYTES.with(Cell::get);
    (result, (peak - baseline).max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static METER: MeteredAllocator = MeteredAllocator;

    fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_property_runs_many_cases_within_its_budget() {
        let report = check("u8 round trip", Duration::from_millis(200), |n: u8| {
            assert_eq!(n.to_string().parse::<u8>().unwrap(), n)
        });
        assert!(report.cases > 10, "{report:?}");
        assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
    }

    #[test]
    fn a_failing_case_fails_the_test_with_the_property_message() {
        let failure = std::panic::catch_unwind(|| {
            check("always fails", Duration::from_millis(200), |_: u8| {
                panic!("the property said no")
            })
        })
        .expect_err("the property fails on every input");
        let message = panic_text(&*failure);
        assert!(message.contains("the property said no"), "{message}");
    }

    #[test]
    fn a_case_that_never_ends_fails_the_test_naming_its_input() {
        let failure = std::panic::catch_unwind(|| {
            run(
                "never ends",
                Duration::from_millis(100),
                Duration::from_millis(300),
                |n: u8| loop {
                    // Sleeps rather than spins: the thread outlives the test.
                    std::thread::sleep(Duration::from_millis(50 + u64::from(n)));
                },
            )
        })
        .expect_err("the watchdog fails the run");
        let message = panic_text(&*failure);
        assert!(message.contains("a hang; input: "), "{message}");
    }

    #[test]
    fn the_meter_sees_a_large_allocation_and_not_a_small_one() {
        let (_, big) = peak_allocation(|| vec![0u8; 1 << 20].len());
        assert!(big >= 1 << 20, "{big}");
        let (_, small) = peak_allocation(|| 2 + 2);
        assert!(small < 1024, "{small}");
    }

    #[test]
    fn long_inputs_are_shown_cut() {
        let shown = shown(&"x".repeat(10_000));
        assert!(shown.len() < 2_100, "{}", shown.len());
        assert!(shown.ends_with("bytes in all)"), "{shown}");
    }
}
