//! Every figure `strata figures` writes is laid out so that a paper takes it as it is: each
//! text element's box, measured as a reader's SVG renderer lays it out (usvg, with the
//! shipped Liberation Sans: its advance widths, ascent and descent, the element's anchor,
//! baseline and every transform), lies inside the figure, overlaps no other box, and
//! prints at 6 pt or more. Run on every analysis kind at column, text and a 3.0 in width,
//! for a model of 31 hidden states and one of 64 with a 64-position logit-lens grid of
//! long tokens, for a mixture of experts (the router kind), and for the every-kind report
//! (the tuned lens).

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

use common::layout::TextBox;

fn collect(node: &usvg::Node, out: &mut Vec<TextBox>) {
    match node {
        usvg::Node::Group(g) => g.children().iter().for_each(|c| collect(c, out)),
        usvg::Node::Text(t) => {
            let text: String = t.chunks().iter().map(|c| c.text()).collect();
            let visible = t.chunks().iter().any(|c| {
                c.spans()
                    .iter()
                    .any(|s| s.is_visible() && s.fill().is_some_and(|f| f.opacity().get() > 0.0))
            });
            if text.trim().is_empty() || !visible {
                return;
            }
            let b = t.bounding_box();
            let m = t.abs_transform();
            let map = |x: f32, y: f32| {
                let mut p = usvg::tiny_skia_path::Point::from_xy(x, y);
                m.map_point(&mut p);
                (p.x, p.y)
            };
            let font = t
                .chunks()
                .iter()
                .flat_map(|c| c.spans())
                .map(|s| s.font_size().get())
                .fold(f32::MAX, f32::min);
            let scale = (m.sx * m.sy - m.kx * m.ky).abs().sqrt();
            out.push(TextBox {
                text,
                corners: [
                    map(b.left(), b.top()),
                    map(b.right(), b.top()),
                    map(b.right(), b.bottom()),
                    map(b.left(), b.bottom()),
                ],
                size: font * scale,
            });
        }
        _ => {}
    }
}

fn options() -> usvg::Options<'static> {
    let mut opt = usvg::Options::default();
    let fonts = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/vendor/fonts");
    for f in ["LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"] {
        opt.fontdb_mut()
            .load_font_data(std::fs::read(fonts.join(f)).unwrap());
    }
    opt.fontdb_mut().set_sans_serif_family("Liberation Sans");
    opt.font_family = "Liberation Sans".into();
    opt
}

/// 6 pt in usvg's pixels: it reads the root's size in inches at 96 px to the inch.
const MIN_PX: f32 = 6.0 * 96.0 / 72.0;

/// What is wrong with one SVG's text: clipped, colliding or too small.
fn problems(name: &str, svg: &[u8], opt: &usvg::Options) -> Vec<String> {
    let tree = usvg::Tree::from_data(svg, opt).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut boxes = Vec::new();
    collect(
        &usvg::Node::Group(Box::new(tree.root().clone())),
        &mut boxes,
    );
    common::layout::problems(
        name,
        tree.size().width(),
        tree.size().height(),
        &boxes,
        MIN_PX,
    )
}

/// A GPT-2 of `states - 1` blocks, seeded random weights, the real vocabulary.
fn model(dir: &Path, states: usize) -> PathBuf {
    let m = dir.join(format!("gpt2-{states}"));
    common::synth::SynthGpt2 {
        n_layer: states - 1,
        n_embd: 32,
        n_head: 4,
        n_positions: 128,
        vocab_size: 50257,
    }
    .write(&m, states as u64)
    .unwrap();
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-gpt2").join(name), m.join(name)).unwrap();
    }
    m
}

/// Texts of long words, the first over 64 tokens.
const TEXTS: [&str; 4] = [
    "Internationalization characteristically necessitates comprehensive reconsideration of \
     institutionalized responsibilities, notwithstanding counterproductive misunderstandings \
     between representatives, administrators, superintendents and telecommunications \
     conglomerates; nevertheless, interdisciplinary collaborations unquestionably strengthen \
     accountability, transparency and sustainability.",
    "Hello",
    "The normalization imposes boundaries of -1 to +1 on correlation coefficients.",
    "Café naïve façade — 東京 🚀 ümlaut 1234567",
];

/// Every kind but the router's, on `model`, the grid over 64 positions.
fn every_kind(dir: &Path, model: &Path) -> PathBuf {
    let texts: Vec<String> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  - {{id: doc{i}, text: {}}}\n", serde_json::json!(t)))
        .collect();
    let spec = dir.join(format!(
        "{}.yaml",
        model.file_name().unwrap().to_string_lossy()
    ));
    let m = s(model);
    std::fs::write(
        &spec,
        format!(
            "name: layout\nmodel: {{id: {m}}}\nseed: 3\nlayers: all\ntexts:\n{}analyses:\n  - {{kind: scatter, layer: 2}}\n  - {{kind: covariance}}\n  - {{kind: pairplot, layers: [0, 1, 2, 3], points: 300}}\n  - {{kind: histogram, range: [-2, 2], bins: 40}}\n  - {{kind: summary}}\n  - {{kind: outliers, k: 7}}\n  - {{kind: norms}}\n  - {{kind: anisotropy, k: 3}}\n  - {{kind: outlier_dims, ratio: 2, massive_abs: 1, massive_ratio: 3, examples: 4}}\n  - {{kind: dimensionality, spectrum: 8}}\n  - {{kind: cka}}\n  - {{kind: logit_lens, text: doc0, positions: 64}}\n  - {{kind: agreement, model: {{id: {m}}}, k: 4}}\n  - {{kind: attention, k: 3}}\n  - {{kind: neurons, k: 4, examples: 2}}\n  - {{kind: surprisal, k: 4, icl: [2, 9], texts: 3}}\n  - {{kind: similarity, leading: 3}}\n  - {{kind: histogram, site: mlp_act, range: [-1, 1], bins: 20}}\n  - {{kind: divergence, model: {{id: {m}}}, k: 4, resamples: 200}}\n",
            texts.concat()
        ),
    )
    .unwrap();
    let out = dir.join(format!(
        "out-{}",
        model.file_name().unwrap().to_string_lossy()
    ));
    report_with(&mut strata(), &spec, &out);
    out.join("results.json")
}

/// Runs `strata figures` at `width`; every SVG's problems.
fn check(results: &Path, width: &str, out: &Path, opt: &usvg::Options) -> Vec<String> {
    let o = strata()
        .args([
            "figures",
            s(results),
            "--format",
            "svg",
            "--width",
            width,
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut all = Vec::new();
    for p in names {
        let name = format!("{width}/{}", p.file_name().unwrap().to_string_lossy());
        all.extend(problems(&name, &std::fs::read(&p).unwrap(), opt));
    }
    all
}

#[test]
fn every_figure_fits_at_every_width() {
    let tmp = tempfile::tempdir().unwrap();
    // STRATA_LAYOUT_DIR keeps the reports and figures, to look at.
    let tmp = std::env::var_os("STRATA_LAYOUT_DIR").map_or(tmp.path().to_path_buf(), PathBuf::from);
    let tmp = &tmp;
    let opt = options();
    let mut runs = Vec::new();
    for states in [31, 64] {
        runs.push(every_kind(tmp, &model(tmp, states)));
    }
    let moe = tmp.join("moe.yaml");
    std::fs::write(
        &moe,
        format!(
            "name: moe\nmodel: {{id: {}}}\nlayers: all\ntexts: [{{id: a, text: {}}}]\nanalyses:\n  - {{kind: router}}\n",
            s(&fixture("tiny-moe-report")),
            serde_json::json!(TEXTS[0])
        ),
    )
    .unwrap();
    report_with(&mut strata(), &moe, &tmp.join("out-moe"));
    runs.push(tmp.join("out-moe/results.json"));
    // The every-kind report of the sharding tests: the tuned lens beside the logit lens,
    // capture sites, two models compared.
    let shard = tmp.join("shard");
    std::fs::create_dir_all(&shard).unwrap();
    report_with(&mut strata(), &shard_spec(&shard, ""), &shard.join("out"));
    runs.push(shard.join("out/results.json"));
    let mut all = Vec::new();
    for (i, res) in runs.iter().enumerate() {
        for width in ["column", "text", "3in"] {
            let out = tmp.join(format!("fig-{i}-{width}"));
            all.extend(check(res, width, &out, &opt));
        }
    }
    assert!(
        all.is_empty(),
        "{} text problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

fn rect(x: f32, y: f32, w: f32, h: f32) -> TextBox {
    TextBox {
        text: format!("{x},{y}"),
        corners: [(x, y), (x + w, y), (x + w, y + h), (x, y + h)],
        size: 12.0,
    }
}

#[test]
fn the_check_finds_what_it_is_for() {
    let ok = [rect(0.0, 0.0, 10.0, 10.0), rect(10.5, 0.0, 10.0, 10.0)];
    let touching = [rect(0.0, 0.0, 10.0, 10.0), rect(10.2, 0.0, 10.0, 10.0)];
    assert_eq!(
        common::layout::problems("t", 100.0, 100.0, &touching, 9.0).len(),
        1
    );
    assert!(common::layout::problems("t", 100.0, 100.0, &ok, 9.0).is_empty());
    let clash = [rect(0.0, 0.0, 10.0, 10.0), rect(5.0, 5.0, 10.0, 10.0)];
    let p = common::layout::problems("t", 100.0, 100.0, &clash, 9.0);
    assert_eq!(p, vec!["t: \"0,0\" collides with \"5,5\"".to_string()]);
    assert_eq!(
        common::layout::problems("t", 12.0, 100.0, &clash, 9.0).len(),
        2
    );
    let mut small = rect(0.0, 0.0, 5.0, 5.0);
    small.size = 8.0;
    assert_eq!(
        common::layout::problems("t", 100.0, 100.0, &[small], 9.0).len(),
        1
    );
    // A box turned 45 degrees clears a neighbour its upright bounds would touch.
    let turned = TextBox {
        text: "d".into(),
        corners: [(0.0, 10.0), (10.0, 0.0), (12.0, 2.0), (2.0, 12.0)],
        size: 12.0,
    };
    assert!(
        common::layout::problems("t", 100.0, 100.0, &[turned, rect(9.0, 9.0, 5.0, 5.0)], 9.0)
            .is_empty()
    );
}
