//! Nothing here: this package exists to own `examples/host_app.rs` (the demo
//! web app, `cargo run --example host_app` from the repository root) with
//! only the dependencies it uses. Its browser test is in `browser/`.
