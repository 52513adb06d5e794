//! The HTTP client aws-config's providers (instance metadata, container, STS) use: the same
//! reqwest/rustls stack as the rest of kvssink, with the `ca-file` certificates added, so that
//! aws-config brings no second HTTP or TLS implementation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// Builds reqwest clients for aws-config, one per connect timeout asked for.
#[derive(Clone, Debug)]
pub struct ReqwestHttpClient {
    roots: Arc<Vec<reqwest::Certificate>>,
    clients: Arc<Mutex<HashMap<Option<Duration>, reqwest::Client>>>,
}

impl ReqwestHttpClient {
    /// A client trusting the platform's roots plus the PEM certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let roots = match ca_file {
            Some(path) => load_pem_roots(path)?,
            None => Vec::new(),
        };
        Ok(ReqwestHttpClient {
            roots: Arc::new(roots),
            clients: Arc::default(),
        })
    }

    fn client(&self, connect_timeout: Option<Duration>) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(timeout) = connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        for cert in self.roots.iter() {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }
}

/// Reads every certificate of a PEM bundle.
pub fn load_pem_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let client = self.client(settings.connect_timeout());
        let timeout = match (settings.connect_timeout(), settings.read_timeout()) {
            (Some(connect), Some(read)) => Some(connect + read),
            _ => None,
        };
        SharedHttpConnector::new(ReqwestConnector { client, timeout })
    }
}

#[derive(Debug)]
struct ReqwestConnector {
    client: Result<reqwest::Client, String>,
    /// Whole-request limit: the connect timeout plus the read timeout.
    timeout: Option<Duration>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let timeout = self.timeout;
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            let body = body.bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                ConnectorError::user("streaming request bodies are not supported".into())
            })?;
            let mut builder = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body);
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(connector_error)?;
            let mut out = http::Response::new(SdkBody::from(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}
