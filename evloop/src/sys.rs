//! What the standard library and rustix do not wrap: giving freed memory
//! back to the system.

/// Asks the C allocator to return the memory it keeps after frees. glibc
/// holds freed blocks in its per-thread arenas, so without this a server
/// whose buffers peaked stays that large after they are freed. The trim
/// walks every arena under its lock, so it runs on a short-lived thread of
/// its own, never on an event loop. Elsewhere (musl, the BSDs, macOS) the
/// allocator gives memory back by itself, and this does nothing.
pub(crate) fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trim = || {
            // SAFETY: malloc_trim takes no pointers; it only walks glibc's
            // own free lists, under the allocator's locks, so it is safe to
            // call from any thread at any time.
            unsafe { libc::malloc_trim(0) };
        };
        if let Err(e) = std::thread::Builder::new()
            .name("evloop-trim".into())
            .spawn(trim)
        {
            tracing::debug!("giving memory back: no thread: {e}");
        }
    }
}
