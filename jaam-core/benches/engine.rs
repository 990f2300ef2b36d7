//! Engine benchmark with the in-process fake provider; prints its figures.
//!
//! Run with:
//! ```text
//! cargo bench -p jaam-core --no-default-features --bench engine
//! ```
//! (no SDK features: the engine alone builds in release in about a minute).
//!
//! Measures, on this machine's disk:
//! 1. a no-change plan of 10,000 resources in 10 layers (target < 200 ms);
//! 2. apply of those 10,000 from empty with every outcome fsynced before it
//!    counts as done, against the disk's floor of ceil(N / parallelism) group
//!    commits x one fsync (target <= 1.5 x floor);
//! 3. peak RSS (target < 200 MB);
//! 4. 1,000 resources with 20 ms latency per operation, against
//!    max(critical path, N x latency / parallelism) (target <= 1.15 x).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaam_core::plan::{self, Plan};
use jaam_core::spec::{self, Config};
use jaam_core::state::{LocalStore, StateStore};
use jaam_core::testing::FakeProvider;
use jaam_core::{Context, Registry, apply};
use tokio_util::sync::CancellationToken;

// The same allocator as the `jaam` binary: the engine allocates per resource,
// and glibc's malloc was a third of the profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LAYERS: usize = 10;
const PARALLELISM: usize = 10;

fn specs(per_layer: usize) -> String {
    let mut text = String::with_capacity(per_layer * LAYERS * 64);
    for layer in 0..LAYERS {
        for index in 0..per_layer {
            text.push_str(&format!(
                "fake.l{layer}-{index}:\n  name: r-{layer}-{index}\n"
            ));
            if layer > 0 {
                text.push_str(&format!("  value: ${{fake.l{}-{index}.id}}\n", layer - 1));
            }
        }
    }
    text
}

fn load(registry: &Registry, text: String) -> (Config, Duration) {
    let started = Instant::now();
    let config = spec::load_sources(&[("bench.yaml".into(), text)], registry, &|_| None)
        .expect("bench specs");
    (config, started.elapsed())
}

async fn plan(registry: &Registry, store: &LocalStore, config: &Config) -> (Plan, Duration) {
    let started = Instant::now();
    let state = store.load().await.expect("load");
    let plan = plan::compute(
        registry,
        &Context {
            stack: "bench".into(),
        },
        config,
        state.as_ref(),
        &Default::default(),
        &|_| None,
    )
    .await
    .expect("plan");
    (plan, started.elapsed())
}

async fn apply(
    registry: &Registry,
    store: &dyn StateStore,
    plan: &Plan,
) -> (apply::Report, Duration) {
    let state = store.load().await.expect("load");
    let started = Instant::now();
    let report = apply::apply(
        registry,
        &Context {
            stack: "bench".into(),
        },
        store,
        state,
        plan,
        &apply::Options {
            parallelism: PARALLELISM,
        },
        None,
        CancellationToken::new(),
    )
    .await
    .expect("apply");
    assert!(report.succeeded());
    (report, started.elapsed())
}

/// The disk's cost of one small append + fdatasync, as the journal does it.
fn fsync_cost(directory: &std::path::Path) -> Duration {
    let path = directory.join("fsync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let line = [b'x'; 2048];
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        file.write_all(&line).expect("write");
        file.sync_data().expect("fdatasync");
    }
    started.elapsed() / rounds
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let directory = tempfile::tempdir_in(
        std::env::var("JAAM_BENCH_DIR")
            .map_or_else(|_| std::env::temp_dir(), std::path::PathBuf::from),
    )
    .expect("bench dir");
    let rounds: usize = std::env::var("JAAM_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let mut missed = 0;

    // 1-3: 10,000 resources.
    // The disk's speed drifts on a shared VM: probe it right before each round and
    // compare each round with its own floor.
    let mut fsyncs = Vec::new();
    let mut ratios = Vec::new();
    let mut applies = Vec::new();
    let mut commits = 0;
    let mut total = 0;
    let mut last = None;
    for round in 0..rounds {
        let fake = Arc::new(FakeProvider::new("fake").without_call_log());
        let registry = jaam_core::testing::registry(&[Arc::clone(&fake)]);
        let store = LocalStore::new(directory.path().join(format!("big-{round}.json")));
        let (config, load_time) = load(&registry, specs(1000));
        total = config.resources().len();
        runtime.block_on(async {
            let (initial, _) = plan(&registry, &store, &config).await;
            let fsync = fsync_cost(directory.path());
            let (report, apply_time) = apply(&registry, &store, &initial).await;
            let floor = fsync * total.div_ceil(PARALLELISM) as u32;
            fsyncs.push(fsync);
            ratios.push(apply_time.as_secs_f64() / floor.as_secs_f64());
            applies.push(apply_time);
            commits = report.journal_commits;
        });
        last = Some((fake, registry, store, config, load_time));
    }
    let apply_time = median(applies.clone());
    let fsync = median(fsyncs);
    let floor = fsync * total.div_ceil(PARALLELISM) as u32;
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "apply of {total} resources from empty, parallelism {PARALLELISM}, every outcome fsynced ({rounds} rounds):"
    );
    println!(
        "  median {:.0} ms (min {:.0}, max {:.0}); {commits} group commits; fsync on this disk {:.3} ms",
        millis(apply_time),
        millis(*applies.iter().min().expect("rounds")),
        millis(*applies.iter().max().expect("rounds")),
        millis(fsync)
    );
    println!(
        "  disk floor ceil(N/p) x fsync = {:.0} ms (median); ratio to each round's own floor: median {ratio:.2}, range {:.2}-{:.2} (target <= 1.5) {}",
        millis(floor),
        ratios[0],
        ratios[ratios.len() - 1],
        verdict(ratio <= 1.5)
    );
    missed += usize::from(ratio > 1.5);

    let (_fake, registry, store, config, load_time) = last.expect("rounds");
    runtime.block_on(async {
        // Where a no-change plan's time goes.
        let started = Instant::now();
        let state = store.load().await.expect("load").expect("state");
        let load_state = started.elapsed();
        let started = Instant::now();
        let text = jaam_core::state::StateFile::render(&state);
        let render_state = started.elapsed();
        let started = Instant::now();
        let _ = plan::compute(&registry, &Context { stack: "bench".into() }, &config, Some(&state), &Default::default(), &|_| None).await;
        let compute = started.elapsed();
        println!(
            "  (state of {} KB: load {:.0} ms, render {:.0} ms; refresh + diff {:.0} ms)",
            text.len() / 1024,
            load_state.as_secs_f64() * 1e3,
            render_state.as_secs_f64() * 1e3,
            compute.as_secs_f64() * 1e3
        );
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let (no_change, time) = plan(&registry, &store, &config).await;
            assert!(!no_change.has_changes());
            samples.push(time);
        }
        let best = median(samples);
        println!("no-change plan of {total} resources in {LAYERS} layers (load state + batched refresh + diff):");
        println!(
            "  median {:.0} ms of {rounds} (target < 200 ms) {}; spec parsing of the same: {:.0} ms",
            best.as_secs_f64() * 1e3,
            verdict(best < Duration::from_millis(200)),
            load_time.as_secs_f64() * 1e3
        );
        missed += usize::from(best >= Duration::from_millis(200));
    });
    let rss = peak_rss_mb();
    println!(
        "peak RSS: {rss:.0} MB (target < 200 MB) {}",
        verdict(rss < 200.0)
    );
    missed += usize::from(rss >= 200.0);

    // The same apply on a disk whose fsync costs 3.5 ms (emulated).
    if std::env::var_os("JAAM_BENCH_SKIP_SLOW_DISK").is_none() {
        let fake = Arc::new(FakeProvider::new("fake").without_call_log());
        let registry = jaam_core::testing::registry(&[Arc::clone(&fake)]);
        let extra = Duration::from_micros(3500).saturating_sub(fsync);
        let store = jaam_core::state::testing::SlowJournal {
            inner: LocalStore::new(directory.path().join("slow.json")),
            delay: extra,
        };
        let (config, _) = load(&registry, specs(1000));
        runtime.block_on(async {
            let (initial, _) = plan(&registry, &store.inner, &config).await;
            let (report, time) = apply(&registry, &store, &initial).await;
            let floor = Duration::from_micros(3500) * total.div_ceil(PARALLELISM) as u32;
            println!("the same apply on an emulated disk with 3.5 ms per fsync (the issue's figure for these machines):");
            println!(
                "  {:.0} ms; {} group commits; floor {:.0} ms; ratio {:.2}",
                millis(time),
                report.journal_commits,
                millis(floor),
                time.as_secs_f64() / floor.as_secs_f64()
            );
        });
    }
    if std::env::var_os("JAAM_BENCH_SKIP_LATENCY").is_some() {
        return;
    }
    // 4: 1,000 resources with 20 ms per operation.
    let latency = Duration::from_millis(20);
    let fake = Arc::new(
        FakeProvider::new("fake")
            .with_latency(latency)
            .without_call_log(),
    );
    let registry = jaam_core::testing::registry(&[Arc::clone(&fake)]);
    let store = LocalStore::new(directory.path().join("latency.json"));
    let (config, _) = load(&registry, specs(100));
    let count = config.resources().len();
    runtime.block_on(async {
        let (initial, _) = plan(&registry, &store, &config).await;
        let (_, time) = apply(&registry, &store, &initial).await;
        let critical = latency * LAYERS as u32;
        let throughput = latency * (count / PARALLELISM) as u32;
        let bound = critical.max(throughput);
        let ratio = time.as_secs_f64() / bound.as_secs_f64();
        println!("apply of {count} resources at 20 ms per operation, parallelism {PARALLELISM}:");
        println!(
            "  {:.0} ms; bound max(critical path {:.0} ms, N x latency / p {:.0} ms); ratio {ratio:.3} (target <= 1.15) {}",
            time.as_secs_f64() * 1e3,
            critical.as_secs_f64() * 1e3,
            throughput.as_secs_f64() * 1e3,
            verdict(ratio <= 1.15)
        );
        missed += usize::from(ratio > 1.15);
    });
    if missed > 0 {
        println!("{missed} target(s) missed on this machine (see the README for why)");
    }
}
