//! KubeVirt's hook API on the sidecar's socket: `Info`, and the `Callbacks` of `v1alpha3`
//! and `v1alpha2` (virt-launcher picks the newest both sides speak).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use netbind_contract::handoff::Handoff;
use tonic::{Request, Response, Status};

use crate::define::{Context, DefineError, Defined, define};
use crate::facts::{PodFacts, observe_own};
use crate::proto::{info, v1alpha2, v1alpha3};

/// Where the pod's facts come from.
#[derive(Debug, Clone)]
pub enum FactsSource {
    /// The sidecar's own namespace, observed at each call (how it runs in a pod).
    Observe,
    /// Given (offline: `--pod` and `--record`); no DHCP is served then.
    Fixed(PodFacts),
}

#[derive(Debug)]
pub struct Settings {
    pub plugin: String,
    pub resolv_conf: PathBuf,
    pub facts: FactsSource,
}

/// The state the three services share.
#[derive(Debug)]
pub struct Hooks {
    settings: Settings,
    /// What the DHCP servers serve, once the first OnDefineDomain started them.
    serving: Mutex<Option<Handoff>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Hooks {
    /// `shutdown` turns true when virt-launcher calls `Shutdown`.
    pub fn new(settings: Settings, shutdown: tokio::sync::watch::Sender<bool>) -> Arc<Hooks> {
        Arc::new(Hooks {
            settings,
            serving: Mutex::new(None),
            shutdown,
        })
    }

    /// `OnDefineDomain`, whatever the version.
    async fn on_define_domain(
        self: &Arc<Self>,
        xml: Vec<u8>,
        vmi: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let hooks = Arc::clone(self);
        // Netlink, planning and binding sockets block: off the async workers.
        tokio::task::spawn_blocking(move || hooks.define_blocking(&xml, &vmi))
            .await
            .map_err(|err| Status::internal(format!("OnDefineDomain: {err}")))?
    }

    fn define_blocking(&self, xml: &[u8], vmi: &[u8]) -> Result<Vec<u8>, Status> {
        let resolv_conf = read_resolv_conf(&self.settings.resolv_conf)?;
        let (facts, serve_dhcp) = match &self.settings.facts {
            FactsSource::Fixed(facts) => (facts.clone(), false),
            FactsSource::Observe => (
                observe_own().map_err(|err| {
                    Status::unavailable(format!("OnDefineDomain: observe the pod: {err}"))
                })?,
                true,
            ),
        };
        let ctx = Context {
            plugin: &self.settings.plugin,
            resolv_conf: &resolv_conf,
        };
        let Defined {
            domain_xml,
            handoff,
        } = define(xml, vmi, &facts, &ctx).map_err(status_of)?;
        if serve_dhcp && !handoff.interfaces.is_empty() {
            self.serve(handoff)?;
        }
        Ok(domain_xml.into_bytes())
    }

    /// Starts the DHCP servers the first time; later calls (a retried define, a migration
    /// target) keep what runs.
    fn serve(&self, handoff: Handoff) -> Result<(), Status> {
        let mut serving = self
            .serving
            .lock()
            .map_err(|_| Status::internal("OnDefineDomain: the DHCP state is poisoned"))?;
        match serving.as_ref() {
            Some(current) if *current == handoff => Ok(()),
            Some(_) => {
                tracing::warn!("the VMI's networks changed since DHCP started; serving the first");
                Ok(())
            }
            None => {
                let count = crate::dhcp::start(&handoff).map_err(|err| {
                    Status::failed_precondition(format!("OnDefineDomain: start DHCP: {err}"))
                })?;
                tracing::info!(vmi = %handoff.vmi, servers = count, "serving DHCP");
                *serving = Some(handoff);
                Ok(())
            }
        }
    }
}

fn read_resolv_conf(path: &std::path::Path) -> Result<String, Status> {
    match netbind_contract::input::read_regular(path, 64 * 1024) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        // A pod without one gets no DNS options, as with an empty file.
        Err(netbind_contract::input::InputError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(String::new())
        }
        Err(err) => Err(Status::failed_precondition(format!(
            "OnDefineDomain: {err}"
        ))),
    }
}

fn status_of(err: DefineError) -> Status {
    let message = format!("OnDefineDomain: {err}");
    match err {
        DefineError::VmiJson(_) | DefineError::Vmi(_) | DefineError::Domain(_) => {
            Status::invalid_argument(message)
        }
        DefineError::NoRecord { .. } | DefineError::Plan { .. } => {
            Status::failed_precondition(message)
        }
    }
}

/// `Info`: the hook points and versions.
#[derive(Debug, Clone)]
pub struct InfoService;

#[tonic::async_trait]
impl info::info_server::Info for InfoService {
    async fn info(
        &self,
        _: Request<info::InfoParams>,
    ) -> Result<Response<info::InfoResult>, Status> {
        let point = |name: &str| info::HookPoint {
            name: name.into(),
            priority: 0,
        };
        Ok(Response::new(info::InfoResult {
            name: crate::HOOK_NAME.into(),
            hook_points: vec![point("OnDefineDomain"), point("Shutdown")],
            versions: vec!["v1alpha3".into(), "v1alpha2".into()],
        }))
    }
}

/// `kubevirt.hooks.v1alpha3.Callbacks`.
#[derive(Debug, Clone)]
pub struct V1alpha3(pub Arc<Hooks>);

#[tonic::async_trait]
impl v1alpha3::callbacks_server::Callbacks for V1alpha3 {
    async fn on_define_domain(
        &self,
        request: Request<v1alpha3::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha3::OnDefineDomainResult>, Status> {
        let params = request.into_inner();
        let domain_xml = self
            .0
            .on_define_domain(params.domain_xml, params.vmi)
            .await?;
        Ok(Response::new(v1alpha3::OnDefineDomainResult { domain_xml }))
    }

    async fn pre_cloud_init_iso(
        &self,
        request: Request<v1alpha3::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha3::PreCloudInitIsoResult>, Status> {
        // Not subscribed; answered unchanged should virt-launcher call it anyway.
        let params = request.into_inner();
        Ok(Response::new(v1alpha3::PreCloudInitIsoResult {
            cloud_init_no_cloud_source: params.cloud_init_no_cloud_source,
            cloud_init_data: params.cloud_init_data,
        }))
    }

    async fn shutdown(
        &self,
        _: Request<v1alpha3::ShutdownParams>,
    ) -> Result<Response<v1alpha3::ShutdownResult>, Status> {
        tracing::info!("Shutdown: the VM is gone");
        self.0.shutdown.send_replace(true);
        Ok(Response::new(v1alpha3::ShutdownResult {}))
    }
}

/// `kubevirt.hooks.v1alpha2.Callbacks`.
#[derive(Debug, Clone)]
pub struct V1alpha2(pub Arc<Hooks>);

#[tonic::async_trait]
impl v1alpha2::callbacks_server::Callbacks for V1alpha2 {
    async fn on_define_domain(
        &self,
        request: Request<v1alpha2::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha2::OnDefineDomainResult>, Status> {
        let params = request.into_inner();
        let domain_xml = self
            .0
            .on_define_domain(params.domain_xml, params.vmi)
            .await?;
        Ok(Response::new(v1alpha2::OnDefineDomainResult { domain_xml }))
    }

    async fn pre_cloud_init_iso(
        &self,
        request: Request<v1alpha2::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha2::PreCloudInitIsoResult>, Status> {
        let params = request.into_inner();
        Ok(Response::new(v1alpha2::PreCloudInitIsoResult {
            cloud_init_no_cloud_source: params.cloud_init_no_cloud_source,
            cloud_init_data: params.cloud_init_data,
        }))
    }
}
