//! `afx-bench`: asyncfutex measured side by side with the other ways two
//! processes can notify each other, in one run, on this machine.
//!
//! `cargo run --release -p afx-bench -- [--quick] [--out DIR] [--wait-load X] [--only SECTIONS]`
//!
//! Sections: `pingpong` (round trips), `waitv` (round trips through a wait
//! on any of 8 words), `fastpath`, `scale`, `throughput`.
//!
//! Every measurement runs in a fresh forked process (its own backend,
//! runtime and CPU affinity); the orchestrator stays single-threaded.

mod fastpath;
mod pingpong;
mod scale;
mod svg;
mod sys;
mod throughput;
mod via;
mod waitv;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use pingpong::{Mech, Order, Rt};
use via::Via;

struct Config {
    quick: bool,
    out: PathBuf,
    wait_load: Option<f64>,
    only: Option<Vec<String>>,
    rounds_same: u32,
    rounds_cross: u32,
    cheap_iters: u64,
    arm_iters: u64,
    scale_ns: Vec<u32>,
    tp_messages: u32,
    passes: u32,
    scale_repeats: u32,
}

fn usage() -> ! {
    eprintln!(
        "usage: afx-bench [--quick] [--out DIR] [--wait-load LOAD1] [--only pingpong,waitv,fastpath,scale,throughput]\n\
         --quick       small sample counts (under a minute)\n\
         --out DIR     where results.json and the SVG plots go (default target/afx-bench)\n\
         --wait-load X first wait (up to 10 min) until the 1-minute loadavg is below X"
    );
    std::process::exit(2)
}

fn config() -> Config {
    let mut quick = false;
    let mut out = PathBuf::from("target/afx-bench");
    let mut wait_load = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--wait-load" => {
                wait_load = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_else(|| usage())
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            _ => usage(),
        }
    }
    Config {
        quick,
        out,
        wait_load,
        only,
        rounds_same: if quick { 20_000 } else { 200_000 },
        rounds_cross: if quick { 5_000 } else { 100_000 },
        cheap_iters: if quick { 200_000 } else { 2_000_000 },
        arm_iters: if quick { 2_000 } else { 20_000 },
        scale_ns: vec![1, 100, 1_000, 10_000],
        tp_messages: if quick { 200_000 } else { 2_000_000 },
        passes: if quick { 1 } else { 4 },
        scale_repeats: if quick { 1 } else { 5 },
    }
}

impl Config {
    fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }
}

const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Serialize)]
struct Placement {
    name: &'static str,
    label: String,
    cpus: (usize, usize),
}

#[derive(Serialize, Default)]
struct Latency {
    placement: &'static str,
    id: String,
    label: String,
    /// `arm_first` / `natural` for the asyncfutex rows (see
    /// `pingpong::Order`); `None` for mechanisms without an arming step,
    /// whose one figure is the baseline for both orders.
    order: Option<&'static str>,
    /// asyncfutex backend (`io_uring`, `thread`) of the asyncfutex rows.
    backend: Option<&'static str>,
    /// io_uring submit mode (`caller`, `thread`: `AFX_URING_SUBMIT`).
    submit: Option<&'static str>,
    rounds: usize,
    cpus_seen: Option<(i32, i32)>,
    median_ns: Option<u64>,
    p99_ns: Option<u64>,
    p999_ns: Option<u64>,
    min_ns: Option<u64>,
    mean_ns: Option<f64>,
    ratio_to_raw: Option<f64>,
    /// The non-asyncfutex mechanism an asyncfutex row is compared with
    /// (`eventfd_epoll`, `tokio_eventfd_ct`, `tokio_eventfd_mt`), and the
    /// ratio of medians against it (same run, same placement).
    base: Option<String>,
    ratio_to_base: Option<f64>,
    /// Context switches of the measuring process's threads per round trip.
    ctx_switches_a: Option<f64>,
    error: Option<String>,
    /// (latency µs, cumulative fraction) up to p99.9.
    cdf: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct Throughput {
    placement: &'static str,
    id: String,
    label: String,
    result: Option<throughput::TpResult>,
    error: Option<String>,
}

#[derive(Serialize)]
struct Target {
    target: String,
    limit: String,
    measured: String,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    kernel: String,
    cpus: Vec<usize>,
    loadavg_start: [f64; 3],
    loadavg_end: [f64; 3],
    load_wait: String,
    placements: Vec<Placement>,
    latency: Vec<Latency>,
    /// Round trips through a wait on 1 of 8 words (section `waitv`): the
    /// same fields as `latency`; `base` of a vector-wait row is the 8
    /// single waits on the same backend.
    waitv: Vec<Latency>,
    fastpath: Vec<fastpath::FastPath>,
    fastpath_errors: Vec<String>,
    scale: Vec<scale::ScaleResult>,
    scale_errors: Vec<String>,
    throughput: Vec<Throughput>,
    targets: Vec<Target>,
    elapsed_s: f64,
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wait_for_load(limit: f64) -> String {
    let start = Instant::now();
    loop {
        let l = sys::loadavg()[0];
        if l < limit {
            return format!(
                "waited {:.0} s for loadavg1 < {limit} (now {l:.2})",
                start.elapsed().as_secs_f64()
            );
        }
        if start.elapsed() > Duration::from_secs(600) {
            return format!("gave up after 600 s: loadavg1 still {l:.2} (wanted < {limit})");
        }
        eprintln!("loadavg1 {l:.2} >= {limit}, waiting...");
        std::thread::sleep(Duration::from_secs(15));
    }
}

fn latency_of(
    placement: &'static str,
    mech: Mech,
    r: Result<pingpong::RunResult, String>,
) -> Latency {
    let base = mech.base().map(Mech::id);
    row(
        placement,
        mech.id(),
        mech.label(),
        mech.order(),
        mech.via(),
        base,
        r,
    )
}

/// A `waitv` section row.
fn waitv_latency(
    placement: &'static str,
    mech: waitv::WMech,
    r: Result<pingpong::RunResult, String>,
) -> Latency {
    let base = mech.base().map(waitv::WMech::id);
    row(
        placement,
        mech.id(),
        mech.label(),
        mech.order(),
        mech.via(),
        base,
        r,
    )
}

/// A latency row of either section: the mechanism's description, then the
/// run's figures.
fn row(
    placement: &'static str,
    id: String,
    label: String,
    order: Option<Order>,
    via: Option<Via>,
    base: Option<String>,
    r: Result<pingpong::RunResult, String>,
) -> Latency {
    let l = Latency {
        placement,
        id,
        label,
        order: order.map(Order::name),
        backend: via.map(Via::backend),
        submit: via.and_then(Via::submit_name),
        base,
        ..Default::default()
    };
    with_samples(l, r)
}

/// Fills a row's figures from a run's samples (or its error).
fn with_samples(mut l: Latency, r: Result<pingpong::RunResult, String>) -> Latency {
    match r {
        Err(e) => l.error = Some(e),
        Ok(r) if r.samples_ns.is_empty() => l.error = Some("no samples".into()),
        Ok(r) => {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
            for &s in &r.samples_ns {
                let _ = h.record(u64::from(s).max(1));
            }
            l.rounds = r.samples_ns.len();
            l.cpus_seen = Some(r.cpus);
            l.ctx_switches_a = Some(r.ctx_switches_a);
            l.median_ns = Some(h.value_at_quantile(0.5));
            l.p99_ns = Some(h.value_at_quantile(0.99));
            l.p999_ns = Some(h.value_at_quantile(0.999));
            l.min_ns = Some(h.min());
            l.mean_ns = Some(h.mean());
            let mut qs: Vec<f64> = (0..=99).map(|i| f64::from(i) / 100.0).collect();
            qs.extend([0.995, 0.999]);
            l.cdf = qs
                .into_iter()
                .map(|q| (h.value_at_quantile(q) as f64 / 1e3, q))
                .collect();
        }
    }
    l
}

fn us(ns: Option<u64>) -> String {
    ns.map_or("-".into(), |v| format!("{:.2}", v as f64 / 1e3))
}

/// `--verify FILE`: checks that a results.json parses and that every
/// mechanism (of the `pingpong` and `waitv` sections), fast path, scale
/// point and transport has numbers.
fn verify(path: &str) -> ExitCode {
    let problems = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
    {
        Err(e) => vec![format!("{path}: {e}")],
        Ok(v) => verify_value(&v),
    };
    if problems.is_empty() {
        println!("{path}: complete");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            println!("{p}");
        }
        ExitCode::FAILURE
    }
}

fn verify_value(v: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let num = |x: &serde_json::Value, k: &str| x.get(k).and_then(serde_json::Value::as_f64);
    let placements: Vec<String> = v["placements"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if placements.is_empty() {
        problems.push("no placements".into());
    }
    let latency = v["latency"].as_array().cloned().unwrap_or_default();
    for p in &placements {
        for mech in Mech::all() {
            let id = mech.id();
            let found = latency
                .iter()
                .find(|l| l["placement"] == p.as_str() && l["id"] == id.as_str());
            let Some(l) = found else {
                problems.push(format!("latency {p} {id}: missing"));
                continue;
            };
            for k in ["median_ns", "p99_ns", "p999_ns", "ctx_switches_a"] {
                if num(l, k).is_none() {
                    problems.push(format!("latency {p} {id}: no {k} ({})", l["error"]));
                }
            }
            if l["order"].as_str() != mech.order().map(Order::name) {
                problems.push(format!("latency {p} {id}: order {}", l["order"]));
            }
            if let Some(via) = mech.via() {
                if l["backend"].as_str() != Some(via.backend())
                    || l["submit"].as_str() != via.submit_name()
                {
                    problems.push(format!(
                        "latency {p} {id}: backend {} submit {}",
                        l["backend"], l["submit"]
                    ));
                }
                for k in ["ratio_to_raw", "ratio_to_base"] {
                    if num(l, k).is_none() {
                        problems.push(format!("latency {p} {id}: no {k}"));
                    }
                }
            }
        }
    }
    let waitv = v["waitv"].as_array().cloned().unwrap_or_default();
    for p in &placements {
        for mech in waitv::WMech::all() {
            let id = mech.id();
            let found = waitv
                .iter()
                .find(|l| l["placement"] == p.as_str() && l["id"] == id.as_str());
            let Some(l) = found else {
                problems.push(format!("waitv {p} {id}: missing"));
                continue;
            };
            for k in [
                "median_ns",
                "p99_ns",
                "p999_ns",
                "ctx_switches_a",
                "ratio_to_raw",
            ] {
                if num(l, k).is_none() {
                    problems.push(format!("waitv {p} {id}: no {k} ({})", l["error"]));
                }
            }
            if mech.base().is_some() && num(l, "ratio_to_base").is_none() {
                problems.push(format!("waitv {p} {id}: no ratio_to_base"));
            }
            if let Some(via) = mech.via() {
                if l["backend"].as_str() != Some(via.backend())
                    || l["submit"].as_str() != via.submit_name()
                {
                    problems.push(format!(
                        "waitv {p} {id}: backend {} submit {}",
                        l["backend"], l["submit"]
                    ));
                }
            }
        }
    }
    let fast = v["fastpath"].as_array().cloned().unwrap_or_default();
    for id in [
        "atomic_load_compare",
        "syscall_getppid",
        "raw_futex_wake_nowaiter",
        "pthread_mutex_pshared_uncontended",
        "sync_mutex_uncontended",
        "sync_mutex_try_lock_uncontended",
    ] {
        if !fast
            .iter()
            .any(|f| f["id"] == id && num(f, "ns_per_op").is_some())
        {
            problems.push(format!("fastpath {id}: missing"));
        }
    }
    let is_via = |x: &serde_json::Value, via: Via| {
        x["backend"].as_str() == Some(via.backend()) && x["submit"].as_str() == via.submit_name()
    };
    for via in via::ALL {
        let name = via.label();
        for id in [
            "wait_async_stale",
            "wake_nowaiter",
            "arm_cancel",
            "arm_stale_ack",
        ] {
            if !fast
                .iter()
                .any(|f| f["id"] == id && is_via(f, via) && num(f, "ns_per_op").is_some())
            {
                problems.push(format!("fastpath {id} {name}: missing"));
            }
        }
        for mode in ["one_word", "n_words"] {
            for n in [1u32, 100, 1_000, 10_000] {
                let ok = v["scale"].as_array().is_some_and(|a| {
                    a.iter().any(|s| {
                        is_via(s, via)
                            && s["mode"] == mode
                            && s["n"] == n
                            && s["resumed"] == n
                            && num(s, "arm_ms").is_some()
                            && num(s, "resume_ms").is_some()
                            && num(s, "rss_per_wait").is_some()
                            && s["threads"].as_u64().is_some_and(|t| t >= 1)
                    })
                });
                if !ok {
                    problems.push(format!("scale {name} {mode} n={n}: missing or incomplete"));
                }
            }
        }
    }
    let tp = v["throughput"].as_array().cloned().unwrap_or_default();
    for p in &placements {
        for t in throughput::Transport::all() {
            if !tp.iter().any(|x| {
                x["placement"] == p.as_str()
                    && x["id"] == t.id().as_str()
                    && num(&x["result"], "msgs_per_sec").is_some()
            }) {
                problems.push(format!("throughput {p} {}: missing", t.id()));
            }
        }
    }
    match v["targets"].as_array() {
        None => problems.push("no §6 targets".into()),
        Some(t) if t.is_empty() => problems.push("no §6 targets".into()),
        Some(t) => {
            for x in t {
                let ok = ["target", "limit", "measured"]
                    .iter()
                    .all(|k| x[*k].is_string())
                    && (x["met"].is_boolean() || x["met"].is_null());
                if !ok {
                    problems.push(format!("malformed target {x}"));
                }
            }
        }
    }
    problems
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--verify") {
        return verify(&args.next().unwrap_or_else(|| usage()));
    }
    let cfg = config();
    let t_start = Instant::now();
    let load_wait = match cfg.wait_load {
        Some(x) => wait_for_load(x),
        None => "not requested".into(),
    };
    let cpus = sys::allowed_cpus();
    let loadavg_start = sys::loadavg();
    let mode = if cfg.quick { "quick" } else { "full" };
    println!(
        "afx-bench ({mode}): kernel {}, CPUs {:?}, loadavg {:.2} {:.2} {:.2} ({load_wait})",
        kernel(),
        cpus,
        loadavg_start[0],
        loadavg_start[1],
        loadavg_start[2]
    );
    let mut placements = vec![Placement {
        name: "same_cpu",
        label: format!("same CPU: both processes on CPU {}", cpus[0]),
        cpus: (cpus[0], cpus[0]),
    }];
    if cpus.len() > 1 {
        placements.push(Placement {
            name: "cross_cpu",
            label: format!("across CPUs: CPU {} and CPU {}", cpus[0], cpus[1]),
            cpus: (cpus[0], cpus[1]),
        });
    } else {
        println!("only one CPU available: no cross-CPU placement");
    }

    // Round trips.
    let mut latency = Vec::new();
    if cfg.runs("pingpong") {
        for p in &placements {
            let pooled = pooled_passes(
                &cfg,
                p,
                "pingpong",
                Mech::all(),
                Mech::id,
                pingpong::measure,
            );
            for (mech, r) in Mech::all().into_iter().zip(pooled) {
                latency.push(latency_of(p.name, mech, r));
            }
            set_ratios(&mut latency, p.name);
        }
    }

    // Round trips through a wait on any of 8 words, with their own raw
    // futex baseline (same run, same placement).
    let mut waitv_rows = Vec::new();
    if cfg.runs("waitv") {
        for p in &placements {
            let pooled = pooled_passes(
                &cfg,
                p,
                "waitv",
                waitv::WMech::all(),
                waitv::WMech::id,
                waitv::measure,
            );
            for (mech, r) in waitv::WMech::all().into_iter().zip(pooled) {
                waitv_rows.push(waitv_latency(p.name, mech, r));
            }
            set_ratios(&mut waitv_rows, p.name);
        }
    }

    // Fast paths.
    let mut fast = Vec::new();
    let mut fast_errors = Vec::new();
    if cfg.runs("fastpath") {
        eprintln!("fastpath baselines");
        let cheap = cfg.cheap_iters;
        match sys::isolated(TIMEOUT, move || fastpath::baselines(cheap)) {
            Ok(v) => fast.extend(v),
            Err(e) => fast_errors.push(format!("baselines: {e}")),
        }
        for v in via::ALL {
            eprintln!("fastpath {}", v.label());
            let arms = cfg.arm_iters;
            match sys::isolated(TIMEOUT, move || fastpath::library(v, cheap, arms)) {
                Ok(r) => fast.extend(r),
                Err(e) => fast_errors.push(format!("{}: {e}", v.label())),
            }
        }
    }

    // Scale.
    let mut scale_res = Vec::new();
    let mut scale_errors = Vec::new();
    if cfg.runs("scale") {
        // Repeats interleaved over all configurations; the median of each
        // figure is reported.
        let mut runs: BTreeMap<(usize, bool, u32), Vec<scale::ScaleResult>> = BTreeMap::new();
        for rep in 0..cfg.scale_repeats {
            for (vi, v) in via::ALL.into_iter().enumerate() {
                for n_words in [false, true] {
                    for &n in &cfg.scale_ns {
                        let what = format!("{} n_words={n_words} n={n}", v.label());
                        eprintln!("scale {what} (repeat {})", rep + 1);
                        match sys::isolated(TIMEOUT, move || scale::measure(v, n_words, n)) {
                            Ok(r) => runs.entry((vi, n_words, n)).or_default().push(r),
                            Err(e) => scale_errors.push(format!("{what}: {e}")),
                        }
                    }
                }
            }
            for &n in &cfg.scale_ns {
                eprintln!("scale control tokio Notify n={n} (repeat {})", rep + 1);
                match sys::isolated(TIMEOUT, move || scale::control(n)) {
                    Ok(r) => runs.entry((via::ALL.len(), false, n)).or_default().push(r),
                    Err(e) => scale_errors.push(format!("tokio Notify control n={n}: {e}")),
                }
            }
        }
        scale_res.extend(runs.into_values().map(scale::median_of));
    }

    // Throughput.
    let mut tp = Vec::new();
    if cfg.runs("throughput") {
        for p in &placements {
            for t in throughput::Transport::all() {
                eprintln!("throughput {} {}", p.name, t.id());
                let (cpus, m) = (p.cpus, cfg.tp_messages);
                let r = sys::isolated(TIMEOUT, move || throughput::measure(t, cpus, m));
                let (result, error) = match r {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(e)),
                };
                tp.push(Throughput {
                    placement: p.name,
                    id: t.id(),
                    label: t.label(),
                    result,
                    error,
                });
            }
        }
    }

    let targets = targets(&latency, &fast, &scale_res);
    let report = Report {
        mode,
        kernel: kernel(),
        cpus,
        loadavg_start,
        loadavg_end: sys::loadavg(),
        load_wait,
        placements,
        latency,
        waitv: waitv_rows,
        fastpath: fast,
        fastpath_errors: fast_errors,
        scale: scale_res,
        scale_errors,
        throughput: tp,
        targets,
        elapsed_s: t_start.elapsed().as_secs_f64(),
    };
    print_report(&report);
    match write_outputs(&cfg, &report) {
        Ok(()) => println!("\nwrote {}/results.json and SVG plots", cfg.out.display()),
        Err(e) => {
            eprintln!("writing results to {}: {e}", cfg.out.display());
            return ExitCode::FAILURE;
        }
    }
    let failed = report.latency.iter().any(|l| l.error.is_some())
        || report.waitv.iter().any(|l| l.error.is_some())
        || !report.fastpath_errors.is_empty()
        || !report.scale_errors.is_empty()
        || report.throughput.iter().any(|t| t.error.is_some());
    if failed {
        eprintln!("some measurements failed (see above)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Pools pass `pass` of mechanism `i` into `pooled`: samples appended,
/// context switches averaged over the passes, an error kept.
/// Round trips of every mechanism in `mechs` at placement `p`, measured in
/// several passes over all of them with the samples pooled per mechanism:
/// slow drifts of machine load hit every mechanism alike instead of
/// whichever ran at a bad moment. One result per mechanism, in order.
fn pooled_passes<M: Copy + Send + 'static>(
    cfg: &Config,
    p: &Placement,
    section: &str,
    mechs: Vec<M>,
    id: fn(M) -> String,
    measure: fn(M, (usize, usize), u32) -> Result<pingpong::RunResult, String>,
) -> Vec<Result<pingpong::RunResult, String>> {
    let rounds = if p.name == "same_cpu" {
        cfg.rounds_same
    } else {
        cfg.rounds_cross
    };
    let per_pass = rounds.div_ceil(cfg.passes);
    let mut pooled = Vec::new();
    for pass in 0..cfg.passes {
        for (i, &mech) in mechs.iter().enumerate() {
            eprintln!(
                "{section} {} {} (pass {}/{})",
                p.name,
                id(mech),
                pass + 1,
                cfg.passes
            );
            let cpus = p.cpus;
            let r = sys::isolated(TIMEOUT, move || measure(mech, cpus, per_pass));
            pool(&mut pooled, i, pass, r);
        }
    }
    pooled
}

fn pool(
    pooled: &mut Vec<Result<pingpong::RunResult, String>>,
    i: usize,
    pass: u32,
    r: Result<pingpong::RunResult, String>,
) {
    if pass == 0 {
        pooled.push(r);
        return;
    }
    pooled[i] = match (std::mem::replace(&mut pooled[i], Err(String::new())), r) {
        (Ok(mut a), Ok(b)) => {
            let k = f64::from(pass);
            a.ctx_switches_a = (a.ctx_switches_a * k + b.ctx_switches_a) / (k + 1.0);
            a.samples_ns.extend(b.samples_ns);
            a.cpus = b.cpus;
            Ok(a)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
}

/// The ratios of `placement`'s rows: median against the `raw_futex` row's
/// and against the row named by `base`.
fn set_ratios(rows: &mut [Latency], placement: &str) {
    let raw = rows
        .iter()
        .find(|l| l.placement == placement && l.id == "raw_futex")
        .and_then(|l| l.median_ns);
    let medians: BTreeMap<String, u64> = rows
        .iter()
        .filter(|l| l.placement == placement)
        .filter_map(|l| Some((l.id.clone(), l.median_ns?)))
        .collect();
    let ratio = |m: Option<u64>, d: Option<u64>| match (m, d) {
        (Some(m), Some(d)) if d > 0 => Some(m as f64 / d as f64),
        _ => None,
    };
    for l in rows.iter_mut().filter(|l| l.placement == placement) {
        l.ratio_to_raw = ratio(l.median_ns, raw);
        let base = l.base.as_ref().and_then(|b| medians.get(b).copied());
        l.ratio_to_base = ratio(l.median_ns, base);
    }
}

fn find<'a>(latency: &'a [Latency], placement: &str, mech: Mech) -> Option<&'a Latency> {
    let id = mech.id();
    latency
        .iter()
        .find(|l| l.placement == placement && l.id == id)
}

/// Issue 13's targets (DESIGN §6), each against a baseline of the same run.
/// A missed target is reported, never an error.
fn targets(
    latency: &[Latency],
    fast: &[fastpath::FastPath],
    scale: &[scale::ScaleResult],
) -> Vec<Target> {
    let mut out = Vec::new();
    let mut push = |target: String, limit: String, measured: String, met: Option<bool>| {
        out.push(Target {
            target,
            limit,
            measured,
            met,
        })
    };
    let placement_label = |p: &str| {
        if p == "same_cpu" {
            "same CPU"
        } else {
            "across CPUs"
        }
    };
    let mut ratio_target = |target: String, limit: f64, r: Option<f64>| {
        push(
            target,
            format!("<= {limit:.2}x"),
            r.map_or("-".into(), |r| format!("{r:.2}x")),
            r.map(|r| r <= limit),
        )
    };

    // C API pattern (EventFdFutex + epoll) against raw futex, both orders.
    for via in via::ALL {
        let same_limit = if via.kind == asyncfutex::BackendKind::IoUring {
            2.5
        } else {
            4.0
        };
        for (placement, limit) in [("same_cpu", same_limit), ("cross_cpu", 1.15)] {
            for order in Order::ALL {
                let mech = Mech::AfxEpoll(via, order);
                ratio_target(
                    format!(
                        "{}, {}, {} / raw futex",
                        mech.short_label(),
                        order.label(),
                        placement_label(placement)
                    ),
                    limit,
                    find(latency, placement, mech).and_then(|l| l.ratio_to_raw),
                );
            }
        }
    }
    // tokio wait_async against tokio's AsyncFd on an eventfd, same CPU.
    for rt in [Rt::CurrentThread, Rt::MultiThread] {
        for via in via::ALL {
            for order in Order::ALL {
                let mech = Mech::AfxTokio(rt, via, order);
                ratio_target(
                    format!(
                        "{}, {}, same CPU / tokio AsyncFd eventfd",
                        mech.short_label(),
                        order.label()
                    ),
                    1.3,
                    find(latency, "same_cpu", mech).and_then(|l| l.ratio_to_base),
                );
            }
        }
    }
    // Context switches of the measuring process per round trip, io_uring.
    let mut cs_mechs = Vec::new();
    for via in via::ALL.into_iter().filter(|v| v.submit.is_some()) {
        for order in Order::ALL {
            cs_mechs.push(Mech::AfxEpoll(via, order));
            for rt in [Rt::CurrentThread, Rt::MultiThread] {
                cs_mechs.push(Mech::AfxTokio(rt, via, order));
            }
        }
    }
    for mech in cs_mechs {
        let cs = find(latency, "same_cpu", mech).and_then(|l| l.ctx_switches_a);
        push(
            format!(
                "ctx switches/round trip, {}, {}, same CPU",
                mech.short_label(),
                mech.order().map_or("-", Order::label)
            ),
            "1.0-1.5 (<= 1.5)".into(),
            cs.map_or("-".into(), |c| format!("{c:.2}")),
            cs.map(|c| c <= 1.5),
        );
    }
    for f in fast.iter().filter(|f| f.id == "wait_async_stale") {
        push(
            format!(
                "wait_async stale first poll, {} (no syscall by code path)",
                via::label_of(f.backend.as_deref().unwrap_or("-"), f.submit.as_deref())
            ),
            "< 50 ns".into(),
            format!("{:.1} ns", f.ns_per_op),
            Some(f.ns_per_op < 50.0),
        );
    }
    for s in scale
        .iter()
        .filter(|s| s.n == 10_000 && s.backend != "tokio_notify")
    {
        let what = format!(
            "10,000 waits, {}, {}",
            via::label_of(&s.backend, s.submit.as_deref()),
            s.mode
        );
        push(
            format!("{what}: arm"),
            "<= 10 ms".into(),
            format!("{:.2} ms", s.arm_ms),
            Some(s.arm_ms <= 10.0),
        );
        push(
            format!("{what}: wake-all to all resumed"),
            "<= 20 ms".into(),
            format!("{:.2} ms", s.resume_ms),
            Some(s.resume_ms <= 20.0),
        );
        let per = s.rss_per_wait.max(0.0) + s.kernel_per_wait.max(0.0);
        push(
            format!("{what}: memory per wait (user + kernel)"),
            "<= 1024 B".into(),
            format!("{per:.0} B"),
            Some(per <= 1024.0),
        );
        // The runtime's own thread is the 1 of a current-thread runtime.
        let lib_threads = s.threads.saturating_sub(1);
        let (limit, ok) = if s.backend == "io_uring" {
            ("<= 1 library thread".to_string(), lib_threads <= 1)
        } else {
            let bound = 10_000usize.div_ceil(127) + 1;
            (format!("<= {bound} library threads"), lib_threads <= bound)
        };
        push(
            format!("{what}: library threads"),
            limit,
            format!("{lib_threads}"),
            Some(ok),
        );
    }
    out
}

fn print_report(r: &Report) {
    for p in &r.placements {
        println!(
            "\nRound trip (µs), {} — {}; cs/rt = context switches of the measuring process's threads per round trip",
            p.name, p.label
        );
        println!(
            "  {:<74} {:>8} {:>8} {:>8} {:>7} {:>6}  cpus",
            "mechanism", "median", "p99", "p99.9", "x raw", "cs/rt"
        );
        for l in r.latency.iter().filter(|l| l.placement == p.name) {
            if let Some(e) = &l.error {
                println!("  {:<74} FAILED: {e}", l.label);
                continue;
            }
            println!(
                "  {:<74} {:>8} {:>8} {:>8} {:>7} {:>6.2}  {:?}",
                l.label,
                us(l.median_ns),
                us(l.p99_ns),
                us(l.p999_ns),
                l.ratio_to_raw.map_or("-".into(), |x| format!("{x:.2}x")),
                l.ctx_switches_a.unwrap_or(f64::NAN),
                l.cpus_seen.unwrap_or((-1, -1)),
            );
        }
        print_orders(r, p);
    }
    print_waitv(r);
    if !r.fastpath.is_empty() || !r.fastpath_errors.is_empty() {
        println!("\nFast paths (process pinned to CPU 0)");
        println!(
            "  {:<44} {:>17} {:>10}  syscalls (from the code path)",
            "operation", "backend", "ns/op"
        );
        for f in &r.fastpath {
            println!(
                "  {:<44} {:>17} {:>10.1}  {}",
                f.label,
                f.backend
                    .as_deref()
                    .map_or("-".into(), |b| via::label_of(b, f.submit.as_deref())),
                f.ns_per_op,
                f.syscalls
            );
        }
        for e in &r.fastpath_errors {
            println!("  FAILED: {e}");
        }
    }
    if !r.scale.is_empty() || !r.scale_errors.is_empty() {
        println!(
            "\nScale: N async waits (tokio current-thread tasks), woken by another process \
             (tokio_notify: in-process control, no kernel)"
        );
        println!(
            "  {:<17} {:<10} {:>6} {:>9} {:>10} {:>11} {:>9} {:>11} {:>8}",
            "backend",
            "mode",
            "N",
            "arm ms",
            "resume ms",
            "wakecall ms",
            "user B/w",
            "kernel B/w",
            "threads"
        );
        for s in &r.scale {
            println!(
                "  {:<17} {:<10} {:>6} {:>9.2} {:>10.2} {:>11.2} {:>9.0} {:>11.0} {:>8}",
                via::label_of(&s.backend, s.submit.as_deref()),
                s.mode,
                s.n,
                s.arm_ms,
                s.resume_ms,
                s.wake_calls_ms,
                s.rss_per_wait,
                s.kernel_per_wait,
                s.threads
            );
        }
        for e in &r.scale_errors {
            println!("  FAILED: {e}");
        }
    }
    if !r.throughput.is_empty() {
        println!("\nThroughput, producer process -> consumer process");
        for t in &r.throughput {
            match (&t.result, &t.error) {
                (Some(x), _) => {
                    println!(
                    "  {:<10} {:<52} {:>12.0} msg/s  (wakes: producer {}, consumer {}; cpus {:?})",
                    t.placement, t.label, x.msgs_per_sec, x.producer_wakes, x.consumer_wakes, x.cpus
                )
                }
                (None, e) => println!(
                    "  {:<10} {:<52} FAILED: {}",
                    t.placement,
                    t.label,
                    e.as_deref().unwrap_or("?")
                ),
            }
        }
    }
    if !r.targets.is_empty() {
        println!("\nDESIGN §6 targets (ratios against the same run's baselines)");
        println!(
            "  {:<86} {:>20} {:>10}  met?",
            "target", "limit", "measured"
        );
        for t in &r.targets {
            println!(
                "  {:<86} {:>20} {:>10}  {}",
                t.target,
                t.limit,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a (not measured)",
                }
            );
        }
        let met = r.targets.iter().filter(|t| t.met == Some(true)).count();
        let missed = r.targets.iter().filter(|t| t.met == Some(false)).count();
        println!(
            "  {met} met, {missed} missed, {} not measured",
            r.targets.len() - met - missed
        );
    }
    println!(
        "\nloadavg at start {:?}, at end {:?}; {:.0} s",
        r.loadavg_start, r.loadavg_end, r.elapsed_s
    );
}

/// The `waitv` section: per placement, every row with its percentiles, its
/// ratio to raw futex and, for a vector wait, to the 8 single waits.
fn print_waitv(r: &Report) {
    for p in &r.placements {
        let rows: Vec<&Latency> = r.waitv.iter().filter(|l| l.placement == p.name).collect();
        if rows.is_empty() {
            continue;
        }
        println!(
            "\nWait on any of 8 words, round trip (µs), {} — {}; natural order; x base = vector \
             wait / 8 single waits (same backend)",
            p.name, p.label
        );
        println!(
            "  {:<74} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6}  cpus",
            "mechanism", "median", "p99", "p99.9", "x raw", "x base", "cs/rt"
        );
        for l in rows {
            if let Some(e) = &l.error {
                println!("  {:<74} FAILED: {e}", l.label);
                continue;
            }
            println!(
                "  {:<74} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6.2}  {:?}",
                l.label,
                us(l.median_ns),
                us(l.p99_ns),
                us(l.p999_ns),
                l.ratio_to_raw.map_or("-".into(), |x| format!("{x:.2}x")),
                l.ratio_to_base.map_or("-".into(), |x| format!("{x:.2}x")),
                l.ctx_switches_a.unwrap_or(f64::NAN),
                l.cpus_seen.unwrap_or((-1, -1)),
            );
        }
    }
}

/// The asyncfutex rows of one placement with their two arming orders side
/// by side.
fn print_orders(r: &Report, p: &Placement) {
    let row = |mech: Mech| {
        let id = mech.id();
        r.latency
            .iter()
            .find(|l| l.placement == p.name && l.id == id)
    };
    let pairs: Vec<(Mech, Option<&Latency>, Option<&Latency>)> = Mech::all()
        .into_iter()
        .filter(|m| m.order() == Some(Order::ArmFirst))
        .map(|m| (m, row(m), row(m.with_order(Order::Natural))))
        .filter(|(_, a, b)| a.is_some() || b.is_some())
        .collect();
    if pairs.is_empty() {
        return;
    }
    let raw = row(Mech::RawFutex).and_then(|l| l.median_ns);
    println!(
        "\n  Arming orders side by side, {} (raw futex {} µs, one order; x base = against \
         eventfd + epoll for the epoll rows, tokio AsyncFd<eventfd> on the same runtime for \
         the tokio rows)",
        p.name,
        us(raw)
    );
    println!(
        "  {:<64} | {:>8} {:>7} {:>7} {:>6} | {:>8} {:>7} {:>7} {:>6}",
        "", "arm 1st", "x raw", "x base", "cs/rt", "natural", "x raw", "x base", "cs/rt"
    );
    let cells = |l: Option<&Latency>| match l {
        Some(l) if l.error.is_none() => format!(
            "{:>8} {:>7} {:>7} {:>6.2}",
            us(l.median_ns),
            l.ratio_to_raw.map_or("-".into(), |x| format!("{x:.2}x")),
            l.ratio_to_base.map_or("-".into(), |x| format!("{x:.2}x")),
            l.ctx_switches_a.unwrap_or(f64::NAN)
        ),
        Some(_) => format!("{:>31}", "FAILED"),
        None => format!("{:>31}", "-"),
    };
    for (mech, a, n) in pairs {
        println!(
            "  {:<64} | {} | {}",
            mech.label_without_order(),
            cells(a),
            cells(n)
        );
    }
}

fn write_outputs(cfg: &Config, r: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.out)?;
    std::fs::write(
        cfg.out.join("results.json"),
        serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    // One plot per placement and arming order; the mechanisms with one
    // order (the baselines) are on both.
    for (p, order) in r
        .placements
        .iter()
        .flat_map(|p| Order::ALL.into_iter().map(move |o| (p, o)))
    {
        let series: Vec<svg::Series> = r
            .latency
            .iter()
            .filter(|l| l.placement == p.name && l.error.is_none())
            .filter(|l| l.order.is_none_or(|o| o == order.name()))
            .map(|l| svg::Series {
                name: format!(
                    "{} ({:.2} µs)",
                    l.label,
                    l.median_ns.unwrap_or(0) as f64 / 1e3
                ),
                points: l.cdf.clone(),
                dashed: l.id.contains("thread"),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!(
            "Round-trip latency CDF up to p99.9 — {} ({}); asyncfutex: {} order",
            p.name,
            p.label,
            order.label()
        );
        let chart = svg::Chart {
            title: &title,
            x_label: "round trip (µs, log scale)",
            y_label: "fraction of round trips",
            x_scale: svg::Scale::Log,
            y_scale: svg::Scale::Linear,
        };
        // The natural order keeps the plot's historical name.
        let file = match order {
            Order::Natural => format!("latency_cdf_{}.svg", p.name),
            Order::ArmFirst => format!("latency_cdf_{}_arm_first.svg", p.name),
        };
        std::fs::write(cfg.out.join(file), chart.render(&series))?;
    }
    if !r.scale.is_empty() {
        for (file, title, y_label, pick) in [
            (
                "scale_arm.svg",
                "Time to arm N async waits (until the kernel holds them all)",
                "ms (log scale)",
                (|s: &scale::ScaleResult| s.arm_ms) as fn(&scale::ScaleResult) -> f64,
            ),
            (
                "scale_resume.svg",
                "Wake from another process until all N tasks resumed",
                "ms (log scale)",
                |s: &scale::ScaleResult| s.resume_ms,
            ),
        ] {
            let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for s in &r.scale {
                groups
                    .entry(format!(
                        "{}, {}",
                        via::label_of(&s.backend, s.submit.as_deref()),
                        s.mode
                    ))
                    .or_default()
                    .push((f64::from(s.n), pick(s).max(1e-3)));
            }
            let series: Vec<svg::Series> = groups
                .into_iter()
                .map(|(name, points)| svg::Series {
                    dashed: name.contains("n_words"),
                    name,
                    points,
                })
                .collect();
            let chart = svg::Chart {
                title,
                x_label: "N concurrent waits (log scale)",
                y_label,
                x_scale: svg::Scale::Log,
                y_scale: svg::Scale::Log,
            };
            std::fs::write(cfg.out.join(file), chart.render(&series))?;
        }
    }
    Ok(())
}
