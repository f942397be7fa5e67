//! `strata figures`: every analysis kind's charts as SVG (parsed as XML) and PDF (parsed,
//! fonts embedded) and its tables as LaTeX, the same bytes on every run, one SVG
//! snapshotted; bad input gets exit 2 and no file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A results.json with every analysis kind (the sharded-run spec, a hostile text id).
fn results(dir: &Path) -> std::path::PathBuf {
    let spec = shard_spec(dir, "");
    let corpus = dir.join("corpus.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap().replacen(
        "\"doc0\"",
        "\"doc0 & <b>_50%_</b>\"",
        1,
    );
    std::fs::write(&corpus, text).unwrap();
    let out = dir.join("out");
    let o = strata()
        .args(["report", s(&spec), "--quiet", "--out", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("results.json")
}

fn figures(results: &Path, out: &Path, extra: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let o = strata()
        .args(["figures", s(results), "--out", s(out)])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_kind_gives_its_figures_the_same_bytes_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    let a = figures(&res, &tmp.path().join("a"), &[]);
    let names: Vec<&str> = a
        .keys()
        .map(String::as_str)
        .filter(|n| !n.ends_with(".pdf"))
        .collect();
    assert_eq!(
        names,
        [
            "00-scatter-scatter-h-1-by-dimension.svg",
            "00-scatter-scatter-h-1-by-token.svg",
            "01-scatter-scatter-h-0-by-dimension.svg",
            "01-scatter-scatter-h-0-by-token.svg",
            "02-covariance-covariance-matrix.svg",
            "02-covariance-covariance-np-cov-ddof-1.tex",
            "02-covariance-r-matrix-shared-variance.svg",
            "02-covariance-r-np-corrcoef.tex",
            "03-pairplot-pairplot.svg",
            "04-pairplot-pairplot.svg",
            "05-histogram-histogram-linear.svg",
            "05-histogram-histogram-log.svg",
            "06-summary-per-hidden-state.tex",
            "07-outliers-outliers-magnitude.svg",
            "07-outliers-top-7-value-per-hidden-state.tex",
            "08-norms-norm-of-the-token-vectors-per-hidden-state.tex",
            "08-norms-norms-linear.svg",
            "08-norms-norms-log.svg",
            "09-anisotropy-anisotropy-mean-cosine.svg",
            "09-anisotropy-anisotropy-rogue-shares.svg",
            "09-anisotropy-mean-cosine-and-rogue-dimensions-share-of-the-mean-cosine.tex",
            "10-outlier_dims-massive-activations-count.svg",
            "10-outlier_dims-outlier-dimensions-variance-ratio-mean-largest-first.tex",
            "10-outlier_dims-outlier-dims-count.svg",
            "10-outlier_dims-the-most-extreme-massive-activations.tex",
            "11-dimensionality-dimensionality-measures.svg",
            "11-dimensionality-dimensionality-of-the-token-covariance-per-hidden-state.tex",
            "11-dimensionality-dimensionality-spectrum.svg",
            "12-cka-linear-cka-between-hidden-states.svg",
            "12-cka-linear-cka.tex",
            "13-logit_lens-logit-lens-grid.svg",
            "13-logit_lens-logit-lens-nats.svg",
            "13-logit_lens-logit-lens-per-hidden-state-means-over-positions.tex",
            "13-logit_lens-logit-lens-top1.svg",
            "14-agreement-agreement-error.svg",
            "14-agreement-agreement-per-hidden-state.tex",
            "14-agreement-agreement-similarity.svg",
            "14-agreement-tokens-that-drift-most-at-h-2.tex",
            "15-attention-distance.svg",
            "15-attention-entropy.svg",
            "15-attention-first-token-mass.svg",
            "15-attention-prev-token-mass.svg",
            "15-attention-previous-token-heads-mean-mass-above-0-5-largest-first.tex",
            "15-attention-self-mass.svg",
            "15-attention-sink-heads-mean-mass-above-0-3-largest-first.tex",
            "15-attention-sink-rate-per-block.svg",
            "16-neurons-dead-and-dense-neurons.svg",
            "16-neurons-firing-frequency-per-block.svg",
            "16-neurons-neurons-with-the-largest-activations-per-block.tex",
            "17-surprisal-per-text-the-first-3.tex",
            "17-surprisal-surprisal-by-position.svg",
            "17-surprisal-surprisal-histogram.svg",
            "17-surprisal-the-most-surprising-tokens.tex",
            "18-similarity-similarity-cca.svg",
            "18-similarity-similarity-cka.svg",
            "18-similarity-similarity-procrustes.svg",
            "18-similarity-similarity-pwcca.svg",
            "18-similarity-similarity-svcca.svg",
            "19-logit_lens-logit-lens-grid.svg",
            "19-logit_lens-the-logit-lens-beside-it-per-hidden-state-means-over-positio.tex",
            "19-logit_lens-tuned-lens-grid.svg",
            "19-logit_lens-tuned-lens-nats.svg",
            "19-logit_lens-tuned-lens-per-hidden-state-means-over-positions.tex",
            "19-logit_lens-tuned-lens-top1.svg",
            "20-summary-per-hidden-state.tex",
            "21-covariance-covariance-matrix.svg",
            "21-covariance-covariance-np-cov-ddof-1.tex",
            "21-covariance-r-matrix-shared-variance.svg",
            "21-covariance-r-np-corrcoef.tex",
            "22-histogram-histogram-linear.svg",
            "22-histogram-histogram-log.svg",
            "23-divergence-divergence-kl.svg",
            "23-divergence-divergence-lens-kl.svg",
            "23-divergence-divergence-per-text.svg",
            "23-divergence-per-text-the-first-7-of-7.tex",
            "23-divergence-quantiles-within-0-5.tex",
            "23-divergence-the-figures-se-standard-error.tex",
            "23-divergence-the-most-divergent-positions.tex",
            "24-sae-features-with-the-largest-activations.tex",
            "24-sae-most-frequent-features.tex",
            "24-sae-sae-density.svg",
            "24-sae-sae-l0.svg",
            "24-sae-sparsity-and-reconstruction.tex",
            "25-sae-features-with-the-largest-activations.tex",
            "25-sae-most-frequent-features.tex",
            "25-sae-sae-density.svg",
            "25-sae-sae-l0.svg",
            "25-sae-sparsity-and-reconstruction.tex",
            "25-sae-spliced-into-the-forward.tex",
            "26-directions-2-classes-folds-of-4-1-2-texts.tex",
            "26-directions-direction-turns.svg",
            "26-directions-odd-vs-even-every-selected-hidden-state.tex",
            "26-directions-odd-vs-even-the-best-hidden-states-by-held-out-r.tex",
            "26-directions-separation-odd-vs-even.svg",
            "27-project-g-mean-projection-per-hidden-state-and-class.tex",
            "27-project-g-the-tokens-that-project-highest-at-emb.tex",
            "27-project-histogram-g.svg",
            "27-project-histogram-s.svg",
            "27-project-means-g.svg",
            "27-project-means-s.svg",
            "27-project-s-mean-projection-per-hidden-state-and-class.tex",
            "27-project-s-the-tokens-that-project-highest-at-h-2.tex",
        ]
    );
    for (name, bytes) in &a {
        if let Some(base) = name.strip_suffix(".pdf") {
            assert!(
                a.contains_key(&format!("{base}.svg")),
                "{name} without its SVG"
            );
            check_pdf(name, bytes, 252.0);
            continue;
        }
        let text = std::str::from_utf8(bytes).unwrap();
        if name.ends_with(".svg") {
            assert!(
                a.contains_key(&name.replace(".svg", ".pdf")),
                "{name} without its PDF"
            );
            let doc = roxmltree::Document::parse(text)
                .unwrap_or_else(|e| panic!("{name} is not XML: {e}"));
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(root.attribute("width"), Some("3.500in"), "{name}");
            assert!(
                !doc.descendants().any(|n| n.tag_name().name() == "script"),
                "{name}"
            );
        } else {
            assert!(text.contains("\\begin{tabular}") && text.contains("\\bottomrule"));
        }
    }
    // The hostile text id is text in LaTeX.
    let summary = std::str::from_utf8(&a["06-summary-per-hidden-state.tex"]).unwrap();
    let outliers = std::str::from_utf8(&a["07-outliers-top-7-value-per-hidden-state.tex"]).unwrap();
    assert!(
        outliers.contains(
            "doc0 \\& \\textless{}b\\textgreater{}\\_50\\%\\_\\textless{}/b\\textgreater{}"
        ) || summary.contains("doc0 \\&"),
        "{outliers}"
    );
    // Every point: the by-dimension scatter of doc0 (14 tokens after token 0, 32 dims)
    // draws 14 series of 32 points; the page would thin only far larger ones.
    let scatter = std::str::from_utf8(&a["00-scatter-scatter-h-1-by-dimension.svg"]).unwrap();
    let circles = scatter.matches("<path d=\"M").count() + scatter.matches("<circle").count();
    assert!(circles > 0, "no marks drawn");
    // Same results, same bytes.
    let b = figures(&res, &tmp.path().join("b"), &[]);
    assert!(a == b, "two runs differ");
    // A few figures whose layout a change would show: a heatmap (its colour scale below the
    // title), the logit-lens grid (cell labels only where they fit, rotated tokens), and a
    // per-hidden-state line chart (its legend wrapped under the title).
    for (snap, file) in [
        (
            "covariance_heatmap_svg",
            "02-covariance-covariance-matrix.svg",
        ),
        ("logit_lens_grid_svg", "13-logit_lens-logit-lens-grid.svg"),
        ("norms_lines_svg", "08-norms-norms-linear.svg"),
    ] {
        insta::assert_snapshot!(snap, std::str::from_utf8(&a[file]).unwrap());
    }
}

/// A one-page PDF `width` points wide whose every font is embedded.
fn check_pdf(name: &str, bytes: &[u8], width: f32) {
    let doc = lopdf::Document::load_mem(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pages = doc.get_pages();
    assert_eq!(pages.len(), 1, "{name}");
    let page = doc.get_dictionary(pages[&1]).unwrap();
    let media = page.get(b"MediaBox").unwrap().as_array().unwrap();
    let w = media[2].as_float().unwrap() - media[0].as_float().unwrap();
    assert!((w - width).abs() < 0.01, "{name}: {w} pt wide");
    let mut fonts = 0;
    for obj in doc.objects.values() {
        if let Ok(d) = obj.as_dict() {
            if d.get(b"Type")
                .and_then(|t| t.as_name())
                .is_ok_and(|t| t == b"FontDescriptor")
            {
                fonts += 1;
                assert!(
                    d.has(b"FontFile2") || d.has(b"FontFile3") || d.has(b"FontFile"),
                    "{name}: a font is not embedded"
                );
            }
        }
    }
    assert!(fonts > 0, "{name}: no text font");
}

#[test]
fn width_and_format_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    let only = figures(
        &res,
        &tmp.path().join("t"),
        &["--format", "tex", "--width", "text"],
    );
    assert!(only.keys().all(|n| n.ends_with(".tex")));
    let wide = figures(
        &res,
        &tmp.path().join("w"),
        &["--format", "svg,pdf", "--width", "180mm"],
    );
    let svg = std::str::from_utf8(&wide["05-histogram-histogram-log.svg"]).unwrap();
    assert!(svg.starts_with("<svg width=\"7.087in\""), "{}", &svg[..80]);
    check_pdf(
        "wide",
        &wide["05-histogram-histogram-log.pdf"],
        180.0 / 25.4 * 72.0,
    );
    assert!(wide.keys().all(|n| !n.ends_with(".tex")));
    // The default folder: figures/ beside the results.
    let o = strata()
        .args(["figures", s(&res), "--format", "tex"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(res
        .parent()
        .unwrap()
        .join("figures/06-summary-per-hidden-state.tex")
        .exists());
}

#[test]
fn bad_input_gets_exit_2_and_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let res = results(tmp.path());
    let out = tmp.path().join("never");
    let fails = |args: &[&str]| {
        let o = strata().arg("figures").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let err = fails(&[s(&res), "--out", s(&out), "--format", "svg,png"]);
    assert!(
        err.contains("\"png\"") && err.contains("svg, pdf, tex"),
        "{err}"
    );
    let err = fails(&[s(&res), "--out", s(&out), "--width", "wide"]);
    assert!(err.contains("--width") && err.contains("column"), "{err}");
    let err = fails(&[s(&res), "--out", s(&out), "--width", "0.1in"]);
    assert!(err.contains("from 1in to 20in"), "{err}");
    // An unwritable folder: under a file.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = fails(&[s(&res), "--out", s(&file.join("sub"))]);
    assert!(err.contains("a-file"), "{err}");
    // Damaged results, refused as render refuses them.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    v["analyses"][5]["counts"][0].as_array_mut().unwrap().pop();
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = fails(&[s(&bad), "--out", s(&out)]);
    assert!(
        err.contains("bad.json") && err.contains("analyses[5] (histogram)"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}
