//! `netbind-sidecar`: KubeVirt's hook sidecar for netbind's binding plugin. Run with no
//! capability; it refuses to start with any.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use netbind_model::pod::ObservedPod;
use netbind_model::pod_record::PodRecord;
use netbind_sidecar::facts::PodFacts;
use netbind_sidecar::proto::{info, v1alpha2, v1alpha3};
use netbind_sidecar::service::{FactsSource, Hooks, InfoService, Settings, V1alpha2, V1alpha3};

#[derive(Parser, Debug)]
#[command(
    name = "netbind-sidecar",
    version,
    about = "netbind's KubeVirt hook sidecar: domain interfaces and DHCP, with no privilege"
)]
struct Cli {
    /// The hook socket (KubeVirt mounts the pod's hook directory at /var/run/kubevirt-hooks,
    /// the sidecar's own subdirectory of it).
    #[arg(long, default_value = "/var/run/kubevirt-hooks/netbind.sock")]
    socket: PathBuf,
    /// The binding's name in the KubeVirt CR (default: $NETWORK_BINDING_PLUGIN_NAME, which
    /// KubeVirt sets, else "netbind").
    #[arg(long)]
    plugin: Option<String>,
    /// The pod's resolv.conf.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Offline: plan from this observed pod (POD.json) instead of the sidecar's namespace, and
    /// serve no DHCP.
    #[arg(long, requires = "record")]
    pod: Option<PathBuf>,
    /// Offline: a pod record, as netbind-cni writes it on the tap (repeatable).
    #[arg(long, requires = "pod")]
    record: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum SidecarError {
    #[error(transparent)]
    Privilege(#[from] netbind_launcher::privilege::PrivilegeError),
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    #[error("--record {text:?}: {source}")]
    Record {
        text: String,
        source: netbind_model::pod_record::RecordError,
    },
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("serve: {0}")]
    Serve(tonic::transport::Error),
}

fn facts(cli: &Cli) -> Result<FactsSource, SidecarError> {
    let Some(path) = &cli.pod else {
        return Ok(FactsSource::Observe);
    };
    let input = |message: String| SidecarError::Input {
        path: path.display().to_string(),
        message,
    };
    let bytes = netbind_contract::input::read_regular(path, 1 << 20)
        .map_err(|err| input(err.to_string()))?;
    let pod = ObservedPod::from_json(&String::from_utf8_lossy(&bytes))
        .map_err(|err| input(err.to_string()))?;
    let records = cli
        .record
        .iter()
        .map(|text| {
            PodRecord::decode(text).map_err(|source| SidecarError::Record {
                text: text.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(FactsSource::Fixed(PodFacts::new(pod, records)))
}

/// Binds the socket; a stale socket file of an earlier run is replaced, anything else is not.
fn listen(path: &std::path::Path) -> Result<tokio::net::UnixListener, SidecarError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| SidecarError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(err)?;
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}

fn run(cli: Cli) -> Result<(), SidecarError> {
    netbind_launcher::privilege::check()?;
    netbind_launcher::privilege::set_nondumpable()?;
    let plugin = cli
        .plugin
        .clone()
        .or_else(|| std::env::var(netbind_sidecar::PLUGIN_NAME_ENV).ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "netbind".into());
    let settings = Settings {
        plugin,
        resolv_conf: cli.resolv_conf.clone(),
        facts: facts(&cli)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SidecarError::Runtime)?;
    runtime.block_on(async {
        let listener = listen(&cli.socket)?;
        let (shutdown, stopping) = tokio::sync::watch::channel(false);
        let on_term = shutdown.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                on_term.send_replace(true);
            }
        });
        let hooks = Hooks::new(settings, shutdown);
        // The line a supervisor (or a test) waits for.
        println!(
            "{{\"event\":\"ready\",\"socket\":{:?}}}",
            cli.socket.display().to_string()
        );
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let serve = tonic::transport::Server::builder()
            .add_service(info::info_server::InfoServer::new(InfoService))
            .add_service(v1alpha3::callbacks_server::CallbacksServer::new(V1alpha3(
                Arc::clone(&hooks),
            )))
            .add_service(v1alpha2::callbacks_server::CallbacksServer::new(V1alpha2(
                hooks,
            )))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                stopped(stopping.clone()),
            );
        // A graceful stop waits for clients to close their connections; one that never does
        // (it stopped reading) must not keep the pod's container alive.
        let grace = async {
            stopped(stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = serve => served.map_err(SidecarError::Serve),
            () = grace => {
                tracing::warn!("clients kept their connections open; stopping anyway");
                Ok(())
            }
        }
    })?;
    let _ = std::fs::remove_file(&cli.socket);
    Ok(())
}

/// How long a stop waits for clients to close their connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Exit status when the sidecar holds a privilege (as the launcher's).
const EXIT_PRIVILEGED: u8 = 3;

fn main() -> ExitCode {
    netbind_log::init("info");
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ SidecarError::Privilege(_)) => {
            eprintln!("netbind-sidecar: {err}");
            ExitCode::from(EXIT_PRIVILEGED)
        }
        Err(err) => {
            eprintln!("netbind-sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
