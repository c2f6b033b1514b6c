//! HTTP/2 to endpoints: a backend announced as h2c (the Service port's
//! `appProtocol: kubernetes.io/h2c`, or ingress-nginx's
//! `backend-protocol: GRPC` annotation) is proxied over h2c with the
//! response trailers kept, as a gRPC call needs; other backends stay
//! HTTP/1.1. An in-process h2 upstream and h2 and HTTP/1.1 clients.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use ferry_ingress::ProxyConfig;
use ferry_model::EndpointSlice;
use ferry_model::Object;
use ferry_model::Service;
use ferry_model::k8s_openapi::api::networking::v1::Ingress;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

/// An HTTP/2-only upstream (prior knowledge): answers with the protocol,
/// path and `te` it saw, then the trailers `grpc-status: 0`.
async fn h2_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let text = format!(
                        "proto={:?}\npath={}\nte={}\n",
                        req.version(),
                        req.uri().path(),
                        req.headers()
                            .get("te")
                            .map_or("", |v| v.to_str().unwrap_or("?")),
                    );
                    let _ = req.into_body().collect().await;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let body = Full::new(Bytes::from(text))
                        .with_trailers(async move { Some(Ok(trailers)) });
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Service `name` (port 80, `appProtocol` as given) with one ready endpoint.
fn h2_service(name: &str, app_protocol: Option<&str>, ep: SocketAddr) -> Vec<Object> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.2",
                 "ports": [{"name": "grpc", "port": 80, "appProtocol": app_protocol}]},
    }))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-0"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": ep.port()}],
        "endpoints": [{"addresses": [ep.ip().to_string()], "conditions": {"ready": true}}],
    }))
    .unwrap();
    vec![
        Object::Service(Arc::new(svc)),
        Object::EndpointSlice(Arc::new(slice)),
    ]
}

/// An Ingress routing `host` to `svc`, with `annotations`.
fn annotated_ingress(name: &str, host: &str, svc: &str, annotations: serde_json::Value) -> Object {
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "ferry", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]},
    }))
    .unwrap();
    Object::Ingress(Arc::new(ing))
}

/// A gRPC-style call over h2c prior knowledge: body and trailers.
async fn h2_call(gw: SocketAddr, host: &str) -> (u16, String, Option<HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{host}/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (
        status,
        String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_grpc_backends_are_proxied_over_http2_with_trailers_kept() {
    let (up, _task) = h2_upstream().await;
    let h1 = upstream("h1").await;
    let mut objects = h2_service("by-port", Some("kubernetes.io/h2c"), up);
    objects.extend(h2_service("by-annotation", None, up));
    objects.extend(service("plain", &[h1.addr]));
    objects.push(annotated_ingress("port", "port.test", "by-port", json!({})));
    objects.push(annotated_ingress(
        "grpc",
        "grpc.test",
        "by-annotation",
        json!({"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}),
    ));
    objects.push(annotated_ingress("plain", "plain.test", "plain", json!({})));
    let (gw, addr) = gateway(ProxyConfig::default(), None).await;
    gw.swap(table(objects));
    for host in ["port.test", "grpc.test"] {
        // Several calls: the second and later reuse the endpoint's connection.
        for _ in 0..3 {
            let (status, body, trailers) = h2_call(addr, host).await;
            assert_eq!(status, 200, "{host}: {body}");
            assert_eq!(field(&body, "proto"), Some("HTTP/2.0"), "{host}: {body}");
            assert_eq!(field(&body, "path"), Some("/helloworld.Greeter/SayHello"));
            assert_eq!(field(&body, "te"), Some("trailers"), "{body}");
            let trailers = trailers.unwrap_or_else(|| panic!("{host}: no trailers"));
            assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        }
    }
    // An HTTP/1.1 client reaches the h2c backend too (the trailers are
    // HTTP/2's to carry); a backend without h2c stays HTTP/1.1.
    let mut client = Client::connect(addr).await;
    let (status, body) = client.get("port.test", "/x").await.unwrap();
    assert_eq!(
        (status.as_u16(), field(&body, "proto")),
        (200, Some("HTTP/2.0")),
        "{body}"
    );
    let (status, body) = client.get("plain.test", "/x").await.unwrap();
    assert_eq!(
        (status.as_u16(), field(&body, "name")),
        (200, Some("h1")),
        "{body}"
    );
}
