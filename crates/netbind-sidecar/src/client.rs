//! The client side of the hook API, dialled the way virt-launcher dials a sidecar: for the
//! tests and the CRI tier, which play virt-launcher.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::{info, v1alpha2, v1alpha3};

/// Connects to the sidecar's socket (the URI is a placeholder; the connector dials the path).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// A blocking client, for callers without a runtime of their own.
#[derive(Debug)]
pub struct HookClient {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl HookClient {
    pub fn connect(socket: &Path) -> Result<HookClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("runtime: {err}"))?;
        let channel = runtime
            .block_on(connect(socket))
            .map_err(|err| format!("connect {}: {err}", socket.display()))?;
        Ok(HookClient { runtime, channel })
    }

    pub fn info(&self) -> Result<info::InfoResult, tonic::Status> {
        let mut client = info::info_client::InfoClient::new(self.channel.clone());
        self.runtime
            .block_on(client.info(info::InfoParams {}))
            .map(tonic::Response::into_inner)
    }

    /// `OnDefineDomain` of `v1alpha3`.
    pub fn on_define_domain(
        &self,
        domain_xml: &[u8],
        vmi: &[u8],
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut client = v1alpha3::callbacks_client::CallbacksClient::new(self.channel.clone());
        self.runtime
            .block_on(client.on_define_domain(v1alpha3::OnDefineDomainParams {
                domain_xml: domain_xml.to_vec(),
                vmi: vmi.to_vec(),
            }))
            .map(|response| response.into_inner().domain_xml)
    }

    /// `OnDefineDomain` of `v1alpha2`.
    pub fn on_define_domain_v1alpha2(
        &self,
        domain_xml: &[u8],
        vmi: &[u8],
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut client = v1alpha2::callbacks_client::CallbacksClient::new(self.channel.clone());
        self.runtime
            .block_on(client.on_define_domain(v1alpha2::OnDefineDomainParams {
                domain_xml: domain_xml.to_vec(),
                vmi: vmi.to_vec(),
            }))
            .map(|response| response.into_inner().domain_xml)
    }

    pub fn shutdown(&self) -> Result<(), tonic::Status> {
        let mut client = v1alpha3::callbacks_client::CallbacksClient::new(self.channel.clone());
        self.runtime
            .block_on(client.shutdown(v1alpha3::ShutdownParams {}))
            .map(|_| ())
    }
}
