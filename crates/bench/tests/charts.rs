//! The charts of `ferry bench dns` and `ferry bench lab`, drawn from small
//! saved figures (as `--json` writes them, not a benchmark run): every
//! panel and series is present with its points, and the SVG renders to a
//! PNG with Debian's `rsvg-convert`.

use std::path::Path;

use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// `data-title` of each panel and (`data-name`, `data-points`) of each series, in order.
fn structure(svg: &str) -> (Vec<String>, Vec<(String, usize)>) {
    let attr = |s: &str, key: &str| -> String {
        let k = s.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
        s[k..k + s[k..].find('"').unwrap()].to_string()
    };
    let panels = svg
        .match_indices("<g class=\"panel\"")
        .map(|(i, _)| attr(&svg[i..], "data-title"))
        .collect();
    let series = svg
        .match_indices("<g class=\"series\"")
        .map(|(i, _)| {
            (
                attr(&svg[i..], "data-name"),
                attr(&svg[i..], "data-points").parse().unwrap(),
            )
        })
        .collect();
    (panels, series)
}

/// Renders `svg` to PNG and returns its width and height.
fn rendered(svg: &str) -> Option<(u32, u32)> {
    ferry_sys::testing::render_svg(svg)
}

#[test]
fn dns_chart_has_qps_and_latency_panels_with_a_line_per_server_by_zone_size() {
    let svg = ferry_bench::dns_chart(&fixture("dns-figures.json")).unwrap();
    let (panels, series) = structure(&svg);
    assert_eq!(
        panels,
        [
            "queries per second (median)",
            "latency p50 at 20k qps",
            "latency p99 at 20k qps"
        ]
    );
    let per_panel: Vec<(String, usize)> = ["ferry dns", "nsd 4", "knot 3"]
        .iter()
        .map(|s| (s.to_string(), 2))
        .collect();
    assert_eq!(
        series,
        [per_panel.clone(), per_panel.clone(), per_panel].concat(),
        "the forward-cache rows have no zone size and are not drawn"
    );
    assert!(
        svg.contains(">1k<") && svg.contains(">100k<"),
        "Services on a log axis"
    );
    if let Some((w, h)) = rendered(&svg) {
        assert_eq!((w, h), (1760, 450));
    }
}

#[test]
fn lab_chart_has_time_and_memory_panels_by_number_of_pods() {
    let svg = ferry_bench::lab_chart(&fixture("lab-figures.json")).unwrap();
    let (panels, series) = structure(&svg);
    assert_eq!(
        panels,
        [
            "lab up (until Ready) and lab down",
            "idle memory (median RSS)"
        ]
    );
    assert_eq!(
        series,
        [
            ("lab up".to_string(), 2),
            ("lab down".to_string(), 2),
            ("agent".to_string(), 2),
            ("echo pod".to_string(), 2)
        ]
    );
    if let Some((w, h)) = rendered(&svg) {
        assert_eq!((w, h), (1180, 450));
    }
}

#[test]
fn figures_without_runs_are_an_error_not_an_empty_chart() {
    let err = ferry_bench::dns_chart(&serde_json::json!({})).unwrap_err();
    assert!(err.to_string().contains("runs"), "{err}");
}
