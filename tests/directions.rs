//! The `directions` kind against numpy (tests/fixtures/make_directions_fixtures.py), the
//! slow way: class means, the difference of means, Cohen's d, LDA and the ridge probe's
//! per-fold held-out error, each fitted on the other folds' token rows. Fed the very
//! hidden states numpy read (within 1e-6 relative), then through `strata report` on the
//! tiny GPT-2 and the tiny Llama; the fold rule; the saved directions; bad input.

mod common;

use std::collections::HashMap;

use candle_core::Tensor;
use common::{fixture, load_tensors, report_fails, report_with, strata, vec_f32};
use serde_json::Value;
use strata::analyses::directions::{Contrast, Directions, DirectionsResult, DirectionsState};
use strata::analyses::{Analysis, AnalysisResult, TextActivations};
use strata::stats::labelled::{fold_of, LabelledMoments};

fn reference() -> Value {
    let path = fixture("reference/directions.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `|got - want| <= atol + rtol |want|`, or both null.
fn close(what: &str, got: Option<f64>, want: &Value, atol: f64, rtol: f64) -> f64 {
    let (Some(g), Some(w)) = (got, want.as_f64()) else {
        panic!("{what}: {got:?} vs numpy {want}");
    };
    let err = (g - w).abs();
    assert!(err <= atol + rtol * w.abs(), "{what}: {g} vs numpy {w}");
    err / w.abs().max(1e-300)
}

/// Checks one contrast against numpy's list of per-state figures; returns the largest
/// relative error seen.
fn check_contrast(name: &str, got: &Contrast, want: &Value, (atol, rtol): (f64, f64)) -> f64 {
    let exact = rtol <= 1e-6;
    let states = want.as_array().unwrap();
    assert_eq!(got.r2.len(), states.len(), "{name}: hidden states");
    let mut worst: f64 = 0.0;
    for (l, w) in states.iter().enumerate() {
        let at = |field: &str| format!("{name} state {l} {field}");
        let mut c = |field: &str, g: Option<f64>| {
            worst = worst.max(close(&at(field), g, &w[field], atol, rtol));
        };
        c("diff_norm", Some(got.diff_norm[l]));
        c("cohen_d", got.cohen_d[l]);
        // Where the within-class covariance is singular (the tiny GPT-2's last state,
        // after a LayerNorm, lies in a hyperplane), LDA's direction along the null space
        // is set by f32 noise over the ridge: only the same hidden states compare there.
        if exact || !w["ridge_needed"].as_bool().unwrap() {
            c("fisher", got.fisher[l]);
            c("lda_cos", got.lda_cos[l]);
        }
        c("r2", got.r2[l]);
        c("heldout_sse", got.heldout_sse[l]);
        c("heldout_cohen_d", got.heldout_cohen_d[l]);
        for (f, sse) in w["fold_sse"].as_array().unwrap().iter().enumerate() {
            worst = worst.max(close(&at("fold_sse"), got.fold_sse[l][f], sse, atol, rtol));
        }
        for (label, p) in w["projection"].as_object().unwrap() {
            worst = worst.max(close(
                &at("projection"),
                got.projection[label][l],
                p,
                atol,
                rtol,
            ));
        }
    }
    worst
}

/// Checks a result against numpy's case.
fn check(name: &str, got: &DirectionsResult, case: &Value, atol: f64, rtol: f64) -> f64 {
    let classes: Vec<&str> = got.classes.iter().map(|c| c.label.as_str()).collect();
    let want: Vec<&str> = case["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(classes, want, "{name}: classes");
    let fold_tokens: Vec<u64> = got.folds.iter().map(|f| f.tokens).collect();
    let want_tokens: Vec<u64> = case["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(fold_tokens, want_tokens, "{name}: tokens per fold");
    let contrasts = case["contrasts"].as_object().unwrap();
    let mut worst: f64 = 0.0;
    if contrasts.len() == 1 {
        assert!(got.by_class.is_empty());
        let (_, want) = contrasts.iter().next().unwrap();
        worst = worst.max(check_contrast(name, &got.contrast, want, (atol, rtol)));
    } else {
        assert_eq!(got.by_class.len(), contrasts.len(), "{name}: contrasts");
        for (label, want) in contrasts {
            let c = &got.by_class[label];
            worst = worst.max(check_contrast(
                &format!("{name} {label}"),
                c,
                want,
                (atol, rtol),
            ));
        }
    }
    let singular: Vec<bool> = contrasts
        .values()
        .next()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ridge_needed"].as_bool().unwrap())
        .collect();
    let named: Vec<bool> = got
        .layers
        .iter()
        .map(|l| got.ridge_needed.contains(l))
        .collect();
    assert_eq!(
        named, singular,
        "{name}: the states that needed LDA's ridge"
    );
    worst
}

/// Feeds the kind numpy's hidden states for `case`.
fn feed(case: &Value, texts: &[Value], tensors: &HashMap<String, Tensor>) -> DirectionsResult {
    let model = case["model"].as_str().unwrap();
    let n = case["texts"].as_u64().unwrap() as usize;
    let n_states = tensors
        .keys()
        .filter(|k| k.starts_with(&format!("{model}.p0.")))
        .count();
    let layers: Vec<usize> = (0..n_states).collect();
    let labels: Vec<String> = layers.iter().map(|l| format!("s{l}")).collect();
    let folds = case["folds"].as_array().unwrap().len();
    let mut state = DirectionsState {
        sums: LabelledMoments::new(layers, labels, folds),
        alpha: case["alpha"].as_f64().unwrap(),
        ridge: case["ridge"].as_f64().unwrap(),
        save: None,
        rows: Default::default(),
    };
    for (j, t) in texts.iter().take(n).enumerate() {
        let id = t["id"].as_str().unwrap();
        let states: Vec<Option<Vec<f32>>> = (0..n_states)
            .map(|l| Some(vec_f32(&tensors[&format!("{model}.{id}.{l}")])))
            .collect();
        let dim = tensors[&format!("{model}.{id}.0")].dims2().unwrap().1;
        let rows = states[0].as_ref().unwrap().len() / dim;
        let tokens: Vec<String> = (0..rows).map(|k| format!("tok{k}")).collect();
        let acts = TextActivations {
            index: j,
            id,
            label: t["label"].as_str(),
            window_of: None,
            tokens: &tokens,
            first_token: 0,
            dim,
            states: &states,
            token_ids: &[],
            lens: None,
            previous: None,
            companions: &[],
            companion_readouts: &[],
            attention: &[],
            routing: &[],
            splice: None,
            sites: &[],
        };
        Directions::observe(&mut state, &acts);
    }
    Directions::finish(state).unwrap()
}

#[test]
fn sums_equal_numpy_on_the_same_hidden_states() {
    let r = reference();
    let texts = r["texts"].as_array().unwrap();
    let tensors = load_tensors(&fixture("reference/directions-states.safetensors"));
    for (name, case) in r["cases"].as_object().unwrap() {
        let got = feed(case, texts, &tensors);
        let worst = check(name, &got, case, 1e-9, 1e-6);
        eprintln!("{name}: largest relative difference from numpy {worst:.2e}");
    }
}

#[test]
fn folds_follow_the_stated_hash_rule() {
    use sha2::{Digest, Sha256};
    let r = reference();
    let ids: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for (k, want) in r["fold_examples"].as_object().unwrap() {
        let k: usize = k.parse().unwrap();
        for (id, w) in ids.iter().zip(want.as_array().unwrap()) {
            let digest = Sha256::digest(id.as_bytes());
            let by_rule = u64::from_be_bytes(digest[..8].try_into().unwrap()) % k as u64;
            assert_eq!(fold_of(id, k) as u64, by_rule, "{id} of {k} folds");
            assert_eq!(
                by_rule,
                w.as_u64().unwrap(),
                "{id} of {k} folds: numpy's fold"
            );
        }
    }
}

/// A spec over the first `limit` labelled fixture texts with one directions analysis.
fn spec(dir: &std::path::Path, model: &str, limit: usize, params: &str) -> std::path::PathBuf {
    let spec = dir.join("directions.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: directions\nmodel: {{id: {}}}\ncorpus: {{path: {}, limit: {limit}}}\nlayers: all\nanalyses:\n  - {{kind: directions{params}}}\n",
            fixture(model).display(),
            fixture("corpora/labelled.jsonl").display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn reports_on_the_tiny_models_match_numpy() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    for (name, case) in r["cases"].as_object().unwrap() {
        let model = match case["model"].as_str().unwrap() {
            "gpt2" => "tiny-gpt2",
            _ => "tiny-llama-lens",
        };
        let params = format!(
            ", folds: {}, alpha: {}, ridge: {}",
            case["folds"].as_array().unwrap().len(),
            case["alpha"],
            case["ridge"]
        );
        let n = case["texts"].as_u64().unwrap() as usize;
        let spec = spec(tmp.path(), model, n, &params);
        let results = report_with(&mut strata(), &spec, &tmp.path().join(name));
        let AnalysisResult::Directions(got) = &results.analyses[0].result else {
            panic!("kind")
        };
        // transformers' and strata's hidden states differ in the last bits of f32.
        let worst = check(name, got, case, 1e-6, 1e-3);
        eprintln!("{name} through the report: largest relative difference {worst:.2e}");
        let labels: Vec<(&str, u64)> = results
            .corpus
            .labels
            .iter()
            .map(|c| (c.label.as_str(), c.texts))
            .collect();
        let classes: Vec<(&str, u64)> = got
            .classes
            .iter()
            .map(|c| (c.label.as_str(), c.texts))
            .collect();
        assert_eq!(labels, classes, "{name}: the corpus' labels");
    }
}

#[test]
fn saved_directions_are_the_differences_of_means() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let first = spec(tmp.path(), "tiny-gpt2", 24, ", folds: 3, save: saved");
    let results = report_with(&mut strata(), &first, &tmp.path().join("out"));
    let saved = load_tensors(&tmp.path().join("saved/directions.safetensors"));
    let AnalysisResult::Directions(got) = &results.analyses[0].result else {
        panic!("kind")
    };
    assert_eq!(saved.len(), got.classes.len() * got.layers.len());
    let case = &r["cases"]["gpt2-three"];
    for (label, states) in case["contrasts"].as_object().unwrap() {
        for (l, w) in states.as_array().unwrap().iter().enumerate() {
            let v = vec_f32(&saved[&format!("{label}.{}", got.layers[l])]);
            let want: Vec<f32> = w["diff"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let (abs, _) = common::allclose(&v, &want, 1e-5, 1e-3);
            assert!(abs < 1e-4, "{label}.{}: {abs}", got.layers[l]);
        }
    }
    // Two classes: the first's direction is the second's negated.
    let spec2 = spec(tmp.path(), "tiny-gpt2", 16, ", save: two");
    report_with(&mut strata(), &spec2, &tmp.path().join("out2"));
    let two = load_tensors(&tmp.path().join("two/directions.safetensors"));
    let (p, n) = (vec_f32(&two["positive.h.1"]), vec_f32(&two["negative.h.1"]));
    assert!(p.iter().zip(&n).all(|(a, b)| *a == -*b));
}

#[test]
fn bad_input_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, usize, &str, &[&str]); 5] = [
        (
            "tiny-gpt2",
            16,
            ", folds: 1",
            &["analyses[0].folds", "at least 2"],
        ),
        (
            "tiny-gpt2",
            16,
            ", alpha: 0",
            &["analyses[0].alpha", "above 0"],
        ),
        ("tiny-gpt2", 16, ", alpha: -1", &["analyses[0].alpha"]),
        (
            "tiny-gpt2",
            3,
            ", folds: 4",
            &["folds is 4", "3 labelled text(s)"],
        ),
        (
            "tiny-gpt2",
            1,
            ", folds: 2",
            &["1 class(es) (positive)", "at least two"],
        ),
    ];
    for (model, limit, params, words) in cases {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let err = report_fails(&spec(dir.path(), model, limit, params));
        for w in words {
            assert!(err.contains(w), "{params}: {err}");
        }
    }
    // Inline texts: more folds than texts is caught before the model loads; a text
    // without a label is named.
    let dir = tempfile::tempdir_in(tmp.path()).unwrap();
    let spec = dir.path().join("inline.yaml");
    std::fs::write(&spec, format!(
        "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello there, label: x}}\n  - {{id: b, text: Good night}}\nanalyses:\n  - {{kind: directions, folds: 2}}\n",
        fixture("tiny-gpt2").display()
    )).unwrap();
    let err = report_fails(&spec);
    assert!(
        err.contains("text `b` has no label") && err.contains("analyses[0] (directions)"),
        "{err}"
    );
    std::fs::write(&spec, format!(
        "model: {{id: {}}}\ntexts:\n  - {{id: a, text: Hello there, label: x}}\n  - {{id: b, text: Good night, label: y}}\nanalyses:\n  - {{kind: directions, folds: 3}}\n",
        fixture("tiny-gpt2").display()
    )).unwrap();
    let err = report_fails(&spec);
    assert!(
        err.contains("analyses[0].folds") && err.contains("at most 2"),
        "{err}"
    );
}

/// A spec projecting the labelled fixture corpus onto `vectors` with `params`.
fn project_spec(
    dir: &std::path::Path,
    vectors: &std::path::Path,
    params: &str,
) -> std::path::PathBuf {
    let spec = dir.join("project.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: project\nmodel: {{id: {}}}\ncorpus: {}\nlayers: all\nanalyses:\n  - {{kind: project, vectors: {}{params}}}\n",
            fixture("tiny-gpt2").display(),
            fixture("corpora/labelled.jsonl").display(),
            vectors.display()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn projections_match_numpy_with_a_second_model() {
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let vectors = fixture("reference/project-vectors.safetensors");
    let params = format!(
        ", k: 4, model: {{id: {}}}",
        fixture("tiny-llama-lens").display()
    );
    let spec = project_spec(tmp.path(), &vectors, &params);
    let results = report_with(&mut strata(), &spec, &tmp.path().join("out"));
    let AnalysisResult::Project(got) = &results.analyses[0].result else {
        panic!("kind")
    };
    assert_eq!(
        got.vectors
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["g", "s"]
    );
    for v in &got.vectors {
        let want = r["project"][&v.name].as_array().unwrap();
        assert_eq!(v.states, ["emb", "h.0", "h.1", "h.2"]);
        for (l, w) in want.iter().enumerate() {
            close("norm", Some(v.norm[l]), &w["norm"], 1e-7, 1e-6);
            let classes = std::iter::once(("all", &v.all))
                .chain(v.by_label.iter().map(|(k, p)| (k.as_str(), p)));
            for (label, p) in classes {
                let w = &w["classes"][label];
                let what = format!("{} {label} state {l}", v.name);
                assert_eq!(p.tokens[l], w["tokens"].as_u64().unwrap(), "{what}");
                // strata's and transformers' hidden states differ in the last bits of f32.
                close(&format!("{what} mean"), p.mean[l], &w["mean"], 1e-6, 1e-4);
                close(&format!("{what} std"), p.std[l], &w["std"], 1e-6, 1e-4);
                let theirs = p.companion_mean.as_ref().unwrap()[l];
                close(
                    &format!("{what} second model"),
                    theirs,
                    &w["companion_mean"],
                    1e-6,
                    1e-4,
                );
                close(
                    &format!("{what} shift"),
                    p.shift.as_ref().unwrap()[l],
                    &w["shift"],
                    1e-6,
                    1e-4,
                );
                assert_eq!(
                    p.counts[l].iter().sum::<u64>(),
                    p.tokens[l],
                    "{what}: histogram"
                );
            }
            close(
                "top",
                Some(v.top[l][0].value),
                &w["classes"]["all"]["max"],
                1e-6,
                1e-4,
            );
            assert_eq!(v.top[l].len(), 4);
        }
    }
}

#[test]
fn bad_vectors_are_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let wide = tmp.path().join("wide.safetensors");
    let tensor = Tensor::zeros(48, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let ones = (tensor + 1.0).unwrap();
    candle_core::safetensors::save(&HashMap::from([("persona".to_string(), ones)]), &wide).unwrap();
    let vectors = fixture("reference/project-vectors.safetensors");
    let cases: [(&std::path::Path, &str, &[&str]); 4] = [
        (
            &wide,
            "",
            &[
                "analyses[0].vectors",
                "\"persona\" has 48 values",
                "have 32",
            ],
        ),
        (
            &vectors,
            ", names: [refusal]",
            &["analyses[0].names", "no vector \"refusal\"", "it has: g, s"],
        ),
        (
            std::path::Path::new("missing.safetensors"),
            "",
            &["analyses[0].vectors", "missing.safetensors"],
        ),
        (&vectors, ", bins: 0", &["analyses[0].bins"]),
    ];
    for (file, params, words) in cases {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let err = report_fails(&project_spec(dir.path(), file, params));
        for w in words {
            assert!(err.contains(w), "{params}: {err}");
        }
    }
}

#[test]
fn every_window_of_a_text_is_in_its_texts_fold() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = spec(tmp.path(), "tiny-gpt2", 24, ", folds: 3");
    let whole = report_with(&mut strata(), &whole, &tmp.path().join("whole"));
    let text = std::fs::read_to_string(tmp.path().join("directions.yaml")).unwrap();
    std::fs::write(
        tmp.path().join("directions.yaml"),
        text.replace("layers: all\n", "layers: all\nwindow: {tokens: 4}\n"),
    )
    .unwrap();
    let windows = report_with(
        &mut strata(),
        &tmp.path().join("directions.yaml"),
        &tmp.path().join("windows"),
    );
    let folds = |r: &strata::results::Results| match &r.analyses[0].result {
        AnalysisResult::Directions(d) => d
            .folds
            .iter()
            .map(|f| (f.texts, f.tokens))
            .collect::<Vec<_>>(),
        _ => panic!("kind"),
    };
    let (a, b) = (folds(&whole), folds(&windows));
    // The windows cover each token once, so a fold holds the same tokens either way.
    assert_eq!(
        a.iter().map(|f| f.1).collect::<Vec<_>>(),
        b.iter().map(|f| f.1).collect::<Vec<_>>()
    );
    assert!(
        b.iter().map(|f| f.0).sum::<u64>() > a.iter().map(|f| f.0).sum::<u64>(),
        "texts were cut"
    );
}

/// The project kind fed numpy's hidden states (the tiny GPT-2's, and the tiny Llama's as
/// the second model) and the fixture vectors: within 1e-6 of numpy.
#[test]
fn projections_equal_numpy_on_the_same_hidden_states() {
    use strata::analyses::project::{ClassSums, Project, ProjectState, VectorState};
    let r = reference();
    let texts = r["texts"].as_array().unwrap();
    let tensors = load_tensors(&fixture("reference/directions-states.safetensors"));
    let vectors = load_tensors(&fixture("reference/project-vectors.safetensors"));
    let labels: Vec<String> = ["emb", "h.0", "h.1", "h.2"].map(String::from).to_vec();
    let vector = |name: &str, l: usize| -> Vec<f32> {
        match name {
            "g" => vec_f32(&vectors["g"]),
            _ => vec_f32(&vectors[&format!("s.{}", labels[l])]),
        }
    };
    let state = |name: &str| {
        let raw: Vec<Vec<f32>> = (0..4).map(|l| vector(name, l)).collect();
        let norms: Vec<f64> = raw
            .iter()
            .map(|v| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt())
            .collect();
        VectorState {
            name: name.into(),
            states: (0..4).collect(),
            units: raw
                .iter()
                .zip(&norms)
                .map(|(v, n)| v.iter().map(|&x| x as f64 / n).collect())
                .collect(),
            norms,
            all: vec![ClassSums::default(); 4],
            by_label: Default::default(),
            top: vec![Vec::new(); 4],
            zero: Vec::new(),
        }
    };
    let mut s = ProjectState {
        file: "v".into(),
        sha256: "0".repeat(64),
        layers: (0..4).collect(),
        labels: labels.clone(),
        k: 3,
        bins: 10,
        companion: Some((0, "llama".into())),
        vectors: vec![state("g"), state("s")],
    };
    for (j, t) in texts.iter().enumerate() {
        let id = t["id"].as_str().unwrap();
        let rows = |model: &str| -> Vec<Option<Vec<f32>>> {
            (0..4)
                .map(|l| Some(vec_f32(&tensors[&format!("{model}.{id}.{l}")])))
                .collect()
        };
        let (ours, theirs) = (rows("gpt2"), vec![rows("llama")]);
        let n = ours[0].as_ref().unwrap().len() / 32;
        let tokens: Vec<String> = (0..n).map(|k| format!("tok{k}")).collect();
        let acts = TextActivations {
            index: j,
            id,
            label: t["label"].as_str(),
            window_of: None,
            tokens: &tokens,
            first_token: 0,
            dim: 32,
            states: &ours,
            token_ids: &[],
            lens: None,
            previous: None,
            companions: &theirs,
            companion_readouts: &[],
            attention: &[],
            routing: &[],
            splice: None,
            sites: &[],
        };
        Project::observe(&mut s, &acts);
    }
    let got = Project::finish(s).unwrap();
    for v in &got.vectors {
        for (l, w) in r["project"][&v.name].as_array().unwrap().iter().enumerate() {
            let classes = std::iter::once(("all", &v.all))
                .chain(v.by_label.iter().map(|(k, p)| (k.as_str(), p)));
            for (label, p) in classes {
                let w = &w["classes"][label];
                let what = format!("{} {label} state {l}", v.name);
                close(&format!("{what} mean"), p.mean[l], &w["mean"], 1e-12, 1e-6);
                close(&format!("{what} std"), p.std[l], &w["std"], 1e-12, 1e-6);
                close(
                    &format!("{what} shift"),
                    p.shift.as_ref().unwrap()[l],
                    &w["shift"],
                    1e-12,
                    1e-6,
                );
            }
            close(
                "top",
                Some(v.top[l][0].value),
                &w["classes"]["all"]["max"],
                1e-12,
                1e-6,
            );
        }
    }
}
