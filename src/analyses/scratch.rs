//! A buffer an analysis keeps from text to text, so that its pages are faulted in once per
//! run. A product's logits are hundreds of rows times the vocabulary (103 MB for 512 rows
//! of GPT-2's), above the size glibc recycles: a fresh buffer per text was a fresh
//! mapping, page-faulted and zeroed every time. It is not state: it is never serialized,
//! and a copy starts empty.

/// Reused f32 storage.
#[derive(Debug, Default)]
pub struct Scratch(Vec<f32>);

impl Scratch {
    /// `len` floats, whatever a previous use left in them: for callers that overwrite all.
    pub fn get(&mut self, len: usize) -> &mut [f32] {
        self.0.resize(len, 0.0);
        &mut self.0[..len]
    }
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_keeps_its_storage_and_a_copy_starts_empty() {
        let mut s = Scratch::default();
        s.get(8).fill(1.0);
        let at = s.get(4).as_ptr();
        assert_eq!(s.get(8).as_ptr(), at);
        assert!(s.clone().0.is_empty());
    }
}
