//! What a parked green thread costs in memory.
//!
//! Spawns N green threads (default 100,000) that all sleep for an hour, measures the
//! process's resident memory (`VmRSS`), page tables (`VmPTE`) and memory mappings before and
//! after, prints the cost per parked green thread, then kills them all and joins them.
//!
//! ```text
//! cargo run --release --example parked_memory                       # 100,000, 16 KiB stacks
//! cargo run --release --example parked_memory -- --count 20000 --stack-size 262144
//! ```
//!
//! Peers, 100,000 parked (`ANCHORS.md`): Go 2.68 KiB · corosensei 4.05 · gevent 8.0 ·
//! may 8.34 KiB per parked green thread.
//!
//! Every stack has a guard page, so it is two memory mappings, and Linux caps mappings per
//! process at `vm.max_map_count` (65,530 by default): only about 32,000 guarded stacks fit
//! under the default. The example reads the limit first and, if it is too low, says so and
//! runs as many as fit. To run the full 100,000: `sysctl -w vm.max_map_count=262144` (root).
//! Linux only (it reads `/proc`).

use std::fs;
use std::time::{Duration, Instant};

use verdant::Builder;

/// Mappings left free for everything else the process maps (heap growth, libraries).
const MAP_HEADROOM: usize = 2_000;

struct Args {
    count: usize,
    stack_size: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        count: 100_000,
        stack_size: 16 * 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = |it: &mut dyn Iterator<Item = String>| -> usize {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| usage(&format!("{flag} needs a number")))
        };
        match flag.as_str() {
            "--count" => args.count = value(&mut it),
            "--stack-size" => args.stack_size = value(&mut it),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("parked_memory: {problem}");
    }
    eprintln!("usage: parked_memory [--count N (100000)] [--stack-size BYTES (16384)]");
    std::process::exit(2);
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmPTE`), in KiB.
fn status_kib(field: &str) -> usize {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn map_count() -> usize {
    fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

fn max_map_count() -> Option<usize> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Size and resident KiB of the mappings that are green-thread stacks: of the mapping sizes
/// that occur at least `count` times (stacks, and their guard pages), the one with the most
/// resident memory.
fn stack_rss_kib(count: usize) -> Option<(usize, usize)> {
    let smaps = fs::read_to_string("/proc/self/smaps").ok()?;
    let mut sizes: std::collections::HashMap<usize, (usize, usize)> = Default::default();
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            size = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let rss: usize = v.trim().trim_end_matches("kB").trim().parse().ok()?;
            let e = sizes.entry(size).or_default();
            e.0 += 1;
            e.1 += rss;
        }
    }
    sizes
        .into_iter()
        .filter(|(_, (n, _))| *n >= count)
        .max_by_key(|(_, (_, rss))| *rss)
        .map(|(size, (_, rss))| (size, rss))
}

fn main() {
    let args = parse_args();
    let mut count = args.count;

    // Create the hub (and its stack) first: it is paid once per OS thread, not per green
    // thread.
    verdant::spawn(|| ()).join().unwrap();

    let maps_before = map_count();
    if let Some(limit) = max_map_count() {
        let fit = limit.saturating_sub(maps_before + MAP_HEADROOM) / 2;
        if count > fit {
            println!(
                "vm.max_map_count is {limit}: each green thread's stack is 2 memory mappings \
                 (the stack and its guard page), so only about {fit} fit beside the {maps_before} \
                 mappings the process already has.\n\
                 Running {fit} instead of {count}. For the full {count}, raise the limit (as \
                 root): sysctl -w vm.max_map_count={}\n",
                (count * 2 + maps_before + MAP_HEADROOM).next_power_of_two()
            );
            count = fit;
        }
    }

    let mut handles = Vec::with_capacity(count);
    let rss_before = status_kib("VmRSS");
    let pte_before = status_kib("VmPTE");
    let started = Instant::now();
    for _ in 0..count {
        let spawned = Builder::new()
            .stack_size(args.stack_size)
            .spawn(|| verdant::sleep(Duration::from_secs(3600)));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                println!("stopped at {} green threads: {e}\n", handles.len());
                break;
            }
        }
    }
    // Let every one of them run up to its sleep.
    verdant::yield_now();
    let spawn_time = started.elapsed();
    let n = handles.len();
    let rss_after = status_kib("VmRSS");
    let pte_after = status_kib("VmPTE");
    let maps_after = map_count();

    let per = |kib: usize| kib as f64 / n.max(1) as f64;
    let rss = rss_after.saturating_sub(rss_before);
    let pte = pte_after.saturating_sub(pte_before);
    println!(
        "{n} green threads parked in sleep(1 h), stack size {} KiB",
        args.stack_size / 1024
    );
    println!("  spawned and parked in {spawn_time:.2?}");
    println!(
        "  VmRSS   {rss_before} KiB -> {rss_after} KiB: {:.2} KiB per parked green thread",
        per(rss)
    );
    println!(
        "  VmPTE   {pte_before} KiB -> {pte_after} KiB: {:.3} KiB of page tables each (not in VmRSS)",
        per(pte)
    );
    println!(
        "  mappings {maps_before} -> {maps_after}: {:.2} per green thread",
        maps_after.saturating_sub(maps_before) as f64 / n.max(1) as f64
    );
    if let Some((size, stack_rss)) = stack_rss_kib(n) {
        println!(
            "  of which stack pages: {:.2} KiB each (mappings of {size} KiB, stack + header), \
             the rest ({:.2} KiB) is heap",
            per(stack_rss),
            per(rss.saturating_sub(stack_rss))
        );
    }
    println!(
        "\nWhat a parked green thread costs: the stack pages it touched (the top page holds the \
         stack header and the\nfirst frames; a green thread that blocks in sleep() touches \
         one or two 4 KiB pages, whatever its reserved size;\none page is the floor for a stack \
         of its own), plus heap: the hub's task \
         record (with its join state and, inline, its closure), the greenlet record (saved context),\n\
         and its timer entry in the hub's deadline queue. Untouched stack pages cost address \
         space and page-table\nentries, not RAM: the default stack ({} KiB) costs about the \
         same RSS but more page tables and address space.\n\
         Peers (100,000 parked): Go 2.68 KiB, corosensei 4.05, gevent 8.0, may 8.34.",
        verdant::stack::DEFAULT_STACK_SIZE / 1024
    );

    let started = Instant::now();
    for h in &handles {
        h.kill();
    }
    let killed = handles
        .into_iter()
        .map(|h| h.join())
        .filter(|r| r.as_ref().is_err_and(|e| e.is_killed()))
        .count();
    println!(
        "\nkilled and joined {killed} of {n} in {:.2?}",
        started.elapsed()
    );
    assert_eq!(killed, n, "every parked green thread unwinds when killed");
}
