//! The cost of the monkey shim on an unpatched program: a zero-length `read` of `/dev/null`
//! through the exported hook (`libc::read`, which resolves to verdant's definition) beside
//! the same call straight to glibc (`verdant::monkey::original::read`) in the same group, so
//! the report is a ratio. The budget: one predictable branch per call.
//!
//! Run: `cargo bench --features monkey --bench monkey`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::os::fd::AsRawFd;

fn unpatched_read(c: &mut Criterion) {
    let null = std::fs::File::open("/dev/null").expect("open /dev/null");
    let fd = null.as_raw_fd();
    let mut buf = [0u8; 1];
    let mut g = c.benchmark_group("unpatched_read_dev_null");
    g.bench_function("through_hook", |b| {
        // SAFETY: `buf` is writable for the zero bytes asked for; `fd` stays open.
        b.iter(|| unsafe { libc::read(black_box(fd), buf.as_mut_ptr().cast(), black_box(0)) })
    });
    g.bench_function("glibc_original", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe {
            verdant::monkey::original::read(black_box(fd), buf.as_mut_ptr().cast(), black_box(0))
        })
    });
    g.finish();
}

criterion_group!(benches, unpatched_read);
criterion_main!(benches);
