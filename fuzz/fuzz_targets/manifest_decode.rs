//! Fuzz target: any text through the manifest loader and into a
//! ClusterState. It must never panic, hang or blow up memory; errors are
//! fine and are rendered to make sure their Display cannot panic either.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let decoded = ferry_model::decode("fuzz.yaml", text);
    for e in &decoded.errors {
        let _ = e.to_string();
    }
    let state = ferry_model::ClusterState::from_objects(decoded.objects.into_iter().map(|d| d.object));
    let (_, changes) = state.apply(state.objects().map(|o| ferry_model::Update::Delete(o.key())).collect::<Vec<_>>());
    assert_eq!(changes.objects.len(), state.len());
});
