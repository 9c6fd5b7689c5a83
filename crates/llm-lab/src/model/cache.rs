//! The KV cache: keys and values of the tokens already seen, so each new token costs one step
//! instead of re-reading the whole prompt.

use candle_core::Tensor;

/// Keys and values per layer, each `[n_kv_heads, seq, d_head]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything: the next forward starts at position 0.
    pub fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }

    /// Appends this step's keys and values of `layer` and returns all of them so far.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match &self.layers[layer] {
            None => (k, v),
            Some((k0, v0)) => (Tensor::cat(&[k0, &k], 1)?, Tensor::cat(&[v0, &v], 1)?),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
