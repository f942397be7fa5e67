//! The statistics' memory stays bounded as the corpus grows: the live heap held by every
//! analysis accumulator after 100 texts equals what it holds after 1100.
//!
//! A counting global allocator measures the real heap, so any per-text state an
//! accumulator keeps (a list of values, a map per text) makes this fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use strata::analyses::attention::AttentionState;
use strata::analyses::neurons::{BlockNeurons, NeuronsState};
use strata::analyses::pairplot::SampleMode;
use strata::analyses::{
    covariance::CovarianceState, histogram::HistogramState, outliers::OutliersState,
    pairplot::PairplotState, scatter::ScatterState, summary::SummaryState, AnalysisResult, State,
    TextActivations,
};
use strata::model::capture::{HeadCapture, HeadStats};
use strata::stats::gram::Fixed;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::SeqCst);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::SeqCst);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn feed(accs: &mut [State], texts: std::ops::Range<usize>) {
    const DIM: usize = 64;
    for j in texts {
        // Varying lengths and values, with a new max every so often.
        let rows = 5 + j % 40;
        let tokens: Vec<String> = (0..rows + 1).map(|k| format!("tok{j}-{k}")).collect();
        let states: Vec<Option<Vec<f32>>> = (0..4)
            .map(|l| {
                Some(
                    (0..rows * DIM)
                        .map(|k| ((j * 31 + k * 7 + l) % 97) as f32 * 0.1 + (j as f32) * 0.01)
                        .collect(),
                )
            })
            .collect();
        let id = format!("text{j}");
        // Two blocks of two heads, each query's mass spread over the keys.
        let attention: Vec<Vec<HeadCapture>> = (0..2)
            .map(|l| {
                (0..2)
                    .map(|h| {
                        let mut stats = HeadStats::new(rows + 1);
                        for q in 0..rows + 1 {
                            let p = vec![1.0 / (q + 1) as f32; q + 1];
                            let z = vec![(j + l + h) as f32 * 0.01; q + 1];
                            stats.add_row(q, 0, &p, &z);
                        }
                        HeadCapture {
                            stats,
                            probabilities: Vec::new(),
                        }
                    })
                    .collect()
            })
            .collect();
        let acts = TextActivations {
            index: j,
            id: &id,
            label: None,
            window_of: None,
            tokens: &tokens,
            first_token: 1,
            dim: DIM,
            states: &states,
            token_ids: &[],
            lens: None,
            previous: None,
            companions: &[],
            companion_readouts: &[],
            attention: &attention,
            routing: &[],
            splice: None,
            sites: &[],
        };
        for a in accs.iter_mut() {
            a.observe(&acts);
        }
    }
}

#[test]
fn accumulator_heap_does_not_grow_with_the_corpus() {
    let layers = vec![0, 1, 2, 3];
    let labels: Vec<String> = (0..4).map(|i| format!("l{i}")).collect();
    let mut accs = vec![
        State::Scatter(ScatterState::new(2, "l2".into(), None)),
        State::Covariance(CovarianceState::new(layers.clone(), labels.clone())),
        State::Histogram(HistogramState::new(
            layers.clone(),
            labels.clone(),
            -15.0,
            15.0,
            300,
        )),
        State::Summary(SummaryState::new(layers.clone(), labels.clone())),
        State::Outliers(OutliersState::new(layers.clone(), labels.clone(), 50)),
        State::Pairplot(PairplotState::new(
            layers.clone(),
            labels.clone(),
            SampleMode::Random,
            1000,
            7,
        )),
        State::Pairplot(PairplotState::new(
            layers,
            labels,
            SampleMode::First,
            1000,
            0,
        )),
        State::Neurons(NeuronsState {
            threshold: 0.5,
            dense: 0.5,
            k: 10,
            examples: 3,
            layers: vec![0, 1, 2, 3],
            labels: (0..4).map(|i| format!("mlp_act.{i}")).collect(),
            blocks: (0..4)
                .map(|_| BlockNeurons {
                    tokens: 0,
                    fired: vec![0; 64],
                    sums: Fixed::zeros(64),
                    examples: vec![Vec::new(); 64],
                })
                .collect(),
        }),
        State::Attention(AttentionState {
            threshold: 0.3,
            prev_threshold: 0.5,
            k: 5,
            exclude_first_query: false,
            layers: vec![0, 1],
            n_heads: 2,
            queries: vec![[0, 0]; 4],
            sums: Fixed::zeros(4 * 5),
            top: vec![Vec::new(); 4],
        }),
    ];
    feed(&mut accs, 0..100);
    let after_100 = LIVE.load(Ordering::SeqCst);
    feed(&mut accs, 100..1100);
    let after_1100 = LIVE.load(Ordering::SeqCst);
    // Slack for the summary's record of where each maximum sits (its strings vary in
    // length) and for the moment trees, which hold at most two blocks per level of the
    // text count (O(log n): their lists' capacity grows from 8 to 16 blocks of ~100 bytes
    // here); keeping anything per text (its 5-45 tokens) would add well over 100 KB.
    assert!(
        after_1100 - after_100 < 16_384,
        "accumulators grew by {} bytes over 1000 more texts",
        after_1100 - after_100
    );
    // And they did see everything.
    let results: Vec<_> = accs.into_iter().map(|a| a.finish().unwrap()).collect();
    if let AnalysisResult::Covariance(c) = &results[1] {
        let expected: u64 = (0..1100).map(|j| (5 + j % 40) as u64 * 64).sum();
        assert_eq!(c.n_points, expected);
    } else {
        panic!("covariance expected");
    }
}
