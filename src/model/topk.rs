//! `torch.topk` on CPU, choice for choice, ties included: the router of a mixture of
//! experts picks its experts with it, and a different choice between two equal
//! probabilities sends a token through other weights.
//!
//! torch compares values only (a NaN counts as the largest), so which of two equal values
//! it returns is decided by the C++ standard library's algorithms, which torch's Linux
//! builds take from GCC's libstdc++. With `n` values and `k` wanted:
//! - when `k * 64 <= n`, `std::partial_sort` of the first `k`: a heap of the first `k`,
//!   each later value larger than the heap's smallest taking its place, then
//!   `std::sort_heap`;
//! - otherwise `std::nth_element` at `k - 1` (introselect: median-of-three partitions,
//!   then an insertion sort of at most 3), then `std::sort` of the first `k - 1`
//!   (introsort; insertion sort at 16 or fewer).
//!
//! So ties do not simply go to the lower index: for four values `[0.25, 0.1, 0.25, 0.25]`
//! and `k = 3` torch returns indices `[2, 3, 0]`. This module follows those algorithms
//! step by step (a standard sort here would pick other experts on ties); a test checks it
//! against torch on rows full of ties, on both sides of the switch.

/// `(value, index)`, as torch's queue holds them.
type Elem = (f32, usize);

/// torch's comparator for `largest = true`: `a` goes before `b`.
fn before(a: &Elem, b: &Elem) -> bool {
    (a.0.is_nan() && !b.0.is_nan()) || a.0 > b.0
}

/// The indices of the `k` largest of `values`, in the order `torch.topk(values, k)`
/// (sorted, largest) returns them. `k` is at most `values.len()`.
pub fn topk(values: &[f32], k: usize) -> Vec<usize> {
    let n = values.len();
    assert!(k <= n, "topk: k = {k} of {n} values");
    if k == 0 {
        return Vec::new();
    }
    if k * 64 <= n {
        let mut all: Vec<Elem> = values.iter().copied().zip(0..).collect();
        heap_select(&mut all, k);
        sort_heap(&mut all[..k]);
        return all[..k].iter().map(|e| e.1).collect();
    }
    let mut queue: Vec<Elem> = values.iter().copied().zip(0..).collect();
    nth_element(&mut queue, k - 1);
    sort(&mut queue[..k - 1]);
    queue[..k].iter().map(|e| e.1).collect()
}

/// `floor(log2(n))` for `n >= 1` (libstdc++'s `__lg`).
fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// `std::nth_element(v.begin(), v.begin() + nth, v.end(), comp)`.
fn nth_element(v: &mut [Elem], nth: usize) {
    if v.is_empty() || nth == v.len() {
        return;
    }
    let (mut first, mut last) = (0, v.len());
    let mut depth = 2 * lg(v.len());
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut v[first..last], nth + 1 - first);
            v.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = first + partition_pivot(&mut v[first..last]);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(&mut v[first..last]);
}

/// `std::sort(v.begin(), v.end(), comp)`: introsort, then a final insertion sort.
fn sort(v: &mut [Elem]) {
    if v.is_empty() {
        return;
    }
    introsort_loop(v, 2 * lg(v.len()));
    if v.len() > 16 {
        insertion_sort(&mut v[..16]);
        for i in 16..v.len() {
            unguarded_linear_insert(v, i);
        }
    } else {
        insertion_sort(v);
    }
}

/// libstdc++'s `__introsort_loop`: partitions until pieces of 16 or fewer remain.
fn introsort_loop(v: &mut [Elem], mut depth: usize) {
    let mut last = v.len();
    while last > 16 {
        if depth == 0 {
            // __partial_sort(first, last, last): a heap sort.
            let part = &mut v[..last];
            heap_select(part, last);
            sort_heap(part);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(&mut v[..last]);
        introsort_loop(&mut v[cut..last], depth);
        last = cut;
    }
}

/// `__unguarded_partition_pivot`: the median of the second, middle and last elements
/// moved to the front as the pivot, then a Hoare partition of the rest; returns the cut.
fn partition_pivot(v: &mut [Elem]) -> usize {
    let (len, mid) = (v.len(), v.len() / 2);
    move_median_to_first(v, 1, mid, len - 1);
    let (mut first, mut last) = (1, len);
    loop {
        while before(&v[first], &v[0]) {
            first += 1;
        }
        last -= 1;
        while before(&v[0], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

/// `__move_median_to_first(result = 0, a, b, c)`.
fn move_median_to_first(v: &mut [Elem], a: usize, b: usize, c: usize) {
    let pick = if before(&v[a], &v[b]) {
        if before(&v[b], &v[c]) {
            b
        } else if before(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if before(&v[a], &v[c]) {
        a
    } else if before(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(0, pick);
}

/// `__insertion_sort`.
fn insertion_sort(v: &mut [Elem]) {
    for i in 1..v.len() {
        if before(&v[i], &v[0]) {
            v[..=i].rotate_right(1);
        } else {
            unguarded_linear_insert(v, i);
        }
    }
}

/// `__unguarded_linear_insert`: moves `v[i]` left past every element it goes before.
fn unguarded_linear_insert(v: &mut [Elem], mut i: usize) {
    let val = v[i];
    while before(&val, &v[i - 1]) {
        v[i] = v[i - 1];
        i -= 1;
    }
    v[i] = val;
}

/// `__heap_select(first, first + middle, last)`: the heap of the first `middle` keeps
/// whatever later element goes before its top.
fn heap_select(v: &mut [Elem], middle: usize) {
    make_heap(&mut v[..middle]);
    for i in middle..v.len() {
        if before(&v[i], &v[0]) {
            // __pop_heap(first, middle, i)
            let val = v[i];
            v[i] = v[0];
            adjust_heap(&mut v[..middle], 0, val);
        }
    }
}

/// `std::make_heap`.
fn make_heap(v: &mut [Elem]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let val = v[parent];
        adjust_heap(v, parent, val);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// `std::sort_heap`.
fn sort_heap(v: &mut [Elem]) {
    let mut last = v.len();
    while last > 1 {
        last -= 1;
        let val = v[last];
        v[last] = v[0];
        adjust_heap(&mut v[..last], 0, val);
    }
}

/// `__adjust_heap(first, hole, len, val)`: the hole sinks to a leaf along the larger
/// children, then `val` rises from there.
fn adjust_heap(v: &mut [Elem], mut hole: usize, val: Elem) {
    let (len, top) = (v.len(), hole);
    let mut child = hole;
    while child < len.saturating_sub(1) / 2 {
        child = 2 * (child + 1);
        if before(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    push_up(v, hole, top, val);
}

/// `__push_heap(first, hole, top, val)`.
fn push_up(v: &mut [Elem], mut hole: usize, top: usize, val: Elem) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if !before(&v[parent], &val) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = val;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the module's documentation.
    #[test]
    fn ties_are_broken_as_torch_breaks_them() {
        assert_eq!(topk(&[0.25, 0.1, 0.25, 0.25], 3), vec![2, 3, 0]);
    }

    /// Rows full of ties, for sizes on both sides of the heap/introselect switch, against
    /// torch.topk (tests/fixtures/make_moe_fixtures.py).
    #[test]
    fn every_choice_equals_torch_topk() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/topk-ties.safetensors");
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut cases = 0;
        for (name, view) in file.tensors() {
            let Some(case) = name.strip_suffix(".values") else {
                continue;
            };
            let n = view.shape()[1];
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let want = file.tensor(&format!("{case}.indices")).unwrap();
            let k = want.shape()[1];
            let want: Vec<usize> = want
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                .collect();
            for (row, (v, w)) in values.chunks(n).zip(want.chunks(k)).enumerate() {
                assert_eq!(topk(v, k), w, "{case} row {row}: {v:?}");
            }
            cases += 1;
        }
        assert_eq!(cases, 15);
    }
}
