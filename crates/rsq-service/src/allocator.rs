//! How the process's allocator is tuned before the runtime starts.
//!
//! glibc's malloc gives threads separate arenas once they contend (up to
//! eight per core), and memory freed into one arena serves only the
//! threads using it. A daemon's messages are allocated on one runtime
//! thread and freed on another, and tokio moves tasks between threads, so
//! every arena ends up holding its own copy of the working set. On the nsq
//! bench's drain of a 14 M-message backlog one arena cut peak RSS from
//! about 24 MiB to 19 MiB with no loss of throughput on 2 cores (see
//! docs/benchmarks.md). `MALLOC_ARENA_MAX`, glibc's own setting, still
//! wins when given, for machines where more arenas pay off.

/// Limits glibc's malloc to one arena unless `MALLOC_ARENA_MAX` is set.
/// Does nothing with other C libraries. Call before spawning threads.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt(3) takes two integers and no pointers; glibc
        // serializes it against allocation, and M_ARENA_MAX with a
        // positive value is a documented, valid parameter.
        #[allow(unsafe_code)]
        let applied = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if applied != 1 {
            tracing::debug!("mallopt(M_ARENA_MAX) was refused; keeping glibc's arenas");
        }
    }
}
