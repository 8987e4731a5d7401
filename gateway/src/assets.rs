//! The static files the gateway serves on `PORT`: the demo call page at `/`
//! and the browser SDK bundle at `/sdk/pantheon.js`. They are compiled into
//! the binary from `sdk/` (the bundle is committed there, built by
//! `npm run build`), so building the gateway needs no Node.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// One embedded file: its path, media type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../sdk/demo/index.html"),
    },
    Asset {
        path: "/demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../sdk/demo/demo.js"),
    },
    Asset {
        path: "/sdk/pantheon.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../sdk/dist/pantheon.js"),
    },
];

/// Routes for the embedded files (merged into the main router).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, asset.content_type),
                        // A new gateway version may bring a new bundle.
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    asset.body,
                )
                    .into_response()
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn the_bundle_and_the_demo_are_embedded() {
        let find = |p: &str| ASSETS.iter().find(|a| a.path == p).map(|a| a.body);
        assert!(find("/sdk/pantheon.js").is_some_and(|b| b.contains("export")));
        assert!(find("/").is_some_and(|b| b.contains("/demo.js")));
        assert!(find("/demo.js").is_some_and(|b| b.contains("/sdk/pantheon.js")));
    }
}
