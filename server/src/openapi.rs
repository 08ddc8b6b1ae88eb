//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and types as the
//! router is built (see [`crate::router`]), so a route cannot be served without being documented.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "quorum", description = "Ensembles of ONNX models over HTTP: the REST API under /api/v1/ml and the \
        Open Inference Protocol (KServe v2 / Triton) under /v2. Errors are {\"error\": {\"code\", \"message\"}} on \
        /api routes and {\"error\": \"...\"} on /v2 routes."),
    modifiers(&Bearer),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}
