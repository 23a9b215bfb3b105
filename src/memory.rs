//! Giving freed memory back to the system between the heavy steps of a job.
//!
//! The binary allocates with mimalloc (`main.rs`), which keeps freed memory for a while
//! (its purge delay, 1 s in v3) so that the next allocation finds it ready. Within a step
//! that is what makes it fast; across steps it adds up. `run` on 4.9 M events (1,000
//! tenants, 90 days) peaked at 1.06–1.10 GB of RSS while its live data stayed under about
//! 0.75 GB (seen with `MIMALLOC_PURGE_DELAY=0`, which cost 4–6 s of the run's 22 s).
//! [`release`] purges what has been freed where one step's working set is dead and the
//! next one's is not built yet: after each stage of `run` and after a rollup's
//! aggregation. The same run then peaked at 0.97 GB, in the same time (3 alternated runs
//! each). Per rollup batch instead, the hour rollup took 0.4 s longer.

/// Returns the memory freed so far to the operating system: mimalloc's forced collect on
/// this thread (which also purges every arena's free ranges, program-wide) and, queued
/// without waiting, on every thread of rayon's global pool and of polars' pool, each of
/// which holds the pages it allocated from. Not waiting matters: a pool thread may be busy
/// (a server's other requests) or blocked on a lock the caller holds. polars' streaming
/// engine runs on threads of its own (`async-executor-*`) that this does not reach; the
/// arena purge still returns what they freed to the arenas. Cheap when little was freed;
/// under another global allocator it touches nothing of it.
pub fn release() {
    fn collect() {
        // SAFETY: mi_collect takes no pointers and may be called from any thread.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
    // From a thread outside every pool, `spawn_broadcast` reaches the global pool even
    // when the caller runs inside another one (the server's heavy pool, a `--threads` pool).
    let _ = std::thread::Builder::new()
        .name("mlk-release".into())
        .spawn(|| rayon::spawn_broadcast(|_| collect()));
    polars_core::runtime::THREAD_POOL.spawn_broadcast(|_| collect());
    collect();
}
