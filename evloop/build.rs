//! Names the kernel event queue of the target once, as cfgs the code uses
//! instead of repeating lists of operating systems:
//!
//! * `evloop_epoll`: Linux, Android;
//! * `evloop_kqueue`: macOS and the other Apple systems, FreeBSD, DragonFly,
//!   NetBSD, OpenBSD;
//! * `evloop_kqueue_user`: those kqueues with `EVFILT_USER` that rustix
//!   exposes (Apple, FreeBSD, DragonFly), used for the waker;
//! * `evloop_fd_waker`: targets whose waker is a descriptor (eventfd or pipe).

fn main() {
    for cfg in [
        "evloop_epoll",
        "evloop_kqueue",
        "evloop_kqueue_user",
        "evloop_fd_waker",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let vendor = std::env::var("CARGO_CFG_TARGET_VENDOR").unwrap_or_default();
    let apple = vendor == "apple";
    let epoll = matches!(os.as_str(), "linux" | "android");
    let kqueue_user = apple || matches!(os.as_str(), "freebsd" | "dragonfly");
    let kqueue = kqueue_user || matches!(os.as_str(), "netbsd" | "openbsd");
    let enabled = [
        ("evloop_epoll", epoll),
        ("evloop_kqueue", kqueue),
        ("evloop_kqueue_user", kqueue_user),
        ("evloop_fd_waker", epoll || (kqueue && !kqueue_user)),
    ];
    for (cfg, on) in enabled {
        if on {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
}
