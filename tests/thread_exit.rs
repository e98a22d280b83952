//! What a hub leaves behind when its OS thread exits: nothing. Each hub owns an epoll (or
//! kqueue) descriptor and a waker descriptor; a thread that used verdant and exited must
//! release them, or a program that starts OS threads over and over runs out of descriptors.

#[macro_use]
mod support;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

isolated! {
    /// Runs alone in a child process: other tests' descriptors would blur the count.
    fn an_exiting_thread_releases_its_hubs_descriptors() {
        let run_threads = |n: usize| {
            for _ in 0..n {
                std::thread::spawn(|| {
                    // Spawned, slept, joined and one left suspended at exit: the hub, its
                    // reactor and a parked green thread all exist when the thread ends.
                    let h = verdant::spawn(|| verdant::sleep(std::time::Duration::from_millis(1)));
                    h.join().unwrap().unwrap();
                    let _parked = verdant::spawn(|| verdant::sleep(std::time::Duration::from_secs(3600)));
                    verdant::yield_now();
                })
                .join()
                .unwrap();
            }
        };
        // Warm-up: anything allocated once per process (the thread pool, the stack-overflow
        // handler's state) is in place before counting.
        run_threads(2);
        let before = open_fds();
        run_threads(50);
        let after = open_fds();
        assert!(
            after <= before + 2,
            "50 threads that used a hub and exited left {} descriptors open ({before} -> {after})",
            after - before
        );
    }
}
