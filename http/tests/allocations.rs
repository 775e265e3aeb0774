//! The keep-alive path allocates nothing per request: a request for a
//! small file costs the service no allocation once the connection is
//! warm. Counted with a counting allocator, through `evloop::testing`,
//! against echo through the same harness (whose own copies are the same
//! for both). Small: answers that fit the 4 KiB output buffer a drained
//! connection keeps; a larger one is a new output buffer per answer here
//! and on the completion driver's small path, while the readiness driver
//! writes into its loop's reused scratch buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use evloop::services::Echo;
use evloop::testing::{Builder, Connection};
use evloop::{Handler, Service};
use evloop_http::Http;

/// Counts allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed on unchanged to the system allocator, which
// upholds GlobalAlloc's contract; counting touches only a thread-local
// integer (const-initialised: it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` or `realloc` above, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`, with the caller's new size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations per exchange of `request` on a warm connection.
fn per_exchange<S: Service>(service: &S, request: &[u8]) -> f64
where
    S::Handler: Handler,
{
    const EXCHANGES: u64 = 1000;
    let mut conn: Connection<S::Handler> = Builder::new().open(service);
    for _ in 0..100 {
        conn.receive(request);
        assert!(!conn.take_output().is_empty());
    }
    let before = allocations();
    for _ in 0..EXCHANGES {
        conn.receive(request);
        assert!(!conn.take_output().is_empty());
    }
    (allocations() - before) as f64 / EXCHANGES as f64
}

#[test]
fn a_keep_alive_request_for_a_small_file_allocates_nothing() {
    let root = std::env::temp_dir().join(format!("evloop-http-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"Hello, World!").unwrap();
    std::fs::write(root.join("3k.bin"), vec![7u8; 3_000]).unwrap();
    let http = Http::builder().root(&root).build().unwrap();
    let request = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    let harness = per_exchange(&Echo, request);
    for file in ["hello.txt", "3k.bin"] {
        let request = format!("GET /{file} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n");
        let http = per_exchange(&http, request.as_bytes());
        assert!(
            http <= harness,
            "{file}: {http} allocations per request, the harness alone {harness}"
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}
