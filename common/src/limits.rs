/// The limits a batch is validated against (DESIGN.md "Limits"); rows per batch is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: usize,
    pub max_prompt_chars: usize,
    /// Distinct reference URLs per row after merging the row's and the global ones.
    pub max_refs: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rows: 10, max_prompt_chars: 4000, max_refs: 6, max_body_bytes: 2 * 1024 * 1024 }
    }
}
