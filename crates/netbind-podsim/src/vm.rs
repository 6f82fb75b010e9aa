//! Starting the unprivileged parts of a pod: the launcher, QEMU, or an unprivileged libvirt
//! session daemon, each in the pod's sandbox ([`Sandbox`]), and stopping them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::SimError;

pub use crate::sandbox::{
    Proc, Sandbox, VM_GID, VM_UID, create_new, netns_processes, sandbox_program, spawn_detached,
    stop_netns_processes, stop_sandbox,
};

/// Reads the hand-off record phase 1 wrote under `dir` (root-owned): a read error and a parse
/// error are told apart, each naming the file.
pub fn read_handoff(dir: &Path) -> Result<netbind_model::handoff::Handoff, String> {
    let path = dir.join(netbind_model::handoff::HANDOFF_FILE);
    let bytes =
        netbind_model::input::read_regular(&path, 1 << 20).map_err(|e| format!("read {e}"))?;
    netbind_model::handoff::Handoff::from_json(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How much of a log or console root reads (the guest decides how much it writes).
pub const MAX_LOG_BYTES: u64 = 16 << 20;

/// Reads a log or console (capped, a regular file with one name, never through a symlink).
pub fn read_console(file: &Path) -> Result<Vec<u8>, netbind_model::input::InputError> {
    netbind_model::input::read_untrusted(file, MAX_LOG_BYTES)
}

/// Text the VM side wrote (a console, a log), made safe to show on an operator's terminal:
/// every control character but the line feed and the tab is written as an escape (`\u{1b}`),
/// so that a guest or a launcher cannot send escape sequences through netbind to the
/// terminal (retitle it, rewrite what it shows, or worse on a terminal with a flaw).
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() && ch != '\n' && ch != '\t' {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

/// How much of the end of a log or console [`read_console_tail`] reads.
const TAIL_BYTES: u64 = 64 << 10;

/// The last `max_lines` lines of a log or console, to show in an error: read from its last
/// 64 KiB whatever its size (a console past [`MAX_LOG_BYTES`] still shows how it ended), opened
/// as [`read_console`] opens it; invalid UTF-8 replaced, a serial console's "\r\n" as "\n",
/// every line [`printable`].
pub fn read_console_tail(
    file: &Path,
    max_lines: usize,
) -> Result<String, netbind_model::input::InputError> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |source| netbind_model::input::InputError::Read {
        path: file.into(),
        source,
    };
    let mut opened = netbind_model::input::open_untrusted(file)?;
    let len = opened.metadata().map_err(read_err)?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    opened.seek(SeekFrom::Start(from)).map_err(read_err)?;
    let mut bytes = Vec::new();
    opened
        .take(TAIL_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        // The first line read started before `from`: only its end is here.
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(max_lines);
    Ok(lines[keep..]
        .iter()
        .map(|line| printable(line.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The longest line a [`Follow`] keeps: the rest of a longer one, up to its end, is dropped,
/// so that a writer that never ends a line cannot grow root's memory.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// The most one [`Follow::poll`] reads: a writer faster than the reader cannot keep a poll
/// from returning.
const MAX_POLL_BYTES: u64 = 16 << 20;

/// A log or console read as it grows, line by line: opened once, as [`read_console`] opens
/// it (the first poll that finds it), then read from where the last read stopped. What it
/// holds is one chunk and one unfinished line, whatever the file's size, and each poll costs
/// what was appended since the last one, not the whole file again. A file found shorter than
/// what was read (rewritten from the start) is read again from its start.
#[derive(Debug)]
pub struct Follow {
    path: PathBuf,
    file: Option<std::fs::File>,
    offset: u64,
    /// The unfinished last line, at most [`MAX_LINE_BYTES`] of it.
    partial: Vec<u8>,
    /// What one read takes in, made by the first poll that has a file to read.
    chunk: Vec<u8>,
    caught_up: bool,
}

impl Follow {
    pub fn new(path: &Path) -> Follow {
        Follow {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
            chunk: Vec::new(),
            caught_up: false,
        }
    }

    /// One poll for the next line containing `needle` (as written: callers make it
    /// [`printable`] to show it).
    pub fn next_containing(
        &mut self,
        needle: &str,
    ) -> Result<Option<String>, netbind_model::input::InputError> {
        self.poll(|line| {
            if line.contains(needle) {
                std::ops::ControlFlow::Break(line.to_string())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
    }

    /// Whether the last poll read up to the end of the file (or found no file yet).
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Reads what was appended since the last poll and gives `each` every line it completed
    /// (invalid UTF-8 replaced, a serial console's "\r" dropped, as the writer wrote it:
    /// callers make it [`printable`] to show it), until `each` breaks with a value, which is
    /// returned; the next poll goes on with the line after it. A line is given once its line
    /// feed is there, never while it is still being written (a guest's serial console can
    /// pause mid-line, and a lease line cut short would lose its fields). No file yet is no
    /// line.
    pub fn poll<B>(
        &mut self,
        mut each: impl FnMut(&str) -> std::ops::ControlFlow<B>,
    ) -> Result<Option<B>, netbind_model::input::InputError> {
        use std::ops::ControlFlow;
        use std::os::unix::fs::FileExt;
        let path = self.path.clone();
        let read_err = move |source| netbind_model::input::InputError::Read {
            path: path.clone(),
            source,
        };
        let file = match &mut self.file {
            Some(file) => file,
            slot @ None => match netbind_model::input::open_untrusted(&self.path) {
                Ok(file) => slot.insert(file),
                Err(netbind_model::input::InputError::Open { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    self.caught_up = true;
                    return Ok(None);
                }
                Err(err) => return Err(err),
            },
        };
        if file.metadata().map_err(&read_err)?.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if self.chunk.is_empty() {
            self.chunk = vec![0u8; 64 << 10];
        }
        let chunk = &mut self.chunk;
        let mut read_now = 0u64;
        self.caught_up = false;
        while read_now < MAX_POLL_BYTES {
            let n = match file.read_at(chunk, self.offset) {
                Ok(0) => {
                    self.caught_up = true;
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(read_err(err)),
            };
            self.offset += n as u64;
            read_now += n as u64;
            let mut rest = &chunk[..n];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                keep(&mut self.partial, &rest[..end]);
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                rest = &rest[end + 1..];
                if let ControlFlow::Break(found) = each(line.trim_end_matches('\r')) {
                    // The next poll goes on right after this line, not after the chunk.
                    self.offset -= rest.len() as u64;
                    self.caught_up = false;
                    return Ok(Some(found));
                }
            }
            keep(&mut self.partial, rest);
        }
        Ok(None)
    }
}

/// Adds `bytes` to an unfinished line, up to [`MAX_LINE_BYTES`].
fn keep(partial: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(partial.len());
    partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Every line of a log or console that contains `needle`, as the file is now ([`Follow`]: read
/// once through, whatever its size; at most `max` lines, the first ones), as written.
pub fn lines_containing(
    file: &Path,
    needle: &str,
    max: usize,
) -> Result<Vec<String>, netbind_model::input::InputError> {
    let mut follow = Follow::new(file);
    let mut found = Vec::new();
    loop {
        let full = follow.poll(|line| {
            if line.contains(needle) {
                found.push(line.to_string());
            }
            if found.len() >= max {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        if full.is_some() || follow.caught_up() {
            return Ok(found);
        }
    }
}

/// Waits until `file` holds a line containing `needle`; returns that line, [`printable`]
/// (callers show it or parts of it). `file` is one root created in a root-owned directory; it
/// is followed as it grows ([`Follow`]), so a line past [`MAX_LOG_BYTES`] is found too.
pub fn wait_for_line(
    file: &Path,
    needle: &str,
    timeout: Duration,
    abort: &dyn Fn() -> bool,
) -> Option<String> {
    let started = Instant::now();
    let mut follow = Follow::new(file);
    while started.elapsed() < timeout && !abort() {
        match follow.next_containing(needle) {
            Ok(Some(line)) => return Some(printable(&line)),
            // More was appended than one poll reads: go on at once.
            Ok(None) if !follow.caught_up() => continue,
            // Not there yet (or not a file root may read: the timeout tells).
            Ok(None) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    None
}

pub fn chown_vm(path: &Path) -> Result<(), SimError> {
    std::os::unix::fs::chown(path, Some(VM_UID), Some(VM_GID)).map_err(|source| SimError::Io {
        op: "chown",
        path: path.to_path_buf(),
        source,
    })
}

/// The guest image: Debian's cloud kernel and netbind's busybox initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// `NETBIND_GUEST_DIR`, else `.e2e/guest` next to the source tree the binary was built in.
    pub fn locate() -> Result<GuestImage, SimError> {
        let dir = std::env::var_os("NETBIND_GUEST_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.e2e/guest"),
            PathBuf::from,
        );
        let image = GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.gz"),
        };
        if !image.kernel.is_file() || !image.initrd.is_file() {
            return Err(SimError::Cmd {
                what: "find the guest image".into(),
                detail: format!(
                    "{} has no vmlinuz / initrd.gz: run scripts/build-guest.sh",
                    dir.display()
                ),
            });
        }
        Ok(image)
    }

    /// Copies the image where the VM uid can read it.
    pub fn copy_to(&self, dir: &Path) -> Result<GuestImage, SimError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SimError::Io {
                op: "copy",
                path,
                source,
            }
        };
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.gz");
        std::fs::copy(&self.kernel, &kernel).map_err(io(&kernel))?;
        std::fs::copy(&self.initrd, &initrd).map_err(io(&initrd))?;
        Ok(GuestImage { kernel, initrd })
    }
}

/// The guest's kernel command line: where to listen, which families to configure, and which
/// node address to reach over each (`egress`: IPv4 `ADDR:PORT`; `egress6`: IPv6 `ADDR,PORT`).
pub fn cmdline(listen: &[u16], egress: Option<&str>, egress6: Option<&str>) -> String {
    cmdline_with(listen, egress.is_some(), egress, egress6.is_some(), egress6)
}

/// The same, a family configured with or without an egress check.
pub fn cmdline_with(
    listen: &[u16],
    ipv4: bool,
    egress: Option<&str>,
    ipv6: bool,
    egress6: Option<&str>,
) -> String {
    let ports: Vec<String> = listen.iter().map(u16::to_string).collect();
    let mut line = format!(
        "console=ttyS0 quiet panic=-1 netbind.listen={} netbind.ipv4={} netbind.ipv6={}",
        ports.join(","),
        u8::from(ipv4),
        u8::from(ipv6),
    );
    if let Some(egress_addr) = egress {
        line.push_str(&format!(" netbind.egress={egress_addr}"));
    }
    if let Some(egress_addr) = egress6 {
        line.push_str(&format!(" netbind.egress6={egress_addr}"));
    }
    line
}

/// How QEMU's NIC reaches the pod.
#[derive(Debug, Clone, Copy)]
pub enum QemuNet<'a> {
    /// The pre-created tap (bridge, masquerade and tap bindings), with the pod's MTU and,
    /// when `rom_disabled`, no option ROM.
    Tap {
        name: &'a str,
        mtu: u32,
        rom_disabled: bool,
    },
    /// passt's UNIX socket (the passt binding): QEMU 7.2's `-netdev stream`. No host MTU:
    /// passt offers the guest its own (65520) by DHCP.
    Passt { socket: &'a Path },
}

/// QEMU under TCG (no usable KVM here), as the VM uid, its NIC on `net`.
pub fn qemu_args(
    img: &GuestImage,
    console: &Path,
    net: QemuNet,
    mac: &str,
    cmdline: &str,
) -> Vec<String> {
    let mut dev = format!("virtio-net-pci,netdev=n0,mac={mac}");
    let netdev = match net {
        QemuNet::Tap {
            name,
            mtu,
            rom_disabled,
        } => {
            dev.push_str(&format!(",host_mtu={mtu}"));
            if rom_disabled {
                dev.push_str(",romfile=");
            }
            format!("tap,id=n0,ifname={name},script=no,downscript=no,vhost=off")
        }
        QemuNet::Passt { socket } => format!(
            "stream,id=n0,server=off,addr.type=unix,addr.path={}",
            socket.display()
        ),
    };
    [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "256",
        "-smp",
        "1",
        "-no-reboot",
        // QEMU's own syscall filter, on top of the sandbox's (the settings libvirt uses when
        // `seccomp_sandbox` is on, its default).
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "-serial".into(),
        format!("file:{}", console.display()),
        "-kernel".into(),
        img.kernel.display().to_string(),
        "-initrd".into(),
        img.initrd.display().to_string(),
        "-append".into(),
        cmdline.into(),
        "-netdev".into(),
        netdev,
        "-device".into(),
        dev,
    ])
    .collect()
}

/// passt's arguments for the passt binding's `<portForward>` elements: in the foreground, its
/// socket at `socket`, the gateway not mapped to the pod, the TCP and UDP ports to forward (`~PORT` excluded). A `<portForward>`
/// without ranges means every port; `every_port` says what to forward then (passt's `all`
/// binds a socket per port, more descriptors than some machines allow a process).
pub fn passt_args(
    socket: &Path,
    forwards: &[netbind_model::handoff::PortForward],
    every_port: &[u16],
) -> Vec<String> {
    // `--no-map-gw`: the guest's gateway is a real host (the node), not the pod itself, which
    // passt would otherwise make it.
    let mut args = vec![
        "-f".into(),
        "-s".into(),
        socket.display().to_string(),
        "--no-map-gw".into(),
    ];
    for forward in forwards {
        let flag = match forward.proto {
            netbind_model::handoff::PortProto::Tcp => "-t",
            netbind_model::handoff::PortProto::Udp => "-u",
        };
        let spec: Vec<String> = if forward.ranges.is_empty() {
            every_port.iter().map(u16::to_string).collect()
        } else {
            forward
                .ranges
                .iter()
                .map(|range| {
                    let tilde = if range.exclude { "~" } else { "" };
                    format!("{tilde}{}", range.start)
                })
                .collect()
        };
        if !spec.is_empty() {
            args.push(flag.into());
            args.push(spec.join(","));
        }
    }
    args
}

/// A complete libvirt domain around the launcher's `<interface>` elements.
pub fn libvirt_domain(
    name: &str,
    img: &GuestImage,
    interfaces: &str,
    cmdline: &str,
    console: &Path,
) -> String {
    let esc = netbind_plan::domxml::escape;
    let ifaces: String = interfaces.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "<domain type='qemu'>\n  <name>{}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>\n  </os>\n  <features><acpi/></features>\n  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{ifaces}    <serial type='file'>\n      <source path='{}'/>\n      <target port='0'/>\n    </serial>\n    <memballoon model='none'/>\n  </devices>\n</domain>\n",
        esc(name),
        esc(&img.kernel.display().to_string()),
        esc(&img.initrd.display().to_string()),
        esc(cmdline),
        esc(&console.display().to_string()),
    )
}

/// Paths of a session libvirt for the VM uid inside one pod.
#[derive(Debug, Clone)]
pub struct Libvirt {
    pub home: PathBuf,
    pub xdg: PathBuf,
}

impl Libvirt {
    pub fn new(vm_dir: &Path) -> Libvirt {
        Libvirt {
            home: vm_dir.join("libvirt-home"),
            xdg: vm_dir.join("libvirt-xdg"),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOME", self.home.display().to_string()),
            ("XDG_RUNTIME_DIR", self.xdg.display().to_string()),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ]
    }

    pub fn socket(&self) -> PathBuf {
        self.xdg.join("libvirt/libvirt-sock")
    }

    /// The daemon's command: the VM uid creates its own home and runtime directories (root
    /// never creates or chowns anything inside the VM's directory), then becomes libvirtd.
    pub fn daemon_args() -> Vec<String> {
        vec![
            "-c".into(),
            r#"mkdir -p -m 0700 "$HOME" "$XDG_RUNTIME_DIR" && exec libvirtd"#.into(),
        ]
    }
}

/// What the test guest serves on each port it listens on (`guest/init`).
pub const GUEST_PAGE: &str = "netbind-guest-ok";

/// From the calling thread's network namespace: whether an HTTP GET to `addr` gets the test
/// guest's page within `patience` (retrying every 200 ms while the guest boots).
pub fn guest_page_answers(addr: std::net::SocketAddr, patience: Duration) -> bool {
    use std::io::{Read, Write};
    let started = Instant::now();
    while started.elapsed() < patience {
        if let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = stream.read_to_string(&mut body);
            if body.contains(GUEST_PAGE) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // test code
    use super::*;

    /// What a hostile guest might print on its console: a line that retitles the terminal
    /// (OSC 0, ended by BEL), clears it (CSI 2J), and a lease line carrying an escape in its
    /// address. Nothing of it reaches the operator as a control character.
    const HOSTILE: &str = "boot\r\n\u{1b}]0;pwned\u{7}\u{1b}[2Jhello\r\n\
                           NETBIND-GUEST lease ip=10.0.2.2\u{1b}[31m router=10.0.2.1 mtu=1500\r\n";

    fn no_controls_but_line_feeds(text: &str) {
        assert!(
            !text.chars().any(|ch| ch.is_control() && ch != '\n'),
            "a control character left in {text:?}"
        );
    }

    /// A guest that prints more than root reads of a file at once ([`MAX_LOG_BYTES`]) before
    /// its lease line: the line is still found (it was not, and `netbind up` failed with "no
    /// lease within 180 s"), the guest's other reports too, and an error still shows how the
    /// console ended.
    #[test]
    fn a_line_past_the_read_cap_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let console = dir.path().join("console.log");
        let filler = "kernel: a verbose boot line, again and again, to fill the console\r\n";
        let mut text =
            filler.repeat(usize::try_from(MAX_LOG_BYTES).expect("fits") / filler.len() + 1000);
        text.push_str("NETBIND-GUEST lease ip=10.0.2.2 router=10.0.2.1 mtu=1500\r\n");
        text.push_str("NETBIND-GUEST ready\r\n");
        std::fs::write(&console, &text).expect("write");
        assert!(std::fs::metadata(&console).expect("stat").len() > MAX_LOG_BYTES);

        let line = wait_for_line(
            &console,
            "NETBIND-GUEST lease ",
            Duration::from_secs(10),
            &|| false,
        )
        .expect("the lease line past the cap");
        assert_eq!(
            line,
            "NETBIND-GUEST lease ip=10.0.2.2 router=10.0.2.1 mtu=1500"
        );
        let reports = lines_containing(&console, "NETBIND-GUEST ", 10).expect("read");
        assert_eq!(reports.len(), 2, "{reports:?}");
        let tail = read_console_tail(&console, 2).expect("tail");
        assert_eq!(
            tail,
            "NETBIND-GUEST lease ip=10.0.2.2 router=10.0.2.1 mtu=1500\nNETBIND-GUEST ready"
        );
    }

    /// The console as a guest writes it, a piece at a time: a line is given once whole (never
    /// while the writer pauses in it), a line longer than [`MAX_LINE_BYTES`] is cut there, and
    /// a console rewritten from its start is read again.
    #[test]
    fn follows_a_console_as_it_grows() {
        use std::io::Write;
        use std::ops::ControlFlow;
        let dir = tempfile::tempdir().expect("tmp");
        let console = dir.path().join("console.log");
        let mut follow = Follow::new(&console);
        let mut lines = Vec::new();
        let poll = |follow: &mut Follow, lines: &mut Vec<String>| {
            let none: Option<()> = follow
                .poll(|line| {
                    lines.push(line.to_string());
                    ControlFlow::Continue(())
                })
                .expect("poll");
            assert!(none.is_none());
        };
        // No file yet: nothing, and no error.
        poll(&mut follow, &mut lines);
        assert!(lines.is_empty() && follow.caught_up());

        let mut file = std::fs::File::create(&console).expect("create");
        file.write_all(b"boot\r\nNETBIND-GUEST le").expect("write");
        poll(&mut follow, &mut lines);
        assert_eq!(lines, ["boot"]);
        // The writer pauses mid-line: nothing until its end comes.
        poll(&mut follow, &mut lines);
        poll(&mut follow, &mut lines);
        assert_eq!(lines, ["boot"]);
        file.write_all(b"ase ip=10.0.2.2\r\n").expect("write");
        poll(&mut follow, &mut lines);
        assert_eq!(lines, ["boot", "NETBIND-GUEST lease ip=10.0.2.2"]);

        // A line with no end for 1 MiB: kept to its first MAX_LINE_BYTES.
        file.write_all(&vec![b'x'; 1 << 20]).expect("write");
        file.write_all(b"\nafter\n").expect("write");
        poll(&mut follow, &mut lines);
        assert_eq!(lines[2].len(), MAX_LINE_BYTES);
        assert_eq!(lines[3], "after");

        // A poll that stops at a line: the next one goes on with the line after it.
        file.write_all(b"one\ntwo\nthree\n").expect("write");
        let first = follow
            .poll(|line| {
                if line == "one" {
                    ControlFlow::Break(line.to_string())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("poll");
        assert_eq!(first.as_deref(), Some("one"));
        poll(&mut follow, &mut lines);
        assert_eq!(lines[lines.len() - 2..], ["two", "three"]);

        // Rewritten from the start, shorter than what was read: read again from its start.
        drop(file);
        std::fs::write(&console, b"again\n").expect("rewrite");
        poll(&mut follow, &mut lines);
        assert_eq!(lines.last().map(String::as_str), Some("again"));

        // A writer going on while the wait runs, pausing mid-line: the line is found whole.
        let writer_path = console.clone();
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(writer_path)
                .expect("open");
            for piece in ["more\n", "NETBIND-GUEST re", "ady\n"] {
                std::thread::sleep(Duration::from_millis(120));
                file.write_all(piece.as_bytes()).expect("write");
            }
        });
        let line = wait_for_line(
            &console,
            "NETBIND-GUEST re",
            Duration::from_secs(10),
            &|| false,
        );
        writer.join().expect("writer");
        assert_eq!(line.as_deref(), Some("NETBIND-GUEST ready"));
    }

    #[test]
    fn what_the_vm_side_wrote_is_shown_without_its_control_characters() {
        assert_eq!(printable("a\u{1b}[2Jb\tc"), "a\\u{1b}[2Jb\tc");
        let dir = tempfile::tempdir().expect("tmp");
        let console = dir.path().join("console.log");
        std::fs::write(&console, HOSTILE).expect("write");

        let text = read_console_tail(&console, 15).expect("read");
        no_controls_but_line_feeds(&text);
        assert_eq!(text.lines().count(), 3, "{text:?}");
        assert!(text.contains("\\u{1b}]0;pwned\\u{7}"), "{text:?}");

        let line = wait_for_line(
            &console,
            "NETBIND-GUEST lease ",
            Duration::from_secs(5),
            &|| false,
        )
        .expect("the lease line");
        no_controls_but_line_feeds(&line);
        assert!(
            line.starts_with("NETBIND-GUEST lease ip=10.0.2.2\\u{1b}[31m"),
            "{line:?}"
        );
    }
}
