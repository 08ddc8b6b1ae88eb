//! The whole HTTP surface in one table: every route with its handler, documented by construction
//! (utoipa-axum collects each handler's OpenAPI path as the route is added), wrapped in the request
//! middleware, with the API's 404 fallback.

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{self, ensembles, experiments, models, monitoring, optimize, predict};
use crate::middleware;
use crate::oip;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// The routes and the OpenAPI document that describes exactly them.
pub fn build(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ensembles::create, ensembles::list))
        .routes(routes!(ensembles::show))
        .routes(routes!(ensembles::new_version))
        .routes(routes!(ensembles::set_default))
        .routes(routes!(predict::predict))
        .routes(routes!(predict::predict_batch))
        .routes(routes!(predict::outcomes))
        .routes(routes!(experiments::start, experiments::list))
        .routes(routes!(experiments::show))
        .routes(routes!(experiments::pause))
        .routes(routes!(experiments::resume))
        .routes(routes!(experiments::stop))
        .routes(routes!(models::upload, models::list))
        .routes(routes!(models::show))
        .routes(routes!(models::set_default))
        .routes(routes!(models::performance))
        .routes(routes!(optimize::optimize))
        .routes(routes!(optimize::benchmark))
        .routes(routes!(optimize::put_dataset))
        .routes(routes!(api::job))
        .routes(routes!(oip::server_metadata))
        .routes(routes!(oip::live))
        .routes(routes!(oip::ready))
        .routes(routes!(oip::model_metadata))
        .routes(routes!(oip::version_metadata))
        .routes(routes!(oip::model_ready))
        .routes(routes!(oip::version_ready))
        .routes(routes!(oip::infer))
        .routes(routes!(oip::version_infer))
        .routes(routes!(openapi_json))
        .routes(routes!(monitoring::metrics))
        .routes(routes!(monitoring::alerts))
        .routes(routes!(monitoring::status))
        .routes(routes!(monitoring::page))
        .split_for_parts();
    state.inner.http.set_routes(openapi.paths.paths.keys().map(String::as_str));
    let document = openapi.clone();
    let router = router
        .layer(axum::Extension(std::sync::Arc::new(document)))
        .fallback(middleware::not_found)
        // Bodies are bounded by the handlers themselves (`Body`: the request limit; uploads: theirs).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::around))
        .with_state(state);
    (router, openapi)
}

/// This server's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "the OpenAPI document")))]
async fn openapi_json(
    axum::Extension(document): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> axum::response::Response {
    axum::Json(&*document).into_response()
}
