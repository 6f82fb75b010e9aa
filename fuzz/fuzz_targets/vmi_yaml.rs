//! Any text through YAML decoding, defaulting and admission: an error or a VMI, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = netbind_model::check::check_vmi(text, &netbind_model::admission::ClusterConfig::default());
    }
});
