//! The `netbind-cni` binary: reads the `CNI_*` environment and the configuration on stdin,
//! prints the result or a CNI error on stdout, and exits non-zero on error.

use std::io::{Read, Write};
use std::process::ExitCode;

use netbind_cni::plugin;
use netbind_cni::protocol::{CniError, Env, ErrorCode};

/// A network configuration is a few KiB; a runtime never sends more than this.
const MAX_STDIN: u64 = 1 << 20;

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CniError::new(ErrorCode::Io, format!("read stdin: {e}")))?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            ErrorCode::Decode,
            format!("network configuration on stdin is over {MAX_STDIN} bytes"),
        ));
    }
    Ok(buf)
}

fn main() -> ExitCode {
    // Logs go to stderr, which runtimes keep; stdout is the protocol's.
    netbind_log::init("warn");
    // A DEL's detached teardown helper is this binary too (see `plugin::del`).
    if let Some(code) = netbind_handler::run_detached_helper() {
        return code;
    }
    let outcome = Env::read(|name| std::env::var(name).ok())
        .and_then(|env| read_stdin().and_then(|stdin| plugin::run(&env, &stdin)));
    // Each answer goes out in one write (with its newline), so that the runtime reading the
    // pipe is woken once.
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(result)) => {
            let _ = out.write_all(format!("{result}\n").as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            let text = serde_json::to_string(&error).unwrap_or_else(|_| error.msg.clone());
            let _ = out.write_all(format!("{text}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}
