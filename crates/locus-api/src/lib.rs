//! # locus-api
//!
//! The HTTP face of a node: REST under `/api/v1`, `/healthz`, Prometheus
//! `/metrics`, the OpenAPI document generated from these handlers at
//! `/api/v1/openapi.json`, and a Swagger UI at `/api/v1/docs`.
//!
//! Owns: routes, request/response shapes, the error envelope, HTTP metrics.
//! Every user call carries a token checked offline before its handler
//! ([`auth`]); node-only routes (handovers, imports, span fetches, pushed
//! copies) take only calls signed by a node of an admitted org
//! ([`node_calls`]); the nonces it saw are the one state the API keeps.
//!
//! Must never: hold other state of its own or decide anything about the cluster —
//! every handler reads from or asks the [`Node`]; a handler that needs a
//! rule calls a function of `locus-core` or `locus-agent`.

mod access;
mod artifacts;
mod auth;
mod error;
mod forward;
mod market;
mod node_calls;
mod readings;
mod routes;
mod tenants;
mod things;
pub mod tls;
mod workloads;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use locus_agent::Node;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
#[cfg(feature = "swagger-ui")]
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, ErrorBody, ErrorDetail};

/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// Path of the Swagger UI.
pub const DOCS_PATH: &str = "/api/v1/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "locus node API",
        description = "REST API of one locus node. Every node serves the same API; \
                       errors always have the shape {\"error\": {\"code\", \"message\", \"details\"}}.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "node", description = "The node itself: identity, inventory, health"),
        (name = "observability", description = "Health and metrics"),
        (name = "cluster", description = "Nodes, liveness, sites and network coordinates, as this node sees them"),
        (name = "workloads", description = "Workloads: submit, place, run, stop, destroy, logs; any node forwards to the owner"),
        (name = "readings", description = "Readings of things: EdgeX-compatible ingestion, queries, signed checkpoints of the seal log, inclusion and consistency proofs, exported bundles for offline verification"),
        (name = "things", description = "Things (IoT devices): the registry, managers and their change, commands over MQTT, LwM2M or HTTP"),
        (name = "edgex", description = "The EdgeX v3 subset a device service or client can point at: events in, commands out"),
        (name = "access", description = "Access: who the token speaks for, tokens, revocations, the orgs of the cluster, join tokens and enrollment"),
        (name = "market", description = "The market between orgs: offers and requests on a shared book, clearing rounds anyone rechecks, explanations, and the contracts signed by both orgs"),
        (name = "artifacts", description = "Content-addressed artifacts (CIDv1, BLAKE3): upload, download with ranges, verified peer transfer, replication, pins, collection"),
    )
)]
struct ApiDoc;

fn api_router() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(utoipa_axum::routes!(tenants::set, tenants::remove))
        .routes(utoipa_axum::routes!(tenants::list))
        .routes(utoipa_axum::routes!(tenants::add_user, tenants::users))
        .routes(utoipa_axum::routes!(tenants::remove_user))
        .routes(utoipa_axum::routes!(routes::healthz))
        .routes(utoipa_axum::routes!(routes::metrics))
        .routes(utoipa_axum::routes!(routes::node))
        .routes(utoipa_axum::routes!(routes::devices))
        .routes(utoipa_axum::routes!(routes::nodes))
        .routes(utoipa_axum::routes!(routes::node_by_id))
        .routes(utoipa_axum::routes!(routes::rtt))
        .routes(utoipa_axum::routes!(routes::sites))
        .routes(utoipa_axum::routes!(workloads::submit, workloads::list))
        .routes(utoipa_axum::routes!(workloads::handover))
        .routes(utoipa_axum::routes!(
            workloads::inspect,
            workloads::update,
            workloads::remove
        ))
        .routes(utoipa_axum::routes!(workloads::start))
        .routes(utoipa_axum::routes!(workloads::stop))
        .routes(utoipa_axum::routes!(workloads::kill))
        .routes(utoipa_axum::routes!(workloads::logs))
        .routes(utoipa_axum::routes!(artifacts::put, artifacts::list))
        .routes(utoipa_axum::routes!(artifacts::gc))
        .routes(utoipa_axum::routes!(artifacts::stat, artifacts::put_copy))
        .routes(utoipa_axum::routes!(artifacts::content))
        .routes(utoipa_axum::routes!(artifacts::bao))
        .routes(utoipa_axum::routes!(artifacts::fetch))
        .routes(utoipa_axum::routes!(artifacts::pin))
        .routes(utoipa_axum::routes!(artifacts::unpin))
        .routes(utoipa_axum::routes!(readings::add_event))
        .routes(utoipa_axum::routes!(readings::list))
        .routes(utoipa_axum::routes!(readings::checkpoint))
        .routes(utoipa_axum::routes!(readings::bundle))
        .routes(utoipa_axum::routes!(things::add, things::list))
        .routes(utoipa_axum::routes!(things::handover))
        .routes(utoipa_axum::routes!(things::inspect, things::remove))
        .routes(utoipa_axum::routes!(things::attach))
        .routes(utoipa_axum::routes!(things::command))
        .routes(utoipa_axum::routes!(things::edgex_get, things::edgex_put))
        .routes(utoipa_axum::routes!(readings::proof))
        .routes(utoipa_axum::routes!(readings::consistency))
        .routes(utoipa_axum::routes!(readings::edgex_by_time))
        .routes(utoipa_axum::routes!(readings::edgex_by_device))
        .routes(utoipa_axum::routes!(readings::import))
        .routes(utoipa_axum::routes!(readings::import_origins))
        .routes(utoipa_axum::routes!(readings::imported))
        .routes(utoipa_axum::routes!(access::whoami))
        .routes(utoipa_axum::routes!(access::audit))
        .routes(utoipa_axum::routes!(access::mint))
        .routes(utoipa_axum::routes!(access::revoke))
        .routes(utoipa_axum::routes!(access::orgs, access::admit))
        .routes(utoipa_axum::routes!(access::grant, access::grants))
        .routes(utoipa_axum::routes!(access::join_token))
        .routes(utoipa_axum::routes!(access::enroll))
        .routes(utoipa_axum::routes!(market::book))
        .routes(utoipa_axum::routes!(market::offer))
        .routes(utoipa_axum::routes!(market::request))
        .routes(utoipa_axum::routes!(market::withdraw))
        .routes(utoipa_axum::routes!(market::rounds))
        .routes(utoipa_axum::routes!(market::explain))
        .routes(utoipa_axum::routes!(market::contracts))
        .routes(utoipa_axum::routes!(market::contract))
        .routes(utoipa_axum::routes!(market::propose))
        .routes(utoipa_axum::routes!(market::settle))
        .routes(utoipa_axum::routes!(market::settlement))
        .routes(utoipa_axum::routes!(market::account))
}

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = api_router().split_for_parts();
    finish(&mut api);
    api
}

/// What the path macros cannot say: the version, the node-call and token
/// checks, and the bodies that may be absent.
fn finish(api: &mut utoipa::openapi::OpenApi) {
    api.info.version = locus_core::VERSION.to_owned();
    node_calls::document(api);
    auth::document(api);
    // An upload may be empty; a join token request may have no body
    // (every field has a default).
    for path in ["/api/v1/artifacts", "/api/v1/org/join-tokens"] {
        if let Some(body) = api
            .paths
            .paths
            .get_mut(path)
            .and_then(|p| p.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
            && let utoipa::openapi::RefOr::T(body) = body
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// The complete HTTP application of a node.
pub fn router(node: Arc<Node>) -> Router {
    let (routes, mut api) = api_router().split_for_parts();
    finish(&mut api);
    #[cfg(feature = "swagger-ui")]
    let routes = routes.merge(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, api));
    #[cfg(not(feature = "swagger-ui"))]
    let routes = {
        let api = Arc::new(api);
        routes.route(
            OPENAPI_PATH,
            axum::routing::get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
    };
    routes
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            node_calls::NodeCalls::new(node.clone()),
            node_calls::check,
        ))
        .layer(middleware::from_fn_with_state(node.clone(), auth::check))
        .layer(middleware::from_fn_with_state(node.clone(), record_metrics))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(node)
}

async fn fallback(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Count and time every request by its route template (never the raw path,
/// so that ids in paths cannot blow up the label set).
async fn record_metrics(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let metrics = node.metrics();
    metrics
        .http_duration
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .inc();
    response.into_response()
}
