//! Spec files: every experiment parses; every bad spec in tests/specs/ fails with a clear
//! message (snapshotted), through the same path `strata report` takes.

mod common;

use std::path::Path;

use strata::model::LoadedModel;
use strata::spec::Spec;

fn relative(msg: &str) -> String {
    msg.replace(env!("CARGO_MANIFEST_DIR"), "<repo>")
}

/// Loads, checks against the model, and runs; returns the first error.
fn first_error(path: &Path) -> Option<String> {
    let spec = match Spec::load(path) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    let model = match LoadedModel::load(&spec.model) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = strata::run::setup::check_layers(&spec, model.model.info(), &[]) {
        return Some(e.to_string());
    }
    strata::run::run(&spec, &model, &mut |_| {})
        .err()
        .map(|e| e.to_string())
}

#[test]
fn bad_specs_fail_with_their_snapshotted_message() {
    insta::glob!("specs/err_*.yaml", |path| {
        let msg = first_error(path).unwrap_or_else(|| panic!("{} should fail", path.display()));
        insta::assert_snapshot!(relative(&msg));
    });
}

#[test]
fn every_experiment_parses() {
    insta::glob!("../experiments", "*.yaml", |path| {
        let spec = Spec::load(path).unwrap();
        let summary = format!(
            "name: {}\ntitle: {}\nmodel: {:?}\ntexts: {}\nlayers: {:?}\nexclude_first_token: {}\nseed: {}\nanalyses:\n{}",
            spec.name,
            spec.title,
            // A model path that exists is resolved against the spec's folder; show it as
            // written, so the snapshot holds whether or not the file is there.
            format!("{:?}", spec.model).replace(
                concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/"),
                ""
            ),
            match &spec.texts {
                strata::spec::TextSource::Inline(t) => format!("{} inline", t.len()),
                strata::spec::TextSource::Corpus(c) => relative(&format!("{:?}", c.source)),
            },
            spec.layers,
            spec.exclude_first_token,
            spec.seed,
            spec.analyses.iter().map(|a| format!("  {a:?}")).collect::<Vec<_>>().join("\n"),
        );
        insta::assert_snapshot!(summary);
    });
}

#[test]
fn the_correlation_experiment_is_the_notebook() {
    let spec = Spec::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/correlation.yaml"
    )))
    .unwrap();
    let strata::spec::TextSource::Inline(texts) = &spec.texts else {
        panic!("inline text")
    };
    assert!(texts[0].text.starts_with(
        "The goal of a correlation analysis is to compute a correlation coefficient."
    ));
    assert!(texts[0].text.ends_with("have distinct interpretations."));
    assert!(spec.exclude_first_token);
    assert_eq!(spec.model.id, "gpt2");
}
