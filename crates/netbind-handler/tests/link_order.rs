//! netbind-handler is linked with the functions a setup and a teardown run placed first and
//! in the order `link/hot-functions.txt` gives (`scripts/link-ordered`, `link/README.md`).
//! Checked on the binary this build made: a linker or configuration change that quietly
//! drops the order (the program still works, a setup gets slower) fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::HashMap;
use std::process::Command;

/// A Rust symbol's name without its hash and LLVM's promotion suffix, as the wrapper keys it.
fn key(symbol: &str) -> String {
    let base = symbol.split(".llvm.").next().unwrap_or(symbol);
    match base.strip_suffix('E') {
        Some(head) if symbol.starts_with("_ZN") && head.len() > 19 => {
            let (rest, hash) = head.split_at(head.len() - 19);
            if hash.starts_with("17h") && hash[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
                format!("{rest}E")
            } else {
                base.to_string()
            }
        }
        _ => base.to_string(),
    }
}

#[test]
fn the_hot_functions_come_first_and_in_the_lists_order() {
    let list = std::fs::read_to_string(netbind_testkit::repo_root().join("link/hot-functions.txt"))
        .expect("link/hot-functions.txt");
    let binary = env!("CARGO_BIN_EXE_netbind-handler");
    let out = Command::new("nm")
        .args(["--defined-only", "--format=posix", binary])
        .output()
        .expect("nm (binutils) runs");
    assert!(out.status.success(), "nm {binary} failed");
    // Function symbols: exact name -> address, and the wrapper's key -> addresses.
    let mut exact = HashMap::new();
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, kind, addr, ..] = fields[..] else {
            continue;
        };
        if !matches!(kind, "T" | "t" | "W" | "w") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        exact.insert(name.to_string(), addr);
        by_key.entry(key(name)).or_default().push(addr);
    }
    // Still this program's functions: a name of the list is here as it is, or, made from
    // another build, by its name without the hash (a debug build names nearly all of them
    // that way). Fewer means the code moved away from the list.
    let names: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let present = names
        .iter()
        .filter(|name| exact.contains_key(**name) || by_key.contains_key(&key(name)))
        .count();
    assert!(
        present * 10 >= names.len() * 8,
        "only {present} of the list's {} functions are in {binary}: the list is stale (run \
         scripts/gen-link-order.sh as root)",
        names.len()
    );
    // Where the wrapper put those it could resolve to one place (this build's own name, or
    // the one instance of a name without its hash); the list names a function once per build
    // it was made from, and each place counts once.
    let mut seen = std::collections::HashSet::new();
    let placed: Vec<u64> = names
        .iter()
        .filter_map(|name| {
            exact.get(*name).copied().or_else(|| {
                // Only a Rust symbol of the legacy scheme has a build hash to leave out.
                by_key
                    .get(&key(name))
                    .filter(|addrs| name.starts_with("_ZN") && addrs.len() == 1)
                    .map(|addrs| addrs[0])
            })
        })
        .filter(|addr| seen.insert(*addr))
        .collect();
    assert!(
        placed.len() >= 100,
        "only {} of the list's functions have one place in {binary}",
        placed.len()
    );
    // Unordered, consecutive names of the list are as often in one order as in the other.
    // Ordered, nearly always ascending: the linker moves sections, and a C library object
    // that holds several functions (glibc's malloc.c: malloc, free, _int_malloc, ...) keeps
    // its own order inside (93% ascending in a debug build of the list's commit).
    let ascending = placed.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        ascending * 100 >= (placed.len() - 1) * 85,
        "{ascending} of {} consecutive hot functions are in the list's order in {binary}: the \
         linker did not apply link/hot-functions.txt (is scripts/link-ordered the linker?)",
        placed.len() - 1
    );
    // And they come first: nine in ten of them lie among the program's first tenth of
    // functions (spread over the whole program, half of them would lie past its middle). Not
    // all: a name resolved here by its name without the hash, where the wrapper found more
    // instances in the link's inputs than the final program keeps, is not placed.
    let mut all: Vec<u64> = exact.values().copied().collect();
    all.sort_unstable();
    let mut ranks: Vec<usize> = placed
        .iter()
        .map(|addr| all.partition_point(|a| a < addr))
        .collect();
    ranks.sort_unstable();
    let p90 = ranks[ranks.len() * 9 / 10];
    assert!(
        p90 * 10 < all.len(),
        "the hot functions are spread over {binary}: nine in ten of them lie within its first \
         {p90} of {} functions",
        all.len()
    );
}
