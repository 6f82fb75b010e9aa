//! A blocking CRI client: each call is one RPC on containerd's unix socket, run on a small
//! runtime of its own (the tests and `netbind` are synchronous).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, Device, ImageSpec, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, Mount, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::CriError;

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Rpc {
        op,
        status: Box::new(status),
    }
}

/// A connection to a CRI runtime.
#[derive(Debug)]
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// A pod as the kubelet asks for one.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub annotations: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub log_directory: String,
}

/// A container of that pod, locked down as KubeVirt's non-root launcher pod is: a uid and gid,
/// every capability dropped, no_new_privs, a read-only root filesystem, its own PID namespace.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (host path, container path, read-only)
    pub mounts: Vec<(String, String, bool)>,
    /// (host path, container path): e.g. a 0666 tun node, as a device plugin provides it.
    pub devices: Vec<(String, String)>,
    pub uid: i64,
    pub gid: i64,
}

/// The exit of a container, once it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub code: i32,
    pub reason: String,
}

impl Cri {
    pub fn connect(socket: &str) -> Result<Cri, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CriError::Connect {
                socket: socket.into(),
                detail: e.to_string(),
            })?;
        let path = socket.to_string();
        let channel = rt
            .block_on(async move {
                // The URI is a placeholder: the connector below always dials the unix socket.
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
            })
            .map_err(|e| CriError::Connect {
                socket: socket.into(),
                detail: e.to_string(),
            })?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `runtime_name runtime_version (CRI api version)`.
    pub fn version(&mut self) -> Result<String, CriError> {
        let reply = self
            .rt
            .block_on(self.runtime.version(VersionRequest::default()))
            .map_err(rpc("Version"))?
            .into_inner();
        Ok(format!(
            "{} {} (CRI {})",
            reply.runtime_name, reply.runtime_version, reply.runtime_api_version
        ))
    }

    pub fn image_tags(&mut self) -> Result<Vec<String>, CriError> {
        let list = self
            .rt
            .block_on(self.images.list_images(ListImagesRequest::default()))
            .map_err(rpc("ListImages"))?
            .into_inner();
        Ok(list.images.into_iter().flat_map(|i| i.repo_tags).collect())
    }

    fn sandbox_config(pod: &PodSpec) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: pod.log_directory.clone(),
            labels: pod.labels.clone(),
            annotations: pod.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox: containerd makes the pod's namespace and runs the CNI chain. Returns the
    /// sandbox id and how long the call took.
    pub fn run_pod(&mut self, pod: &PodSpec) -> Result<(String, Duration), CriError> {
        let started = Instant::now();
        let id = self
            .rt
            .block_on(self.runtime.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(Self::sandbox_config(pod)),
                ..Default::default()
            }))
            .map_err(rpc("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, started.elapsed()))
    }

    /// The pod's IP and, from containerd's verbose status, its network namespace path and the
    /// CNI result.
    pub fn pod_network(&mut self, id: &str) -> Result<PodNetwork, CriError> {
        let status = self
            .rt
            .block_on(self.runtime.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }))
            .map_err(rpc("PodSandboxStatus"))?
            .into_inner();
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let info: serde_json::Value = status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .unwrap_or_default()
            .to_string();
        Ok(PodNetwork {
            ip,
            netns,
            cni_result: info["cniResult"].clone(),
        })
    }

    /// CreateContainer + StartContainer; returns the container id.
    pub fn start_container(
        &mut self,
        sandbox: &str,
        pod: &PodSpec,
        c: &ContainerSpec,
    ) -> Result<String, CriError> {
        let security = LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            run_as_user: Some(Int64Value { value: c.uid }),
            run_as_group: Some(Int64Value { value: c.gid }),
            readonly_rootfs: true,
            no_new_privs: true,
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Pod as i32,
                pid: NamespaceMode::Container as i32,
                ipc: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: c.name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command.clone(),
            envs: c
                .env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: c
                .mounts
                .iter()
                .map(|(host, container, readonly)| Mount {
                    host_path: host.clone(),
                    container_path: container.clone(),
                    readonly: *readonly,
                    ..Default::default()
                })
                .collect(),
            devices: c
                .devices
                .iter()
                .map(|(host, container)| Device {
                    host_path: host.clone(),
                    container_path: container.clone(),
                    permissions: "rw".into(),
                })
                .collect(),
            log_path: format!("{}.log", c.name),
            linux: Some(LinuxContainerConfig {
                security_context: Some(security),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .block_on(self.runtime.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(Self::sandbox_config(pod)),
            }))
            .map_err(rpc("CreateContainer"))?
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.runtime.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .map_err(rpc("StartContainer"))?;
        Ok(id)
    }

    /// `Some` once the container has exited.
    pub fn exited(&mut self, container: &str) -> Result<Option<Exited>, CriError> {
        let status = self
            .rt
            .block_on(self.runtime.container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: false,
            }))
            .map_err(rpc("ContainerStatus"))?
            .into_inner()
            .status
            .unwrap_or_default();
        Ok(
            (status.state == ContainerState::ContainerExited as i32).then(|| Exited {
                code: status.exit_code,
                reason: format!("{} {}", status.reason, status.message)
                    .trim()
                    .to_string(),
            }),
        )
    }

    /// The host pid of the container's first process (from containerd's verbose status).
    pub fn container_pid(&mut self, container: &str) -> Result<Option<u32>, CriError> {
        let status = self
            .rt
            .block_on(self.runtime.container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: true,
            }))
            .map_err(rpc("ContainerStatus"))?
            .into_inner();
        Ok(status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .and_then(|v| v["pid"].as_u64())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0))
    }

    /// The container's log file on the host (CRI format).
    pub fn log_path(&mut self, container: &str) -> Result<String, CriError> {
        Ok(self
            .rt
            .block_on(self.runtime.container_status(ContainerStatusRequest {
                container_id: container.into(),
                verbose: false,
            }))
            .map_err(rpc("ContainerStatus"))?
            .into_inner()
            .status
            .unwrap_or_default()
            .log_path)
    }

    /// StopPodSandbox (CNI DEL with the namespace) then RemovePodSandbox (DEL again, without).
    pub fn remove_pod(&mut self, id: &str) -> Result<(), CriError> {
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .map_err(rpc("StopPodSandbox"))?;
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .map_err(rpc("RemovePodSandbox"))?;
        Ok(())
    }

    pub fn sandboxes(&mut self) -> Result<Vec<String>, CriError> {
        let list = self
            .rt
            .block_on(
                self.runtime
                    .list_pod_sandbox(ListPodSandboxRequest::default()),
            )
            .map_err(rpc("ListPodSandbox"))?
            .into_inner();
        Ok(list.items.into_iter().map(|s| s.id).collect())
    }

    pub fn containers(&mut self) -> Result<Vec<String>, CriError> {
        let list = self
            .rt
            .block_on(
                self.runtime
                    .list_containers(ListContainersRequest::default()),
            )
            .map_err(rpc("ListContainers"))?
            .into_inner();
        Ok(list.containers.into_iter().map(|c| c.id).collect())
    }
}

/// What containerd reports about a pod's network.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetwork {
    pub ip: String,
    /// The pod's network namespace, e.g. `/var/run/netns/cni-…` (in containerd's mount
    /// namespace).
    pub netns: String,
    /// The CNI chain's result as containerd cached it.
    pub cni_result: serde_json::Value,
}
