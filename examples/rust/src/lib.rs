//! A small Envoy HTTP filter on the proxy-wasm Rust SDK ("edge guard"), written to be tested
//! through proxywasm-host (see test_rust_filter.py next to this crate).
//!
//! Plugin configuration: `key=value` pairs separated by `;` or newlines, e.g.
//! `tag=green;block_prefix=/admin;auth_cluster=authz;deny_word=forbidden`.
//! Unknown keys reject the configuration (on_configure returns false).
//!
//! Per request:
//! * reads all request headers and forwards `x-edge-header-count` (all of them, pseudo-headers
//!   included) and `x-edge-header-names` (the regular ones, in order);
//! * adds `x-edge-tag`, replaces `x-edge-replace`, removes `x-edge-remove`;
//! * a path under `block_prefix` gets a local 403 with `x-edge-blocked: <tag>`;
//! * a request with `x-edge-token` waits for an HTTP callout to `auth_cluster` (`GET /check`);
//!   a 200 answer resumes the request with `x-edge-user` from the callout's `x-user`, anything
//!   else is a local 401, a failed callout (zero headers) a local 503;
//! * a request body is buffered to its end; one containing `deny_word` gets a local 403;
//! * counts requests in the counter `edge_guard.requests`, logs one line per finished stream;
//! * the response gets `x-edge-tag` and `x-edge-upstream-status`; `x-upstream-secret` is removed.

use std::rc::Rc;
use std::time::Duration;

use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EdgeGuardRoot::default()) });
}}

#[derive(Default)]
struct Config {
    tag: String,
    block_prefix: Option<String>,
    auth_cluster: Option<String>,
    deny_word: Option<String>,
}

impl Config {
    fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config { tag: "edge".to_string(), ..Config::default() };
        for item in text.split(|c| c == ';' || c == '\n').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| format!("not key=value: {item}"))?;
            let value = value.trim().to_string();
            match key.trim() {
                "tag" => config.tag = value,
                "block_prefix" => config.block_prefix = Some(value),
                "auth_cluster" => config.auth_cluster = Some(value),
                "deny_word" => config.deny_word = Some(value),
                other => return Err(format!("unknown key: {other}")),
            }
        }
        Ok(config)
    }
}

#[derive(Default)]
struct EdgeGuardRoot {
    config: Rc<Config>,
    requests_metric: u32,
}

impl Context for EdgeGuardRoot {}

impl RootContext for EdgeGuardRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        match hostcalls::define_metric(MetricType::Counter, "edge_guard.requests") {
            Ok(id) => {
                self.requests_metric = id;
                true
            }
            Err(status) => {
                warn!("edge_guard: cannot define the counter: {status:?}");
                false
            }
        }
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        match Config::parse(&text) {
            Ok(config) => {
                info!(
                    "edge_guard configured: tag={} block_prefix={:?} auth_cluster={:?}",
                    config.tag, config.block_prefix, config.auth_cluster
                );
                self.config = Rc::new(config);
                true
            }
            Err(error) => {
                warn!("edge_guard: bad configuration ({error})");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EdgeGuard {
            context_id,
            config: Rc::clone(&self.config),
            requests_metric: self.requests_metric,
            path: String::new(),
            auth_token: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct EdgeGuard {
    context_id: u32,
    config: Rc<Config>,
    requests_metric: u32,
    path: String,
    auth_token: Option<u32>,
}

impl EdgeGuard {
    fn deny(&self, status: u32, reason: &str) {
        let body = format!("{reason} ({})\n", self.config.tag);
        self.send_http_response(status, vec![("x-edge-blocked", self.config.tag.as_str())], Some(body.as_bytes()));
    }
}

impl Context for EdgeGuard {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        if self.auth_token != Some(token_id) {
            return;
        }
        self.auth_token = None;
        if num_headers == 0 {
            // A failed callout (reset, no healthy upstream) is delivered with zero headers; the
            // response maps are then unreadable and the SDK's getters would panic.
            warn!("edge_guard #{} auth callout failed", self.context_id);
            self.deny(503, "auth unavailable");
            return;
        }
        let status = self.get_http_call_response_header(":status");
        info!("edge_guard #{} auth answer: status={:?} headers={num_headers} body={body_size}", self.context_id, status);
        match (status.as_deref(), self.get_http_call_response_header("x-user")) {
            (Some("200"), Some(user)) => {
                self.set_http_request_header("x-edge-user", Some(&user));
                self.resume_http_request();
            }
            _ => self.deny(401, "not authenticated"),
        }
    }
}

impl HttpContext for EdgeGuard {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::increment_metric(self.requests_metric, 1);
        let headers = self.get_http_request_headers();
        let names: Vec<&str> =
            headers.iter().map(|(name, _)| name.as_str()).filter(|name| !name.starts_with(':')).collect();
        self.path = self.get_http_request_header(":path").unwrap_or_default();

        if let Some(prefix) = &self.config.block_prefix {
            if self.path.starts_with(prefix.as_str()) {
                self.deny(403, "blocked path");
                return Action::Pause;
            }
        }

        self.add_http_request_header("x-edge-header-count", &headers.len().to_string());
        self.add_http_request_header("x-edge-header-names", &names.join(","));
        self.add_http_request_header("x-edge-tag", &self.config.tag);
        if self.get_http_request_header("x-edge-replace").is_some() {
            self.set_http_request_header("x-edge-replace", Some("replaced"));
        }
        self.remove_http_request_header("x-edge-remove");

        if let (Some(token), Some(cluster)) = (self.get_http_request_header("x-edge-token"), &self.config.auth_cluster) {
            let authority = cluster.clone();
            let call = self.dispatch_http_call(
                cluster,
                vec![(":method", "GET"), (":path", "/check"), (":authority", &authority), ("x-token", &token)],
                None,
                vec![],
                Duration::from_millis(500),
            );
            return match call {
                Ok(token_id) => {
                    self.auth_token = Some(token_id);
                    Action::Pause
                }
                Err(status) => {
                    warn!("edge_guard: callout to {cluster} failed: {status:?}");
                    self.deny(503, "auth unavailable");
                    Action::Pause
                }
            };
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause; // buffer: the next call sees the whole body so far
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        info!("edge_guard #{} request body {} bytes", self.context_id, body.len());
        if let Some(word) = &self.config.deny_word {
            if body.windows(word.len().max(1)).any(|w| w == word.as_bytes()) {
                self.deny(403, "denied body");
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let status = self.get_http_response_header(":status").unwrap_or_default();
        self.add_http_response_header("x-edge-tag", &self.config.tag);
        self.set_http_response_header("x-edge-upstream-status", Some(&status));
        self.remove_http_response_header("x-upstream-secret");
        Action::Continue
    }

    fn on_log(&mut self) {
        let status = self.get_http_response_header(":status").unwrap_or_else(|| "-".to_string());
        info!("edge_guard #{} done: {} -> {}", self.context_id, self.path, status);
    }
}
