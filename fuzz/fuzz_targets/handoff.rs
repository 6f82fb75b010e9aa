//! The launcher's only input from phase 1: any bytes are an error or a valid record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netbind_model::handoff::Handoff::from_json(data);
});
