//! `netbind validate`: messages with file:line:column, all errors at once, exit codes.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed step is a failed test

use std::process::{Command, Output};

fn validate(files: &[&std::path::Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netbind"))
        .arg("validate")
        .args(files)
        .output()
        .expect("runs")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let file_path = dir.path().join(name);
    std::fs::write(&file_path, text).expect("write");
    file_path
}

const BAD: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: bad
spec:
  domain:
    devices:
      interfaces:
      - name: default
        masquerade: {}
        model: virtio-net
        macAddress: \"02:00:00:00:00:00\"
        ports:
        - port: 0
  networks:
  - name: default
    pod: {}
  - name: orphan
    pod: {}
";

#[test]
fn reports_every_error_with_position_and_exit_1() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = write(&dir, "bad.yaml", BAD);
    let out = validate(&[&path]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = path.display();
    for want in [
        format!(
            "{shown}:11:16: spec.domain.devices.interfaces[0].model: interface spec.domain.devices.interfaces[0].name uses model virtio-net that is not supported."
        ),
        format!(
            "{shown}:12:21: spec.domain.devices.interfaces[0].macAddress: The requested MAC address is reserved for the in-pod bridge. Please choose another one."
        ),
        format!(
            "{shown}:14:11: spec.domain.devices.interfaces[0].ports[0]: Port field is mandatory."
        ),
        format!("{shown}:18:11: spec.networks[1].name: spec.networks[1].name 'orphan' not found."),
        "more than one interface is connected to a pod network in spec.interfaces".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn exit_codes_valid_invalid_unreadable() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let good = root.join("vmi-masquerade.yaml");
    let out = validate(&[&good]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let vm = root.join("vm-masquerade.yaml");
    assert_eq!(validate(&[&vm]).status.code(), Some(0));

    let broken = write(
        &dir,
        "broken.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nspec: [\n",
    );
    let out = validate(&[&broken]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.yaml:"),
        "file named"
    );

    let dup = write(
        &dir,
        "dup.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nspec: {}\nspec: {}\n",
    );
    let out = validate(&[&dup]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dup.yaml:4:1: duplicate mapping key: spec")
    );

    let wrong_type = write(
        &dir,
        "type.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nspec:\n  domain:\n    devices:\n      interfaces: {a: 1}\n",
    );
    let out = validate(&[&wrong_type]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("type.yaml:6:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = dir.path().join("absent.yaml");
    assert_eq!(validate(&[&missing]).status.code(), Some(2));

    let huge = write(&dir, "huge.yaml", &"#".repeat(2 << 20));
    let out = validate(&[&huge]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"));

    let bad = write(&dir, "bad.yaml", BAD);
    // Several files: each is reported, the worst exit code wins.
    let out = validate(&[&good, &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vmi-masquerade.yaml: valid"));
    assert_eq!(validate(&[&good, &bad, &broken]).status.code(), Some(2));
}

#[test]
fn alias_bomb_is_refused_not_expanded() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut yaml = String::from(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for idx in 1..12 {
        yaml.push_str(&format!(
            "a{idx}: &a{idx} [*a{path}, *a{path}, *a{path}, *a{path}, *a{path}, *a{path}, *a{path}, *a{path}, *a{path}, *a{path}]\n",
            path = idx - 1
        ));
    }
    let path = write(&dir, "bomb.yaml", &yaml);
    let out = validate(&[&path]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a binary with a deadline: a FIFO input must not hang it.
fn run_bounded(mut cmd: Command) -> Output {
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{cmd:?} hung on a special file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A FIFO (no writer: a blocking open would wait forever) and a symlink to /dev/zero (no end,
/// and a stat size of 0) in place of each input file: every reader refuses them at once,
/// naming the file and what it is.
#[test]
fn special_files_are_refused_not_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = netbind_testkit::repo_root();
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let vmi = root.join("examples/vmi-masquerade.yaml");
    let pod = root.join("testdata/pods/pod-v4.json");
    let bin = |name: &str| std::path::Path::new(env!("CARGO_BIN_EXE_netbind")).with_file_name(name);
    for (special, kind) in [(&fifo, "is a FIFO"), (&zero, "is a character device")] {
        let special_os = special.as_os_str();
        let cases: Vec<(&str, Vec<&std::ffi::OsStr>)> = vec![
            ("validate VMI", vec!["validate".as_ref(), special_os]),
            (
                "plan VMI",
                vec![
                    "plan".as_ref(),
                    special_os,
                    "--pod".as_ref(),
                    pod.as_os_str(),
                ],
            ),
            (
                "plan POD.json",
                vec![
                    "plan".as_ref(),
                    vmi.as_os_str(),
                    "--pod".as_ref(),
                    special_os,
                ],
            ),
            (
                "plan --resolv-conf",
                vec![
                    "plan".as_ref(),
                    vmi.as_os_str(),
                    "--pod".as_ref(),
                    pod.as_os_str(),
                    "--resolv-conf".as_ref(),
                    special_os,
                ],
            ),
            ("up VMI", vec!["up".as_ref(), special_os]),
        ];
        for (what, args) in cases {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_netbind"));
            cmd.args(&args)
                .env("NETBIND_RUN_DIR", dir.path().join("run"));
            let out = run_bounded(cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{what}: accepted {}",
                special.display()
            );
            assert!(
                err.contains(&format!("{}: {kind}", special.display())),
                "{what}: {err}"
            );
        }
        // The handler refuses the VMI before it opens any namespace.
        let mut handler = Command::new(bin("netbind-handler"));
        handler
            .args(["setup", "--netns", "/run/netns/netbind-absent-ns", "--vmi"])
            .arg(special)
            .arg("--handoff-dir")
            .arg(dir.path().join("h"));
        let out = run_bounded(handler);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(kind),
            "handler: {err}"
        );
    }
}
