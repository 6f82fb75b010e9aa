//! The build script of netbind-handler and netbind-cni: links the crate's binary with the
//! functions a pod operation runs placed first and together (`link/hot-functions.txt`,
//! resolved by `scripts/link-ordered` (through `scripts/link-order.py`), the linker `.cargo/config.toml` names). Each binary
//! is started once per pod operation, and its code comes into a cold process each time.
//! `link/README.md` says what it saves and how the list is made.

fn main() {
    let list =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    // `NETBIND_LINK_ORDER=off`: the same build without the order, to measure what it saves.
    println!("cargo:rerun-if-env-changed=NETBIND_LINK_ORDER");
    let off = std::env::var_os("NETBIND_LINK_ORDER").is_some_and(|v| v == "off");
    if list.is_file() && !off {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        // Names of the list this binary does not have (the handler's in netbind-cni's link,
        // or one gone since the list was made) are expected, not worth a warning each.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
