//! Link the functions an idle agent runs next to each other.
//!
//! An idle node runs about 750 functions (timers, gossip, the periodic
//! loops, a few SQLite statements), spread over 20 MB of code. The kernel
//! maps code 64 KiB at a time, so scattered they keep ~7.5 MB of the binary
//! resident; laid out together they fit in about 1 MB. `idle-symbols.txt`
//! lists them (made by `scripts/idle-symbols.sh` from a profiled idle
//! agent) and is handed to the linker as a symbol-ordering file.
//!
//! Only on x86_64 Linux, where rustc links with its own LLD, and only in
//! optimised builds (the names in the list are those of the release
//! profile). A name the build does not have is skipped silently, so a
//! stale list costs memory, never a failed build. `LOCUS_LINK_MAP=PATH`
//! also writes the linker's map (the script reads it);
//! `LOCUS_NO_SYMBOL_ORDER=1` leaves the order to the linker (for a linker
//! other than LLD).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=idle-symbols.txt");
    println!("cargo:rerun-if-env-changed=LOCUS_LINK_MAP");
    println!("cargo:rerun-if-env-changed=LOCUS_NO_SYMBOL_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let optimised = env::var("OPT_LEVEL").is_ok_and(|o| o != "0");
    if target != "x86_64-unknown-linux-gnu" || !optimised {
        return;
    }
    if let Ok(map) = env::var("LOCUS_LINK_MAP") {
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-demangle");
    }
    if env::var_os("LOCUS_NO_SYMBOL_ORDER").is_some() {
        return;
    }
    let list =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("idle-symbols.txt");
    if list.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
